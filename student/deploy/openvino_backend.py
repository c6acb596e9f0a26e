"""OpenVINO IR of the student for Intel CPUs: FP32, FP16 and NNCF INT8 files, checked; their timing.

The IR is converted from the FP32 ONNX file ``export_onnx`` wrote (``ov.convert_model(onnx)``), not
from the PyTorch module: that file already holds the normalisation, the ``image`` input (uint8 or
float32, NCHW, 0..255) and the ``depth`` / ``classes`` outputs, so the IR keeps its contract by
construction and one traced graph serves every runtime.

* Batch: the IR has a static batch of 1. TensorRT 10's ONNX files have a dynamic batch; on the CPU
  plugin that costs shape inference and kernel selection per request (~10% slower at 480x320,
  measured), and an edge camera sends one frame at a time. Another batch is one
  ``model.reshape({"image": [n, 3, h, w]})`` after ``read_model`` (the graph has no fixed reshape).
* FP16 is weight compression (``save_model(compress_to_fp16=True)``): half the file; the CPU plugin
  decompresses the weights at compile time, so it runs at FP32 speed under the f32 hint.
* INT8 is NNCF post-training quantization (``QUANTIZER``): FakeQuantize on activations and weights,
  calibrated on inputs in the file's layout; the CPU runs VNNI / AMX int8 kernels.
* Checks compile with ``INFERENCE_PRECISION_HINT`` f32: on BF16 / AMX CPUs the plugin would run an
  FP32 IR in bf16 by itself. bf16 is a run-time hint, not a file.
* Timing: one reused infer request, ``start_async`` + ``wait``: 5-10% faster than ``infer()`` at
  480x320 with 2 threads (the sync call runs in the caller's thread, not the plugin's stream).

OpenVINO and NNCF are the ``openvino`` extra, imported inside the functions (``runtimes.require``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgedepth.common import write_bytes_atomic
from edgedepth.student.deploy.parity import copy_parity_of, fp32_parity_of
from edgedepth.student.deploy.runtimes import require
from edgedepth.student.deploy.timing import latency_stats, time_runs

OV_PRECISIONS = ("fp32", "fp16", "int8")
PRECISION_HINTS = ("f32", "bf16")
OUTPUT_ORDER = ("depth", "classes")
QUANTIZER = {"preset": "PERFORMANCE", "target_device": "CPU", "model_type": None, "fast_bias_correction": True}  # fmt: skip
"""NNCF settings: symmetric int8 activations and weights (PERFORMANCE: what VNNI / AMX run
fastest), CPU placement rules, no transformer rules, fast bias correction; subset = all frames."""


def export_openvino(
    onnx_fp32: Path,
    out_dir: Path,
    stem: str,
    precisions: Sequence[str],
    wrapper: torch.nn.Module,
    real: Sequence[np.ndarray],
    calib: Sequence[np.ndarray] | None,
    progress: bool = True,
) -> list[dict]:
    """Write and check ``out_dir/<stem>_<p>.xml`` + ``.bin`` for each precision; one dict each.

    ``real`` and ``calib`` are inputs in the file's layout (1, 3, H, W), its dtype, 0..255
    (``to_export_input``). FP32 (always written: the reference of the copies) must match ``wrapper``
    on ``real`` plus one random image (``fp32_parity_of``); FP16 / INT8 depth must match the FP32
    IR's depth on ``real`` (``copy_parity_of``). A pair failing its check is removed and the
    one-line ValueError propagates.
    """
    onnx_fp32, out_dir = Path(onnx_fp32), Path(out_dir)
    unknown = sorted(set(precisions) - set(OV_PRECISIONS))
    if unknown:
        raise ValueError(f"{stem}: unknown OpenVINO precision {', '.join(unknown)}; choose fp32, fp16, int8")
    if "int8" in precisions and not calib:
        raise ValueError(
            f"{stem}_int8.xml: int8 needs calibration inputs (none given): pass calibration frames"
        )
    if not real:
        raise ValueError(f"{stem}: the parity check needs at least one real frame")
    if not onnx_fp32.is_file():
        raise ValueError(f"{onnx_fp32}: no such ONNX file to convert")
    ov = require("openvino")
    nncf = require("nncf") if "int8" in precisions else None
    say = print if progress else (lambda *_: None)
    try:
        model = ov.convert_model(onnx_fp32)
    except RuntimeError as err:
        raise ValueError(f"{onnx_fp32.name}: OpenVINO cannot read it: {_reason(err)}") from None
    shape, dtype = _static_batch_one(model, onnx_fp32.name)
    for what, arrays in (("real", real), ("calibration", calib or [])):
        for i, x in enumerate(arrays):
            if tuple(x.shape) != shape or x.dtype != dtype:
                raise ValueError(
                    f"{onnx_fp32.name}: {what} input {i} is {x.dtype} {tuple(x.shape)}; the file takes {dtype} {shape}"
                )
    out_dir.mkdir(parents=True, exist_ok=True)
    version, entries = ov.__version__, []

    def entry(xml: Path, precision: str, parity: dict) -> dict:
        ops = openvino_ops(xml)
        info = {"name": "image", "dtype": str(dtype), "shape": list(shape), "range": [0, 255]}
        return {"path": xml.name, "weights": xml.with_suffix(".bin").name, "precision": precision,
                "runtime": "openvino", "input": info, "parity": parity, "ops": ops, "openvino": version}  # fmt: skip

    xml = out_dir / f"{stem}_fp32.xml"
    say(f"exporting {xml.name}")
    randoms = [np.random.default_rng(0).integers(0, 256, shape).astype(dtype)]

    fp32_run: list[Callable] = []  # the checked FP32 IR's runner gives the copies' reference depth

    def fp32_check(path: Path) -> dict:
        fp32_run.append(openvino_runner(path))
        return fp32_parity_of(fp32_run[0], path.name, wrapper, randoms + list(real), "OpenVINO")

    entries.append(entry(xml, "fp32", _publish(ov, model, xml, False, fp32_check)))
    ref = [fp32_run[0](x)[0] for x in real]

    for precision in (p for p in ("fp16", "int8") if p in precisions):
        xml = out_dir / f"{stem}_{precision}.xml"
        say(f"exporting {xml.name}")
        copy, extra = model.clone(), {}
        if precision == "int8":
            copy = _quantize(nncf, copy, calib, progress, xml.name)
            settings = ", ".join(f"{k}={v}" for k, v in QUANTIZER.items())
            extra["quantizer"] = f"nncf {nncf.__version__}, quantize: {settings}, subset_size={len(calib)}"

        def copy_check(path: Path, precision=precision) -> dict:
            return copy_parity_of(openvino_runner(path), path.name, precision, real, ref)

        parity = _publish(ov, copy, xml, precision == "fp16", copy_check)
        entries.append({**entry(xml, precision, parity), **extra})
    return entries


def openvino_runner(
    path: Path, precision_hint: str = "f32", threads: int | None = None
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``run(image) -> [depth (N,1,h,w) float32 m, classes (N,h,w) int32 if present]`` of an IR
    compiled on the CPU (LATENCY hint, ``precision_hint`` f32 or bf16, ``threads`` or all cores)."""
    path = Path(path)
    compiled = _compile(path, precision_hint, threads)
    request = compiled.create_infer_request()
    port = compiled.input(0)
    shape, dtype = tuple(port.get_shape()), port.get_element_type().to_dtype()
    outputs = sorted(compiled.outputs, key=_rank)

    def run(image: np.ndarray) -> list[np.ndarray]:
        if tuple(image.shape) != shape or image.dtype != dtype:
            raise ValueError(f"{path.name}: takes {dtype} {shape}, got {image.dtype} {tuple(image.shape)}")
        result = request.infer({0: image})  # copies of the outputs (share_outputs=False)
        return [result[o] for o in outputs]

    return run


def bf16_supported() -> bool:
    """Whether the CPU runs bf16 natively (AVX512-BF16 / AMX): ``OPTIMIZATION_CAPABILITIES`` has BF16."""
    require("openvino")
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def time_openvino(
    path: Path, image: np.ndarray, threads: int | None = None, repeats: int = 50, warmup: int = 10,
    precision_hint: str = "f32",
) -> dict[str, float]:  # fmt: skip
    """``latency_stats`` (ms, fps) of batch-1 inference of an IR on ``image`` (its full input array):
    one reused infer request, input set once, ``start_async`` + ``wait`` per run."""
    ov = require("openvino")
    compiled = _compile(Path(path), precision_hint, threads)
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(np.ascontiguousarray(image)))

    def once() -> None:
        request.start_async()
        request.wait()

    return latency_stats(time_runs(once, repeats, warmup))


def openvino_ops(path: Path) -> list[str]:
    """Sorted operator types of an IR (FakeQuantize in an NNCF INT8 file)."""
    require("openvino")
    return sorted({op.get_type_name() for op in _core().read_model(Path(path)).get_ops()})


def profile_openvino(
    path: Path, image: np.ndarray, top: int = 8, precision_hint: str = "f32", threads: int | None = None,
    runs: int = 10,
) -> list[tuple[str, str, str, float]]:  # fmt: skip
    """The ``top`` slowest executed nodes, (name, type, exec type (kernel), mean ms), over ``runs``
    runs with ``PERF_COUNT`` on (after one warm-up run)."""
    ov = require("openvino")
    compiled = _compile(Path(path), precision_hint, threads, perf_count=True)
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(np.ascontiguousarray(image)))
    request.infer()
    total: dict[tuple[str, str, str], float] = {}
    for _ in range(runs):
        request.infer()
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                key = (info.node_name, info.node_type, info.exec_type)
                total[key] = total.get(key, 0.0) + info.real_time.total_seconds() * 1000.0 / runs
    slowest = sorted(total.items(), key=lambda item: -item[1])[:top]
    return [(*key, ms) for key, ms in slowest]


def _rank(output: Any) -> int:
    """Place of an output in ``OUTPUT_ORDER`` by its tensor names (others last, in file order)."""
    names = output.get_names()
    return next((i for i, name in enumerate(OUTPUT_ORDER) if name in names), len(OUTPUT_ORDER))


@cache
def _core() -> Any:
    return require("openvino").Core()


def _compile(path: Path, precision_hint: str, threads: int | None, perf_count: bool = False) -> Any:
    """The IR compiled on the CPU, LATENCY hint; a one-line ValueError for a bad file or setting."""
    require("openvino")  # every call: _core() is cached
    if precision_hint not in PRECISION_HINTS:
        raise ValueError(
            f"precision hint must be one of {', '.join(PRECISION_HINTS)}, got {precision_hint!r}"
        )
    if precision_hint == "bf16" and not bf16_supported():
        raise ValueError(f"{path.name}: this CPU has no native bf16 (OPTIMIZATION_CAPABILITIES lacks BF16)")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if not (path.is_file() and path.with_suffix(".bin").is_file()):
        raise ValueError(
            f"{path}: no OpenVINO IR here (need {path.name} and {path.with_suffix('.bin').name})"
        )
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision_hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if perf_count:
        config["PERF_COUNT"] = True
    try:
        return _core().compile_model(_core().read_model(path), "CPU", config)
    except RuntimeError as err:
        raise ValueError(f"{path.name}: OpenVINO cannot compile it: {_reason(err)}") from None


def _static_batch_one(model: Any, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Reshape a dynamic batch to 1; (input shape, numpy dtype). H and W must be static."""
    port = model.input(0)
    dims = list(port.get_partial_shape())
    if len(dims) != 4 or any(d.is_dynamic for d in dims[1:]):
        raise ValueError(f"{name}: input {port.get_partial_shape()} is not (N, 3, H, W) with static H, W")
    if dims[0].is_dynamic:
        model.reshape({port: [1, *(d.get_length() for d in dims[1:])]})
    return tuple(model.input(0).get_shape()), np.dtype(port.get_element_type().to_dtype())


def _quantize(nncf: Any, model: Any, calib: Sequence[np.ndarray], progress: bool, name: str) -> Any:
    """NNCF post-training quantization with ``QUANTIZER`` on every calibration input."""
    settings = dict(
        QUANTIZER, preset=nncf.QuantizationPreset.PERFORMANCE, target_device=nncf.TargetDevice.CPU
    )
    logger, level = logging.getLogger("nncf"), logging.getLogger("nncf").level
    quiet = contextlib.ExitStack()
    if not progress:  # NNCF's progress bars (rich) and INFO lines
        quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
        quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
        logger.setLevel(logging.WARNING)
    try:
        with quiet:
            return nncf.quantize(model, nncf.Dataset(list(calib)), subset_size=len(calib), **settings)
    except (RuntimeError, nncf.ValidationError, nncf.InternalError, nncf.UnsupportedModelError) as err:
        raise ValueError(f"{name}: NNCF quantization failed: {_reason(err)}") from None
    finally:
        logger.setLevel(level)


def _publish(ov: Any, model: Any, xml: Path, compress: bool, check: Callable[[Path], dict]) -> dict:
    """Write the pair (through a temporary folder, each file atomically: .bin, then .xml), then
    ``check(xml)``; a pair that fails (or that OpenVINO cannot run) is removed, never left."""
    try:
        with tempfile.TemporaryDirectory(prefix="edgedepth-ov-") as tmp:
            scratch = Path(tmp) / "model.xml"
            ov.save_model(model, scratch, compress_to_fp16=compress)
            xml.unlink(missing_ok=True)  # an older .xml never meets the new weights
            write_bytes_atomic(xml.with_suffix(".bin"), scratch.with_suffix(".bin").read_bytes())
            write_bytes_atomic(xml, scratch.read_bytes())
        return check(xml)
    except BaseException as err:
        xml.unlink(missing_ok=True)
        xml.with_suffix(".bin").unlink(missing_ok=True)
        if isinstance(err, RuntimeError):
            raise ValueError(f"{xml.name}: OpenVINO failed: {_reason(err)} (file removed)") from None
        raise


def _reason(err: BaseException) -> str:
    """The informative line of an OpenVINO error (skipping its 'Exception from src/...' lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(err).__name__])[0][:200]


__all__ = [
    "OV_PRECISIONS",
    "PRECISION_HINTS",
    "QUANTIZER",
    "bf16_supported",
    "export_openvino",
    "openvino_ops",
    "openvino_runner",
    "profile_openvino",
    "time_openvino",
]
