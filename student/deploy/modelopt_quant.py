"""The INT8 TensorRT file by NVIDIA ModelOpt's ONNX post-training quantization, calibrated on the CPU.

ModelOpt (``modelopt.onnx.quantization.quantize``, int8 mode) places Q/DQ the way TensorRT fuses
them: symmetric int8 activations on the inputs of Conv and of residual Add (so the Add fuses into
the Conv before it), per-channel symmetric int8 weights, FP32 biases, and no Q/DQ on a Conv too
narrow for an INT8 kernel (fewer than 16 channels, not a multiple of 8). ``modelopt_int8`` runs it
on ONNX Runtime's CPU provider, keeps the graph FP32 elsewhere, and brings the result back to the
target's opset and IR version (ModelOpt writes opset 19 at least; trt8 needs 13, whose
QuantizeLinear / DequantizeLinear already take a per-channel ``axis``). Install:
``pip install 'edgedepth[tensorrt]'`` (docs/export.md).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnx.numpy_helper

from edgedepth.student.deploy.onnx_checks import MAX_IR_VERSION, TARGET_OPSET, check_trt_int8_structure
from edgedepth.student.deploy.runtimes import RuntimeMissing, pip_line, require

CALIBRATION = "max"
"""ModelOpt's ``max`` calibration (each tensor's absolute maximum, as our own placement uses): on the
student, whose activations ReLU6 bounds, it came as close to FP32 as ``entropy`` or closer (variant L
at 480x320, Abs Rel vs FP32 0.0296 vs 0.0297 with a wide-range depth head), in half the time, and it
needs no histogram, which a few calibration frames fill poorly."""

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_NEWER_TYPES = {
    onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ, onnx.TensorProto.FLOAT8E5M2,
    onnx.TensorProto.FLOAT8E5M2FNUZ, onnx.TensorProto.UINT4, onnx.TensorProto.INT4,
}  # fmt: skip
"""Tensor types of IR 9 and 10, which an IR 7 file cannot hold."""


def modelopt_int8(
    model: onnx.ModelProto,
    frames: Sequence[np.ndarray],
    target: str,
    *,
    name: str | None = None,
    calibration: str = CALIBRATION,
) -> onnx.ModelProto:
    """The INT8 Q/DQ copy of the FP32 ``model`` for TensorRT ``target`` (trt8 / trt10), by ModelOpt.

    ``frames``: calibration inputs in the file's input layout, (1, 3, H, W) uint8 or float32 as the
    graph input ``image`` takes them. ``name`` (the file's name) heads every error, each one line.
    Raises ``RuntimeMissing`` (with the pip line) without ModelOpt, ValueError on a bad argument, a
    failed quantization or a result that ``check_trt_int8_structure`` refuses.
    """
    label = name or f"the {target} INT8 copy"
    if target not in TARGET_OPSET:
        raise ValueError(f"{label}: unknown target {target!r}; choose {' or '.join(TARGET_OPSET)}")
    if calibration not in ("max", "entropy"):
        raise ValueError(f"{label}: calibration must be max or entropy, got {calibration!r}")
    frames = _checked_frames(model, frames, label)
    quantize = _quantizer().quantize
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"image": frame} for frame in frames)

        def get_next(self) -> dict | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp, _quiet(label), _ort_restored():
        source, output = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(source))
        quantize(
            str(source), quantize_mode="int8", calibration_data_reader=Reader(),
            calibration_method=calibration, calibration_eps=["cpu"], output_path=str(output),
            high_precision_dtype="fp32", use_external_data_format=False, log_level="ERROR",
        )  # fmt: skip
        quantized = onnx.load(str(output)) if output.is_file() else None
    if quantized is None:
        raise ValueError(f"{label}: ModelOpt wrote no quantized file")
    quantized = _fit_target(quantized, model, target, label)
    check_trt_int8_structure(quantized, target, label)
    return quantized


def _quantizer() -> ModuleType:
    """``modelopt.onnx.quantization``, or RuntimeMissing naming the pip line (also when ModelOpt is
    there but an ONNX dependency of it is not)."""
    require("modelopt")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module("modelopt.onnx.quantization")
    except (ImportError, OSError) as err:
        reason = " ".join(str(err).split())[:120]
        raise RuntimeMissing(f"modelopt.onnx is not usable ({reason}): {pip_line('modelopt')}") from None


def _checked_frames(model: onnx.ModelProto, frames: Sequence[np.ndarray], label: str) -> list[np.ndarray]:
    """The frames as arrays of the graph input's type and shape (1, 3, H, W); one-line refusals."""
    frames = list(frames)
    if not frames:
        raise ValueError(f"{label}: no calibration frames (INT8 calibration needs at least one)")
    inputs = [i for i in model.graph.input if i.name == "image"]
    if not inputs:
        raise ValueError(f"{label}: the FP32 graph has no input named 'image'")
    elem = inputs[0].type.tensor_type.elem_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim]
    for index, frame in enumerate(frames):
        frame = np.asarray(frame)
        fixed = [d for d, want in zip(frame.shape, dims, strict=False) if want is not None]
        wanted = [want for want in dims if want is not None]
        if frame.ndim != 4 or frame.shape[:2] != (1, 3) or fixed != wanted or frame.dtype != dtype:
            raise ValueError(
                f"{label}: calibration frame {index} is {frame.dtype} {frame.shape}; the graph takes "
                f"{dtype} {tuple(d or 'N' for d in dims)} with batch 1"
            )
    return [np.ascontiguousarray(frame) for frame in frames]


def _fit_target(
    quantized: onnx.ModelProto, source: onnx.ModelProto, target: str, label: str
) -> onnx.ModelProto:
    """ModelOpt's file at the target's opset and IR version, once it is shown that nothing in it
    needs the newer ones: every node of the FP32 graph is there unchanged (same operator and
    attributes), the added nodes are Q/DQ with an ``axis`` at most and FP32 scales, and no tensor type
    is newer than the IR allows. Graph inputs and outputs must be the FP32 file's."""
    opset = TARGET_OPSET[target]
    added = {n.output[0]: n for n in quantized.graph.node}
    for node in source.graph.node:
        twin = added.pop(node.output[0], None)
        if twin is None or twin.op_type != node.op_type or _attributes(twin) != _attributes(node):
            raise ValueError(f"{label}: ModelOpt changed or dropped {node.op_type} {node.name}")
    for node in added.values():
        extra = sorted({a.name for a in node.attribute} - {"axis"})
        if node.op_type not in QDQ_OPS or extra:
            raise ValueError(
                f"{label}: ModelOpt added {node.op_type} {node.name} {extra}; opset {opset} lacks it"
            )
    for old, new in (
        (source.graph.input, quantized.graph.input),
        (source.graph.output, quantized.graph.output),
    ):
        if [(v.name, v.type) for v in old] != [(v.name, v.type) for v in new]:
            raise ValueError(f"{label}: ModelOpt changed the graph inputs or outputs")
        del new[:]
        new.extend(old)  # with the exporter's metadata, which ModelOpt drops
    scales = {n.input[1] for n in quantized.graph.node if n.op_type in QDQ_OPS}
    for tensor in quantized.graph.initializer:
        if tensor.name in scales and tensor.data_type != onnx.TensorProto.FLOAT:
            raise ValueError(
                f"{label}: Q/DQ scale {tensor.name} is not FP32; opset {opset} takes FP32 scales"
            )
        if tensor.data_type in _NEWER_TYPES:
            raise ValueError(
                f"{label}: initializer {tensor.name} has a type IR {MAX_IR_VERSION[target]} lacks"
            )
    if quantized.functions:
        raise ValueError(f"{label}: ModelOpt added model-local functions; TensorRT reads none")
    used = {n.domain for n in quantized.graph.node} - {"", "ai.onnx"}
    if used:
        raise ValueError(f"{label}: ModelOpt added operators of domain {', '.join(sorted(used))}")
    del quantized.opset_import[:]
    quantized.opset_import.extend(source.opset_import)
    quantized.ir_version = min(source.ir_version, MAX_IR_VERSION[target])
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    del quantized.graph.value_info[:]  # shapes inferred at the newer opset; TensorRT infers its own
    return quantized


def _attributes(node: onnx.NodeProto) -> list[tuple[str, object]]:
    """A node's attributes by value (a tensor as its type, shape and bytes, whatever its name)."""
    values = []
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, onnx.TensorProto):
            value = (value.data_type, tuple(value.dims), onnx.numpy_helper.to_array(value).tobytes())
        values.append((attr.name, value))
    return values


@contextlib.contextmanager
def _quiet(label: str) -> Iterator[None]:
    """Hide ModelOpt's and ONNX Runtime's prints, progress bars and logs (Python and file
    descriptors 1 and 2); turn a failure into one ValueError line naming the file."""
    logger = logging.getLogger("modelopt.onnx")
    state = (list(logger.handlers), logger.level, logger.propagate)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                warnings.simplefilter("ignore")
                yield
        except Exception as err:  # noqa: BLE001 - any failure inside ModelOpt becomes one line
            reason = " ".join(str(err).split())[:160] or type(err).__name__
            raise ValueError(
                f"{label}: ModelOpt INT8 quantization failed: {type(err).__name__}: {reason}"
            ) from None
        finally:
            for fd, copy in enumerate(saved, start=1):
                os.dup2(copy, fd)
                os.close(copy)
            logger.handlers[:] = state[0]
            logger.setLevel(state[1])
            logger.propagate = state[2]


@contextlib.contextmanager
def _ort_restored() -> Iterator[None]:
    """Undo ModelOpt's changes to ``onnxruntime.quantization`` (it patches the calibrators and
    empties the op registries of Relu, Concat, ...), so ONNX Runtime's own quantizer, used later in
    the same process for the ``_int8_ort.onnx`` file, behaves as if ModelOpt had never run."""
    import onnxruntime.quantization  # noqa: F401 - load the modules whose state is kept

    modules = [m for n, m in list(sys.modules.items()) if n.startswith("onnxruntime.quantization") and m]
    saved: list[tuple[object, dict]] = []
    for module in modules:
        public = {k: v for k, v in vars(module).items() if not k.startswith("_")}
        saved.append((module, public))
        for value in public.values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                saved.append((value, dict(vars(value))))  # with __init__, which ModelOpt replaces
            elif isinstance(value, dict):
                saved.append((value, dict(value)))
    try:
        yield
    finally:
        for owner, before in saved:
            if isinstance(owner, dict):
                owner.clear()
                owner.update(before)
                continue
            now = vars(owner)
            if isinstance(owner, type):  # a module keeps what it gained (submodules imported since)
                for key in [k for k in now if k not in before and not k.startswith("__")]:
                    delattr(owner, key)
            for key, value in before.items():
                if now.get(key) is not value:
                    setattr(owner, key, value)


__all__ = ["CALIBRATION", "modelopt_int8"]
