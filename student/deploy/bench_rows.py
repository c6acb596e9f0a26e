"""One bench row per variant x backend x precision, and the runner that made it.

Each ``*_row`` function times one exported file (or the PyTorch model) on its own runtime and
returns the ``BenchRow`` with a zero-argument factory of the *runner* it timed: ``run(image) ->
[depth, ...]`` over the file's input contract, so ``edgedepth.student.deploy.speed`` can score that
exact file on held-out frames; the factory is called only then (no second compile otherwise).
A runtime that is not installed gives a "not installed" row with its pip line; a combination that
cannot run gives "skipped" with the reason (``edgedepth.student.deploy.speed`` docstring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgedepth.student.deploy.memory_probe import RSS_NOTE, peak_memory_mb
from edgedepth.student.deploy.parity import Runner
from edgedepth.student.deploy.runtimes import RuntimeMissing, pip_line, require
from edgedepth.student.deploy.speed_result import BenchRow
from edgedepth.student.deploy.timing import latency_stats, ort_session, time_engine, time_runs
from edgedepth.student.model import ModelConfig

Made = tuple[BenchRow, Callable[[], Runner] | None]


@dataclass
class BenchItem:
    """One variant of the sweep: its config, PyTorch model and exported files.

    ``files`` maps a file key (``file_key``) to its manifest entry, with "file" its absolute path;
    ``notes`` maps a key to why there is no such file.
    """

    name: str
    config: ModelConfig
    model: torch.nn.Module
    files: dict[str, dict]
    notes: dict[str, str]
    weights_note: str = ""


@dataclass(frozen=True)
class RowSettings:
    """How every row is measured: device, CPU threads (None: every core), runs, memory probe."""

    device: str = "cpu"
    threads: int | None = None
    repeats: int = 50
    warmup: int = 10
    memory: bool = True
    work: Path = Path(".")
    calib_labels: str | Path | None = None


def file_key(entry: dict) -> str:
    """Key of a manifest entry: ``fp32`` / ``fp16`` / ``int8`` for the ONNX files (``int8-ort`` for ONNX
    Runtime's INT8 form), ``openvino:<precision>`` and ``litert:<precision>`` for the others."""
    target = entry.get("target", "")
    if target in ("openvino", "litert"):
        return f"{target}:{entry['precision']}"
    return entry["precision"] + ("-ort" if entry.get("runtime") == "onnxruntime" else "")


def bench_input(config: ModelConfig, dtype: str) -> np.ndarray:
    """A seeded random image (1, 3, H, W) at the config's input size, 0..255 as ``dtype``."""
    height, width = config.input_size
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (1, 3, height, width), dtype=np.uint8).astype(dtype)


def parity_note(entry: dict) -> str:
    parity = entry.get("parity", {})
    if entry["precision"] == "fp32" or "abs_rel" not in parity:
        return ""
    form = f"{Path(entry['path']).name}: " if entry.get("runtime") == "onnxruntime" else ""
    return f"{form}depth vs FP32: Abs Rel {parity['abs_rel']:.3g}, RMSE {parity['rmse']:.3g} m"


def torch_row(item: BenchItem, base: dict, precision: str, s: RowSettings) -> Made:
    from edgedepth.student.deploy.export import ExportModel

    if precision in ("int8", "bf16") or (precision == "fp16" and not s.device.startswith("cuda")):
        why = {"int8": "eager int8 is not benchmarked", "bf16": "bf16 execution is OpenVINO's"}.get(
            precision, "fp16 eager runs on CUDA only"
        )
        return BenchRow(**base, backend="torch", precision=precision, status="skipped",
                        note=f"{why}; see the other backends"), None  # fmt: skip
    if s.threads and s.device == "cpu":
        torch.set_num_threads(s.threads)
    wrapper = ExportModel(item.model, item.config).to(s.device).eval()
    x = torch.from_numpy(bench_input(item.config, "uint8")).to(s.device)
    cuda = s.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else None

    def run():
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=precision == "fp16"):
            wrapper(x)

    def runner(image: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=precision == "fp16"):
            return [t.float().cpu().numpy() for t in wrapper(torch.from_numpy(image).to(s.device))]

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stats = latency_stats(time_runs(run, s.repeats, s.warmup, sync))
    peak, what = None, ""
    if cuda:
        peak, what = torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    elif s.memory:
        state = s.work / f"torch_{item.name}.pt"
        torch.save({"config": item.config.to_dict(), "state": item.model.state_dict()}, state)
        peak, what = peak_memory_mb("torch", state, x.shape, "uint8", s.threads), RSS_NOTE
    return BenchRow(**base, backend="torch", precision=precision, status="ok", **stats,
                    peak_memory_mb=peak, memory=what, note=item.weights_note), lambda: runner  # fmt: skip


def _timed_row(row: dict, entry: dict, stats: dict, peak: float | None, note: str) -> BenchRow:
    """The "ok" row of one timed CPU file: its latency figures, its fresh-process memory (if
    measured) and the file's name."""
    return BenchRow(**row, status="ok", **stats, peak_memory_mb=peak, memory=RSS_NOTE if peak is not None else "",
                    note=note, file=Path(entry["file"]).name)  # fmt: skip


def _missing_file(item: BenchItem, base: dict, backend: str, precision: str, key: str) -> Made:
    note = item.notes.get(key, item.notes.get(precision, f"no {key.replace(':', ' ')} file"))
    return BenchRow(**base, backend=backend, precision=precision, status="skipped", note=note), None


def ort_row(item: BenchItem, base: dict, precision: str, s: RowSettings) -> Made:
    if precision == "bf16":
        return BenchRow(**base, backend="onnxruntime", precision=precision, status="skipped",
                        note="bf16 execution is OpenVINO's"), None  # fmt: skip
    import onnxruntime as ort

    if s.device.startswith("cuda") and "CUDAExecutionProvider" not in ort.get_available_providers():
        return BenchRow(**base, backend="onnxruntime", precision=precision, status="not installed",
                        note="onnxruntime has no CUDA provider here (onnxruntime-gpu)"), None  # fmt: skip
    entry = item.files.get(f"{precision}-ort") or item.files.get(precision)
    # int8: ONNX Runtime's own Q/DQ form when the export wrote it, else the TensorRT form
    if entry is None:
        return _missing_file(item, base, "onnxruntime", precision, precision)
    dtype = entry["input"]["dtype"]
    sess = ort_session(entry["file"], s.threads, s.device)
    name = sess.get_inputs()[0].name
    image = bench_input(item.config, dtype)
    stats = latency_stats(time_runs(lambda: sess.run(None, {name: image}), s.repeats, s.warmup))
    peak = None
    if s.memory and s.device == "cpu":
        peak = peak_memory_mb("onnxruntime", entry["file"], image.shape, dtype, s.threads)
    row = _timed_row({**base, "backend": "onnxruntime", "precision": precision}, entry, stats, peak,
                     parity_note(entry))  # fmt: skip
    return row, lambda: lambda x: sess.run(None, {name: x})


def openvino_row(item: BenchItem, base: dict, precision: str, s: RowSettings) -> Made:
    """OpenVINO on the CPU, latency hint; ``bf16`` is the FP32 IR run with the bf16 precision hint."""
    row = {**base, "backend": "openvino", "precision": precision}
    try:
        require("openvino")
    except RuntimeMissing:
        return BenchRow(**row, status="not installed", note=pip_line("openvino")), None
    from edgedepth.student.deploy.openvino_backend import bf16_supported, openvino_runner, time_openvino

    if s.device != "cpu":
        return BenchRow(**row, status="skipped", note="the OpenVINO rows run on the CPU"), None
    if precision == "bf16" and not bf16_supported():
        return BenchRow(**row, status="skipped", note="this CPU has no BF16 execution in OpenVINO"), None
    key = "openvino:" + ("fp32" if precision == "bf16" else precision)
    entry = item.files.get(key)
    if entry is None:
        return _missing_file(item, base, "openvino", precision, key)
    hint = "bf16" if precision == "bf16" else "f32"
    image = bench_input(item.config, entry["input"]["dtype"])
    stats = time_openvino(Path(entry["file"]), image, s.threads, s.repeats, s.warmup, hint)
    peak = None
    if s.memory:
        peak = peak_memory_mb("openvino", entry["file"], image.shape, image.dtype.name, s.threads, hint)
    note = parity_note(entry) + ("FP32 IR, inference precision hint bf16" if precision == "bf16" else "")
    return _timed_row(row, entry, stats, peak, note), lambda: openvino_runner(
        Path(entry["file"]), hint, s.threads
    )


def litert_row(item: BenchItem, base: dict, precision: str, s: RowSettings) -> Made:
    """The LiteRT interpreter (XNNPACK) on the CPU."""
    row = {**base, "backend": "litert", "precision": precision}
    from edgedepth.student.deploy.litert_backend import litert_runner, require_litert, time_litert

    try:
        require_litert("ai_edge_litert")
    except RuntimeMissing:
        return BenchRow(**row, status="not installed", note=pip_line("ai_edge_litert")), None

    if s.device != "cpu":
        return BenchRow(**row, status="skipped", note="the LiteRT rows run on the CPU"), None
    if precision == "bf16":
        return BenchRow(**row, status="skipped", note="bf16 execution is OpenVINO's"), None
    key = f"litert:{precision}"
    entry = item.files.get(key)
    if entry is None:
        return _missing_file(item, base, "litert", precision, key)
    image = bench_input(item.config, entry["input"]["dtype"])
    stats = time_litert(Path(entry["file"]), image, s.threads, s.repeats, s.warmup)
    peak = None
    if s.memory:
        peak = peak_memory_mb("litert", entry["file"], image.shape, image.dtype.name, s.threads)
    return _timed_row(row, entry, stats, peak, parity_note(entry)), lambda: litert_runner(
        Path(entry["file"]), s.threads
    )


def trt_row(item: BenchItem, base: dict, precision: str, s: RowSettings) -> Made:
    from edgedepth.student.deploy.tensorrt import TensorRTUnavailable, build_engine

    row = {**base, "backend": "tensorrt", "precision": precision}
    try:
        import tensorrt as trt
    except (ImportError, OSError):
        return BenchRow(**row, status="not installed", note=pip_line("tensorrt")), None
    if precision == "bf16":
        return BenchRow(**row, status="skipped", note="bf16 execution is OpenVINO's"), None
    if not torch.cuda.is_available():
        return BenchRow(
            **row, status="not installed", note=f"TensorRT {trt.__version__}, but no CUDA GPU"
        ), None
    entry = item.files.get(precision) or (item.files.get("fp32") if precision == "fp16" else None)
    # an FP16 engine builds from the FP16 copy, or from the FP32 file with the builder flag
    if entry is None:
        return _missing_file(item, base, "tensorrt", precision, precision)
    engine_path = s.work / f"{Path(entry['file']).stem}.engine"
    try:
        build_engine(entry["file"], engine_path, fp16=precision == "fp16", int8=precision == "int8",
                     calib_labels=s.calib_labels, log=lambda *_: None,
                     size=tuple(item.config.input_size))  # fmt: skip
    except TensorRTUnavailable as error:
        return BenchRow(**row, status="not installed", note=str(error)[:160]), None
    stats, peak = time_engine(trt, engine_path, bench_input(item.config, entry["input"]["dtype"]),
                              s.repeats, s.warmup)  # fmt: skip
    return BenchRow(**row, status="ok", **stats, peak_memory_mb=peak,
                    memory="engine device_memory_size + I/O buffers", note=parity_note(entry),
                    file=Path(entry["file"]).name), None  # fmt: skip


ROWS = {"torch": torch_row, "onnxruntime": ort_row, "tensorrt": trt_row, "openvino": openvino_row,
        "litert": litert_row}  # fmt: skip
"""Backend name -> its row function; ``edgedepth.student.deploy.speed.BACKENDS`` is its keys."""

__all__ = ["ROWS", "BenchItem", "RowSettings", "bench_input", "file_key", "parity_note"]
