"""INT8 Q/DQ copies of an exported FP32 ONNX file, for TensorRT and for ONNX Runtime.

TensorRT's form (``..._int8.onnx``) comes from NVIDIA ModelOpt's ONNX post-training quantization
when it is installed (``pip install 'edgedepth[tensorrt]'``): its Q/DQ placement is the one
TensorRT fuses. Without it, ONNX Runtime's static quantizer with TensorRT's settings makes the
file. ONNX Runtime's own CPU form (``..._int8_ort.onnx``) always comes from ONNX Runtime's
quantizer. docs/export.md compares the placements.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx

from edgedepth.student.deploy import onnx_checks as checks
from edgedepth.student.deploy.runtimes import available

ORT_QUANTIZER = (
    "onnxruntime static quantizer (MinMax, asymmetric uint8 activations, per-channel int8 weights)"
)
TRT_FALLBACK_QUANTIZER = (
    "onnxruntime static quantizer with TensorRT's settings (MinMax, symmetric int8, Q/DQ on Conv inputs "
    "only); install 'edgedepth[tensorrt]' for NVIDIA ModelOpt's placement"
)


def tensorrt_int8(
    fp32: onnx.ModelProto, frames: list[np.ndarray], target: str, name: str
) -> tuple[onnx.ModelProto, str]:
    """TensorRT's INT8 Q/DQ copy and the quantizer that made it: NVIDIA ModelOpt when installed
    (``pip install 'edgedepth[tensorrt]'``; its placement is the one TensorRT fuses), else ONNX
    Runtime's static quantizer with TensorRT's settings (``_to_int8``). Either passes
    ``check_trt_int8_structure`` (docs/export.md compares the two)."""
    if available("modelopt"):
        from edgedepth.student.deploy.modelopt_quant import modelopt_int8

        copy = modelopt_int8(fp32, frames, target, name=name)
        quantizer = f"nvidia-modelopt {_version('modelopt')} (max calibration, per-channel weights)"
    else:
        copy = _to_int8(fp32, frames, "tensorrt")
        quantizer = TRT_FALLBACK_QUANTIZER
    checks.check_trt_int8_structure(copy, target, name)
    return copy, quantizer


def _version(module: str) -> str:
    return str(getattr(__import__(module), "__version__", "?"))


def _to_int8(model: onnx.ModelProto, frames: list[np.ndarray], runtime: str = "tensorrt") -> onnx.ModelProto:
    """Q/DQ copy by ONNX Runtime's static quantizer (MinMax calibration on ``frames``).

    ``runtime="tensorrt"`` (the fallback without ModelOpt): the form TensorRT's explicit
    quantization reads: symmetric int8 activations (zero point 0), per-channel symmetric int8
    weights as Q->DQ pairs on the FP32 weights, FP32 biases, Q/DQ on Conv inputs only (not on their
    outputs: a quantized depth-head output rounds the depth code to 8 bits). ``runtime="onnxruntime"``: the form ONNX
    Runtime's CPU kernels fuse into QLinearConv: asymmetric uint8 activations on every supported
    operator (a ReLU6 followed by a [0, 6] quantizer is dropped), per-channel int8 weights, int32
    biases. TensorRT refuses the second (non-zero zero points, uint8); ONNX Runtime runs the first
    mostly as float with conversions (docs/export.md).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"image": frame} for frame in frames)

        def get_next(self) -> dict | None:
            return next(self.items, None)

    if runtime == "tensorrt":
        settings = dict(
            op_types_to_quantize=["Conv"], activation_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
                           "QuantizeBias": False, "OpTypesToExcludeOutputQuantization": ["Conv"]},
        )  # fmt: skip
    elif runtime == "onnxruntime":
        settings = dict(activation_type=QuantType.QUInt8, extra_options={"WeightSymmetric": True})
    else:
        raise ValueError(f"unknown int8 runtime {runtime!r}; choose tensorrt or onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(onnx.shape_inference.infer_shapes(model), str(source))
        with warnings.catch_warnings(), _quiet_quantizer():
            warnings.simplefilter("ignore")
            quantize_static(
                str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, **settings,
            )  # fmt: skip
        quantized = onnx.load(str(target))
    del quantized.opset_import[:]
    quantized.opset_import.extend(model.opset_import)  # the quantizer only adds ops of these opsets
    quantized.ir_version = model.ir_version
    return quantized


@contextlib.contextmanager
def _quiet_quantizer():
    """The quantizer logs a pre-processing hint on the root logger at WARNING; hide it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


__all__ = ["ORT_QUANTIZER", "TRT_FALLBACK_QUANTIZER", "tensorrt_int8"]
