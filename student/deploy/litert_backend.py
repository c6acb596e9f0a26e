"""LiteRT (TensorFlow Lite) files of the student for ARM boards and phones: FP32, FP16 and INT8
``.tflite``, checked; their runner, timing and operator list.

Route (litert-torch 0.10 on torch 2.14, measured on the L student):

* FP32: ``litert_torch.convert`` of the PyTorch export model (``ExportModel``) traced on one
  (1, 3, H, W) sample in the file's dtype. Every operator converts as it is: the uint8 cast, ReLU6,
  ``nn.PixelShuffle`` (RESHAPE + TRANSPOSE), the depth code's exp (folded into the head: CONV_2D ->
  EXP), argmax; max relative error vs PyTorch ~1e-6. The one export-only wrapper, ``_Named``,
  returns the outputs as a dict so the signature reads ``image`` -> ``depth``, ``classes`` (not
  ``args_0`` -> ``output_0``...): same weights, same numerics.
* INT8: ai-edge-quantizer's ``static_wi8_ai8`` on the checked FP32 ``.tflite``, calibrated (min/max)
  by running it on the calibration inputs: a quantized copy of exactly the file that passed the FP32
  check, as the ONNX Q/DQ copies are. True int8 kernels (CONV_2D, DEPTHWISE_CONV_2D, ADD,
  CONCATENATION on int8 tensors, int32 biases, per-channel weights); the ops producing the outputs
  stay float, so depth is float32 metres (DEQUANTIZE -> EXP) and classes int32, and the input stays
  uint8 / float32. litert-torch's own PT2E route (torchao ``prepare_pt2e`` + ``PT2EQuantizer``,
  per-channel, HistogramObserver) also gives int8 kernels but traces and converts the model a second
  time (minutes vs seconds) and was further from FP32 (L at 480x320: Abs Rel 0.0048 vs 0.0011).
* FP16: ai-edge-quantizer's ``float_casting``: CONV_2D / DEPTHWISE_CONV_2D weights stored float16,
  one DEQUANTIZE each: half the file; XNNPACK unpacks them to FP32 at load, a GPU delegate runs FP16.

Speed (XNNPACK, 2 threads, L at 480x320, an AVX-512 Xeon): FP32, FP16 and INT8 all ~45-50 fps, as
ONNX Runtime FP32; this narrow network gains little from int8 on x86 (not measured on ARM).

The file: one input ``image`` (1, 3, H, W) uint8 or float32 RGB 0..255, batch 1 (static); outputs
``depth`` (1, 1, h, w) float32 m [and ``classes`` (1, h, w) int32]; ``_check_contract`` holds every
file to it. litert-torch and ai-edge-litert are the ``litert`` extra, imported inside the functions
(``runtimes.require``), their log lines kept off the console (``_quiet``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import struct
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgedepth.common import write_bytes_atomic
from edgedepth.student.deploy.parity import copy_parity_of, fp32_parity_of
from edgedepth.student.deploy.runtimes import RuntimeMissing, pip_line, require
from edgedepth.student.deploy.timing import latency_stats, time_runs
from edgedepth.student.model import check_input_size

LITERT_PRECISIONS = ("fp32", "fp16", "int8")
OUTPUT_ORDER = ("depth", "classes")
INT8_RECIPE = (
    "ai-edge-quantizer {version} static_wi8_ai8 on the FP32 .tflite: int8 weights per-channel "
    "symmetric, int8 activations per-tensor asymmetric (min/max over {frames} calibration frame(s)), "
    "int32 biases; the ops producing the outputs unquantized (depth float32 m, classes int32)"
)
FP16_RECIPE = "ai-edge-quantizer {version} float_casting: CONV_2D / DEPTHWISE_CONV_2D weights float16"
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "LITERT_TORCH_SHOW_PROGRESS": "n"}


class _Named(nn.Module):
    """Export only: the export model's outputs as ``{"depth": ..., "classes": ...}`` (the tensors
    are the wrapped module's, untouched; the names label the file's signature)."""

    def __init__(self, wrapper: nn.Module) -> None:
        super().__init__()
        self.wrapper = wrapper

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        return dict(zip(OUTPUT_ORDER, self.wrapper(image), strict=False))


def export_litert(
    wrapper: nn.Module,
    out_dir: Path,
    stem: str,
    precisions: Sequence[str],
    size: tuple[int, int],
    dtype: str,
    real: Sequence[np.ndarray],
    calib: Sequence[np.ndarray] | None,
    progress: bool | Callable[[str], object] = True,
) -> list[dict]:
    """Write and check ``out_dir/<stem>_<p>.tflite`` for each precision; one dict per file.

    ``wrapper`` is the export model (image -> (depth,) or (depth, classes)); ``size`` (H, W);
    ``real`` and ``calib`` are inputs in the file's layout (1, 3, H, W) ``dtype``, 0..255
    (``to_export_input``). FP32 (always written: the base of the copies) must match ``wrapper`` on
    ``real`` plus one random image (``fp32_parity_of``); FP16 / INT8 depth must match the FP32 file's
    on ``real`` (``copy_parity_of``). A file that fails is removed and the one-line ValueError
    propagates. Entry keys: path, precision, runtime, parity, ops, litert_torch, quantizer.
    """
    out_dir, shape = Path(out_dir), (1, 3, *size)
    unknown = sorted(set(precisions) - set(LITERT_PRECISIONS))
    if unknown:
        raise ValueError(f"{stem}: unknown LiteRT precision {', '.join(unknown)}; choose fp32, fp16, int8")
    if "int8" in precisions and not calib:
        raise ValueError(f"{stem}_int8.tflite: int8 needs calibration inputs (none given)")
    if dtype not in ("uint8", "float32"):
        raise ValueError(f"{stem}: input dtype must be uint8 or float32, got {dtype!r}")
    try:
        check_input_size(*size)
    except ValueError as err:
        raise ValueError(f"{stem}: {err}") from None
    copies = [p for p in ("fp16", "int8") if p in precisions]
    if copies and not real:
        raise ValueError(f"{stem}: the {'/'.join(copies)} check needs at least one real frame")
    for what, arrays in (("real", real), ("calibration", calib or [])):
        for i, x in enumerate(arrays):
            if tuple(x.shape) != shape or x.dtype != np.dtype(dtype):
                raise ValueError(
                    f"{stem}: {what} input {i} is {x.dtype} {tuple(x.shape)}, not {dtype} {shape}"
                )
    litert_torch = require_litert("litert_torch")
    require_litert("ai_edge_litert")
    # ai-edge-quantizer makes the copies; a dependency of litert-torch, so the same extra
    if copies and importlib.util.find_spec("ai_edge_quantizer") is None:
        raise RuntimeMissing(f"ai_edge_quantizer is not installed: {pip_line('litert_torch')}")
    say = progress if callable(progress) else (print if progress else (lambda *_: None))
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapper, entries, ref = wrapper.eval(), [], []
    randoms = [np.random.default_rng(0).integers(0, 256, shape).astype(dtype)]
    with torch.no_grad():
        count = len(wrapper(torch.from_numpy(randoms[0])))  # outputs: depth [, classes]
    for precision in ("fp32", *copies):
        path = out_dir / f"{stem}_{precision}.tflite"
        say(f"exporting {path.name}")
        if precision == "fp32":
            data = content = _convert(litert_torch, wrapper, shape, dtype, path.name)
        else:
            data = _quantize(content, precision, calib or [], path.name)

        def check(path: Path, precision: str = precision, ref: list = ref) -> dict:
            _check_contract(path, shape, dtype, count)
            run = litert_runner(path)
            if precision == "fp32":
                return fp32_parity_of(run, path.name, wrapper, randoms + list(real), "LiteRT")
            return copy_parity_of(run, path.name, precision, real, ref)

        parity = _publish(data, path, check)
        if precision == "fp32":
            recipe = "none (float32)"
            if copies:  # the copies' reference: the FP32 file's depth on the real frames
                ref = [litert_runner(path)(x)[0] for x in real]
        else:
            recipe = {"int8": INT8_RECIPE, "fp16": FP16_RECIPE}[precision]
            recipe = recipe.format(version=version("ai-edge-quantizer"), frames=len(calib or []))
        entries.append({"path": path.name, "precision": precision, "runtime": "litert", "parity": parity,
                        "ops": tflite_ops(path), "litert_torch": litert_torch.__version__,
                        "quantizer": recipe})  # fmt: skip
    return entries


def litert_runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``run(image) -> [depth (1,1,h,w) float32 m, classes (1,h,w) int32 if present]`` of a
    ``.tflite`` on the LiteRT interpreter (XNNPACK), ``threads`` or every core. Outputs are placed by
    their signature names (``depth``, ``classes``), else by shape; a quantized (int8) input or depth
    output is (de)quantized with its scale. One interpreter: not for concurrent calls."""
    path = Path(path)
    interpreter = _interpreter(path, threads)
    port = interpreter.get_input_details()[0]
    shape, dtype = tuple(int(d) for d in port["shape"]), np.dtype(port["dtype"])
    scale, zero = port["quantization"]
    outputs = _ordered_outputs(interpreter, path.name)

    def run(image: np.ndarray) -> list[np.ndarray]:
        if tuple(image.shape) != shape or (image.dtype != dtype and not scale):
            raise ValueError(f"{path.name}: takes {dtype} {shape}, got {image.dtype} {tuple(image.shape)}")
        if image.dtype != dtype:  # a quantized input: the image in its integer steps
            image = np.clip(np.round(image / scale + zero), np.iinfo(dtype).min, np.iinfo(dtype).max)
        interpreter.set_tensor(port["index"], np.ascontiguousarray(image, dtype=dtype))
        interpreter.invoke()
        return [_dequantized(interpreter.get_tensor(o["index"]), o) for o in outputs]

    return run


def time_litert(
    path: Path, image: np.ndarray, threads: int | None = None, repeats: int = 50, warmup: int = 10
) -> dict[str, float]:
    """``latency_stats`` (ms, fps) of batch-1 inference of a ``.tflite`` on ``image`` (its full input
    array): ``set_tensor`` + ``invoke`` per run, as the ONNX Runtime row feeds its input per run."""
    path = Path(path)
    interpreter = _interpreter(path, threads)
    port = interpreter.get_input_details()[0]
    want = (np.dtype(port["dtype"]), tuple(int(d) for d in port["shape"]))
    if (image.dtype, tuple(image.shape)) != want:
        raise ValueError(f"{path.name}: takes {want[0]} {want[1]}, got {image.dtype} {tuple(image.shape)}")
    image, index = np.ascontiguousarray(image), port["index"]

    def once() -> None:
        interpreter.set_tensor(index, image)
        interpreter.invoke()

    return latency_stats(time_runs(once, repeats, warmup))


def tflite_ops(path: Path) -> list[str]:
    """Sorted builtin operator names of a ``.tflite``, read from its flatbuffer (before any delegate
    takes them), e.g. ``CONV_2D``, ``DEQUANTIZE``; a custom operator is ``CUSTOM:<its code>``."""
    require_litert("ai_edge_litert")
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    content = path.read_bytes() if path.is_file() else b""
    if len(content) < 8 or not schema.Model.ModelBufferHasIdentifier(content, 0):
        raise ValueError(f"{path}: not a .tflite file (no TFL3 flatbuffer identifier)")
    try:
        model = schema.Model.GetRootAs(content, 0)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # schema 3a keeps both
            custom = code.CustomCode()
            codes.append(f"CUSTOM:{custom.decode()}" if custom else names.get(builtin, str(builtin)))
        graphs = [model.Subgraphs(i) for i in range(model.SubgraphsLength())]
        used = {codes[g.Operators(j).OpcodeIndex()] for g in graphs for j in range(g.OperatorsLength())}
    except (IndexError, ValueError, TypeError, struct.error) as err:  # flatbuffers' errors on junk
        raise ValueError(f"{path.name}: not a readable .tflite ({type(err).__name__}: {err})") from None
    return sorted(used)


def require_litert(module: str = "litert_torch") -> Any:
    """``runtimes.require(module)`` (litert_torch or ai_edge_litert) with the TF / absl lines their
    import prints hidden: for an up-front check of the extra. RuntimeMissing names the pip line."""
    with _quiet():
        return require(module)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """TF / absl / litert-torch log lines and progress off: their environment switches, Python
    warnings and logging below ERROR, and C++ stderr (file descriptor 2) into a scratch file."""
    saved = {key: os.environ.get(key) for key in _QUIET_ENV}
    os.environ.update(_QUIET_ENV)
    root, stderr = logging.getLogger(), os.dup(2)
    level = root.level
    root.setLevel(logging.ERROR)
    sys.stderr.flush()
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(stderr, 2)
    finally:
        os.close(stderr)
        root.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _convert(litert_torch: Any, wrapper: nn.Module, shape: tuple[int, ...], dtype: str, name: str) -> bytes:
    """The FP32 ``.tflite`` bytes of ``wrapper`` traced on one zero input ``image`` of ``shape``."""
    sample = torch.zeros(shape, dtype=getattr(torch, dtype))
    try:
        with _quiet(), torch.no_grad():
            converted = litert_torch.convert(_Named(wrapper).eval(), sample_kwargs={"image": sample})
            return bytes(converted.model_content())
    except Exception as err:  # the converter raises anything, from torch.export to MLIR errors
        raise ValueError(f"{name}: litert-torch cannot convert the model: {_reason(err)}") from None


def _quantize(content: bytes, precision: str, calib: Sequence[np.ndarray], name: str) -> bytes:
    """The INT8 (``static_wi8_ai8``, calibrated on ``calib``, outputs left float) or FP16
    (``float_casting`` of the convolution weights) copy of the FP32 ``.tflite`` bytes ``content``."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        with _quiet():
            from ai_edge_quantizer import qtyping as qt
            from ai_edge_quantizer import recipe
            from ai_edge_quantizer.algorithm_manager import AlgorithmName as Algorithm
            from ai_edge_quantizer.quantizer import Quantizer

            quantizer = Quantizer(content)
            if precision == "int8":
                interpreter = Interpreter(model_content=content)
                signature, io = next(iter(interpreter.get_signature_list().items()))
                # an op's scope is its output tensor names, each followed by ";"
                outputs = "|".join(re.escape(o["name"]) for o in interpreter.get_output_details())
                quantizer.load_quantization_recipe(recipe.static_wi8_ai8())
                everything, keep = qt.TFLOperationName.ALL_SUPPORTED, Algorithm.NO_QUANTIZE
                quantizer.update_quantization_recipe(f"(^|;)({outputs});", everything, algorithm_key=keep)
                data = {signature: [{io["inputs"][0]: np.ascontiguousarray(x)} for x in calib]}
                stats = quantizer.calibrate(data, num_threads=os.cpu_count() or 1)
                return bytes(quantizer.quantize(stats, enable_progress_report=False).quantized_model)
            weights = qt.TensorQuantizationConfig(num_bits=16, dtype=qt.TensorDataType.FLOAT)
            fp16 = qt.OpQuantizationConfig(
                weight_tensor_config=weights,
                compute_precision=qt.ComputePrecision.FLOAT,
                explicit_dequantize=True,
            )
            for op in (qt.TFLOperationName.CONV_2D, qt.TFLOperationName.DEPTHWISE_CONV_2D):
                quantizer.update_quantization_recipe(".*", op, fp16, algorithm_key=Algorithm.FLOAT_CASTING)
            return bytes(quantizer.quantize(enable_progress_report=False).quantized_model)
    except Exception as err:  # the quantizer raises ValueError, RuntimeError, KeyError, ...
        raise ValueError(f"{name}: ai-edge-quantizer failed: {_reason(err)}") from None


def _check_contract(path: Path, shape: tuple[int, ...], dtype: str, count: int) -> None:
    """The file takes ``shape`` ``dtype`` and gives depth float32 (1,1,h,w) [and classes int32
    (1,h,w)], as the ONNX files do (a quantizer must not make them int8)."""
    interpreter = _interpreter(path, 1)
    port = interpreter.get_input_details()[0]
    got = (np.dtype(port["dtype"]).name, tuple(int(d) for d in port["shape"]))
    if got != (dtype, shape):
        raise ValueError(f"{path.name}: input is {got[0]} {got[1]}, not the contract's {dtype} {shape}")
    kinds = [(np.dtype(d["dtype"]).name, len(d["shape"])) for d in _ordered_outputs(interpreter, path.name)]
    if kinds != [("float32", 4), ("int32", 3)][:count]:
        classes = " and classes int32 (1,h,w)" if count > 1 else ""
        raise ValueError(
            f"{path.name}: outputs are {kinds} (dtype, rank), not depth float32 (1,1,h,w){classes}"
        )


def _publish(content: bytes, path: Path, check: Callable[[Path], dict]) -> dict:
    """Write ``path`` atomically, then ``check(path)``; a file that fails it (or that LiteRT cannot
    run) is removed, never left as good."""
    try:
        write_bytes_atomic(path, content)
        return check(path)
    except BaseException as err:
        path.unlink(missing_ok=True)
        if isinstance(err, RuntimeError):
            raise ValueError(f"{path.name}: LiteRT failed: {_reason(err)} (file removed)") from None
        raise


def _interpreter(path: Path, threads: int | None) -> Any:
    """An allocated interpreter (default resolver: XNNPACK) with one input; ``threads`` None: every
    core. A one-line ValueError for a bad file or setting."""
    require_litert("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if not path.is_file():
        raise ValueError(f"{path}: no such .tflite file")
    try:
        with _quiet():
            interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
            interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path.name}: LiteRT cannot load it: {_reason(err)}") from None
    inputs = len(interpreter.get_input_details())
    if inputs != 1:
        raise ValueError(f"{path.name}: expected one input (image), found {inputs}")
    return interpreter


def _ordered_outputs(interpreter: Any, name: str) -> list[dict]:
    """Output details in ``OUTPUT_ORDER``: by signature name, else depth = the (1,1,h,w) output and
    classes = the 3-D integer one."""
    details = interpreter.get_output_details()
    by_index = {d["index"]: d for d in details}
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        runner = interpreter.get_signature_runner()
        named = {key: by_index.get(d["index"]) for key, d in runner.get_output_details().items()}
        if "depth" in named and set(named) <= set(OUTPUT_ORDER) and None not in named.values():
            return [named[key] for key in OUTPUT_ORDER if key in named]
    depth = [d for d in details if len(d["shape"]) == 4 and d["shape"][1] == 1]
    classes = [d for d in details if len(d["shape"]) == 3 and np.issubdtype(d["dtype"], np.integer)]
    if len(depth) != 1 or len(classes) > 1 or len(details) != len(depth) + len(classes):
        shapes = ", ".join(f"{np.dtype(d['dtype'])} {tuple(int(s) for s in d['shape'])}" for d in details)
        raise ValueError(f"{name}: outputs ({shapes}) are not depth (1,1,h,w) [and classes (1,h,w)]")
    return depth + classes


def _dequantized(value: np.ndarray, detail: dict) -> np.ndarray:
    """A quantized depth output (integer with a scale) in metres; anything else as it is."""
    scale, zero = detail["quantization"]
    if scale and np.issubdtype(value.dtype, np.integer) and len(detail["shape"]) == 4:
        return ((value.astype(np.float32) - zero) * scale).astype(np.float32)
    return value


def _reason(err: BaseException) -> str:
    """The first non-empty line of an error, at most 200 characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines or [type(err).__name__])[0][:200]


__all__ = ["FP16_RECIPE", "INT8_RECIPE", "LITERT_PRECISIONS", "export_litert", "litert_runner",
           "require_litert", "tflite_ops", "time_litert"]  # fmt: skip
