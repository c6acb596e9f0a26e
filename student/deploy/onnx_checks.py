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
        first = next(n for n in model.graph.node if n.op_type in foreign)
        raise ValueError(
            f"{name}: operators not on the {target} allow-list: {', '.join(foreign)} "
            f"(first: {first.op_type} {first.name or first.output[0]})"
        )
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
    int8 with zero point 0 (TensorRT 8.x-11 take no uint8 Q/DQ and no non-zero zero points), a
    constant positive scale, one scale per tensor on activations (per channel on weights only)."""
    consts = _constants(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        what = f"{name}: {node.op_type} {node.name or node.output[0]}"
        if len(node.input) > 2 and node.input[2]:
            tensor = consts.get(node.input[2])
            if tensor is None:
                raise ValueError(f"{what} has a computed zero point")
            values = onnx.numpy_helper.to_array(tensor)
            if tensor.data_type != onnx.TensorProto.INT8 or np.any(values != 0):
                raise ValueError(
                    f"{what} has a {values.dtype} zero point "
                    f"{values.ravel()[:3].tolist()}; TensorRT needs int8 with zero point 0"
                )
        elif node.op_type == "QuantizeLinear" and _attr(node, "output_dtype", 0) != onnx.TensorProto.INT8:
            raise ValueError(
                f"{what} has no zero point (uint8 in ONNX); TensorRT needs int8 with zero point 0"
            )
        data = consts.get(node.input[0])
        if (
            node.op_type == "DequantizeLinear"
            and data is not None
            and data.data_type != onnx.TensorProto.INT8
        ):
            kind = onnx.helper.tensor_dtype_to_np_dtype(data.data_type)
            raise ValueError(f"{what} reads {kind} data; TensorRT needs int8 with zero point 0")
        scale = consts.get(node.input[1])
        if scale is None:
            raise ValueError(f"{what} has a computed scale; TensorRT needs a constant one")
        values = onnx.numpy_helper.to_array(scale).astype(np.float64)
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise ValueError(
                f"{what} has a scale that is not finite and positive ({values.ravel()[:3].tolist()})"
            )
        if values.size > 1 and not _of_constant(node, consts, producer):
            raise ValueError(
                f"{what} quantizes an activation per channel; TensorRT needs one scale per tensor"
            )
        if _attr(node, "block_size", 0):
            raise ValueError(
                f"{what} is block-quantized; TensorRT 8.2-10 INT8 takes per-tensor or per-channel"
            )


def check_trt_int8_structure(model: onnx.ModelProto, target: str, name: str) -> dict:
    """Raise a one-line ValueError unless ``model`` is an INT8 file TensorRT fuses on ``target``.

    The file fits the target (``check_structure``), every Q/DQ is TensorRT's (``check_tensorrt_qdq``)
    and every Conv reads a DequantizeLinear on its input and on its (constant) weight. A Conv may stay
    float only whole, and only where TensorRT has no INT8 kernel worth it (fewer than 16 channels, not
    a multiple of 8: the rule ModelOpt's placement follows). Returns the structure's figures and the
    counts: ``convs``, ``quantized_convs``, ``float_convs``, ``qdq_nodes``, ``quantized_ops``.
    """
    info = check_structure(model, target, name)
    check_tensorrt_qdq(model, name)
    consts = _constants(model)
    producer = {out: node for node in model.graph.node for out in node.output}

    def dq(tensor: str) -> onnx.NodeProto | None:
        node = producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    inputs = {i.name for i in model.graph.input}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    floats = []
    for node in convs:
        what = f"{name}: Conv {node.name or node.output[0]}"
        data, weight = dq(node.input[0]), dq(node.input[1])
        if data is None and weight is None and node.input[1] in consts:
            shape = list(consts[node.input[1]].dims)
            if not _int8_pays(shape, _attr(node, "group", 1), node.input[0] in inputs):
                floats.append(node.name)
                continue
        if weight is None:
            raise ValueError(f"{what} has no DequantizeLinear on its weight; TensorRT runs it unquantized")
        if data is None:
            raise ValueError(f"{what} has no DequantizeLinear on its input; TensorRT runs it unquantized")
        if not _of_constant(weight, consts, producer):
            raise ValueError(f"{what} has a computed weight; TensorRT needs constant quantized weights")
    if len(convs) == len(floats):
        raise ValueError(f"{name}: no Conv is quantized (no Q/DQ on any Conv): not an INT8 file")
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    fed = {
        node.op_type
        for node in model.graph.node
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(dq(i) for i in node.input)
    }
    return {
        **info,
        "convs": len(convs),
        "quantized_convs": len(convs) - len(floats),
        "float_convs": len(floats),
        "qdq_nodes": len(qdq),
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in qdq),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in qdq),
        "quantized_ops": sorted(fed),
    }


def _int8_pays(shape: list[int], group: int, first: bool) -> bool:
    """Whether TensorRT has an INT8 kernel worth using for a Conv with weight ``shape`` (ModelOpt's
    rule: 16+ channels, or channel counts that are multiples of 8 and a square kernel)."""
    out_ch, in_ch, kernel = shape[0], shape[1], shape[2:]
    if out_ch >= 16 and in_ch >= 16:
        return True
    if group == 1:
        return (
            (out_ch % 8 == 0 or in_ch % 8 == 0)
            and (first or max(out_ch, in_ch) >= 16)
            and len(set(kernel)) <= 1
        )
    return out_ch % 8 == 0 and all(k >= 3 for k in kernel)


def _of_constant(node: onnx.NodeProto, consts: dict, producer: dict) -> bool:
    """Whether a Q/DQ node reads a constant (a weight), directly or through a QuantizeLinear."""
    source = producer.get(node.input[0])
    if source is not None and source.op_type == "QuantizeLinear":
        return source.input[0] in consts
    return node.input[0] in consts


def _constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant-node outputs by name."""
    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
    return consts


def _attr(node: onnx.NodeProto, key: str, default: int) -> int:
    return next((int(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == key), default)


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
    "check_trt_int8_structure",
    "checked",
    "copy_parity",
    "depth_figures",
    "fp32_parity",
    "max_rel_err",
    "run",
    "session",
]
