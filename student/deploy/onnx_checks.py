"""Checks of an exported student ONNX file: structure against its TensorRT target, and parity.

Structure: ``onnx.checker``, the opset and IR version the target accepts, every operator on the
target's allow-list, pixel shuffle as ``DepthToSpace(mode="CRD")`` and the weights inside the file.
Parity: ONNX Runtime on the CPU against the PyTorch export model (FP32, max relative error) and, for
the FP16 and INT8 copies, task-level figures (Abs Rel, RMSE) of their depth against the FP32 file's
depth on real frames. Every bound below fails the export when crossed (docs/export.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import torch

from edgedepth.student.deploy.parity import (
    CLASS_AGREEMENT_MIN,
    FP16_ABS_REL_MAX,
    FP16_RMSE_MAX,
    FP32_MAX_REL_ERR,
    INT8_ABS_REL_MAX,
    INT8_RMSE_MAX,
    copy_parity_of,
    depth_figures,
    fp32_parity_of,
    max_rel_err,
)

TARGET_OPSET = {"trt8": 13, "trt10": 20}
"""The opset each target gets: 13 is the newest the TensorRT 8.2 parser supports; 20 is the dynamo
exporter's default and inside TensorRT 10.0's 9-20 (TensorRT 11 reads up to 25)."""

MAX_IR_VERSION = {"trt8": 7, "trt10": 10}
"""IR 7 is what the legacy exporter writes at opset 13 (and what TRT 8.2's bundled onnx reads);
IR 10 is what the dynamo exporter writes (onnx >= 1.16, bundled with TensorRT 10)."""

_COMMON_OPS = {
    "Add", "ArgMax", "Cast", "Clip", "Concat", "Constant", "Conv", "DepthToSpace", "Div", "Exp",
    "Identity", "Max", "Mul", "Relu", "Sigmoid", "Sub", "QuantizeLinear", "DequantizeLinear",
}  # fmt: skip
ALLOWED_OPS = {"trt8": frozenset(_COMMON_OPS), "trt10": frozenset(_COMMON_OPS)}
"""Operators of the student graph, each listed in the target's onnx-tensorrt operators.md."""


def check_structure(model: onnx.ModelProto, target: str, name: str) -> dict:
    """Raise ValueError unless ``model`` fits ``target``; return its opset, IR version and ops."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid model"
        raise ValueError(f"{name}: onnx.checker: {first}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != TARGET_OPSET[target]:
        raise ValueError(f"{name}: opset {opset}, target {target} needs {TARGET_OPSET[target]}")
    if model.ir_version > MAX_IR_VERSION[target]:
        raise ValueError(
            f"{name}: IR version {model.ir_version}, target {target} reads up to {MAX_IR_VERSION[target]}"
        )
    ops = sorted({node.op_type for node in model.graph.node})
    foreign = sorted(set(ops) - ALLOWED_OPS[target])
    if foreign:
        raise ValueError(f"{name}: operators not on the {target} allow-list: {', '.join(foreign)}")
    shuffles = [n for n in model.graph.node if n.op_type == "DepthToSpace"]
    if not shuffles:
        raise ValueError(f"{name}: no DepthToSpace (pixel shuffle was not exported as one)")
    for node in shuffles:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("mode", b"DCR") != b"CRD" or attrs.get("blocksize") != 2:
            raise ValueError(f"{name}: DepthToSpace {node.name} is not mode CRD, blocksize 2 ({attrs})")
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ValueError(f"{name}: {len(external)} initializers in external data (first: {external[0]})")
    return {"opset": opset, "ir_version": int(model.ir_version), "ops": ops}


def check_tensorrt_qdq(model: onnx.ModelProto, name: str) -> None:
    """Raise ValueError unless every Q/DQ node is what TensorRT's explicit quantization reads:
    int8 with zero point 0 (TensorRT 8.x-11 take no uint8 Q/DQ and no non-zero zero points)."""
    inits = {t.name: t for t in model.graph.initializer}
    consts = {
        n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute
    }
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:
            continue  # no zero point: int8, 0 by the ONNX default
        tensor = inits.get(node.input[2]) or consts.get(node.input[2])
        if tensor is None:
            raise ValueError(f"{name}: {node.op_type} {node.name} has a computed zero point")
        values = onnx.numpy_helper.to_array(tensor)
        if tensor.data_type != onnx.TensorProto.INT8 or np.any(values != 0):
            raise ValueError(
                f"{name}: {node.op_type} {node.name} has a {values.dtype} zero point "
                f"{values.ravel()[:3].tolist()}; TensorRT needs int8 with zero point 0"
            )


def session(path: str | Path) -> ort.InferenceSession:
    """An ONNX Runtime CPU session (graph optimisations off, so it runs the file as written)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, image: np.ndarray) -> list[np.ndarray]:
    return sess.run(None, {sess.get_inputs()[0].name: image})


def checked(parity: Callable[..., dict], path: Path, *args: object) -> dict:
    """``parity(path, *args)``; a file that fails it is removed with its commands file (never left
    as good)."""
    try:
        return parity(path, *args)
    except ValueError:
        path.unlink(missing_ok=True)
        path.with_name(path.stem + ".commands.txt").unlink(missing_ok=True)
        raise


def fp32_parity(
    path: Path, wrapper: torch.nn.Module, real, size, dtype: str, target: str, checkpoint: str | Path = ""
) -> dict:
    """ORT CPU vs PyTorch on 2 random images and the real frames; raises past the FP32 bounds."""
    rng = np.random.default_rng(0)
    height, width = size
    shape = (2, 3, height, width) if target == "trt10" else (1, 3, height, width)
    randoms = [rng.integers(0, 256, shape).astype(dtype) for _ in range(1 if target == "trt10" else 2)]
    sess = session(path)
    return fp32_parity_of(
        lambda x: run(sess, x), path.name, wrapper, randoms + list(real), "ONNX Runtime", str(checkpoint)
    )


def copy_parity(path: Path, precision: str, real, ref) -> dict:
    """FP16 / INT8 depth vs the FP32 file's depth on the real frames; raises past the bounds."""
    sess = session(path)
    return copy_parity_of(lambda x: run(sess, x), path.name, precision, real, ref)


__all__ = [
    "ALLOWED_OPS",
    "CLASS_AGREEMENT_MIN",
    "FP16_ABS_REL_MAX",
    "FP16_RMSE_MAX",
    "FP32_MAX_REL_ERR",
    "INT8_ABS_REL_MAX",
    "INT8_RMSE_MAX",
    "MAX_IR_VERSION",
    "TARGET_OPSET",
    "check_structure",
    "check_tensorrt_qdq",
    "checked",
    "copy_parity",
    "depth_figures",
    "fp32_parity",
    "max_rel_err",
    "run",
    "session",
]
