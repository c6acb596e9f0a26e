"""Backend speed of the exported student: `edgedepth student bench` and `benchmarks/edge_speed.py`.

``bench_variants`` times each variant x backend x precision at batch 1 after warm-up and reports
parameters and multiply-adds (of the PyTorch model, ``count_parameters`` / ``count_macs``), the
median latency, frames per second (1000 / median), the spread (10th-90th percentile latency) and
the peak memory. What the memory figure measures depends on the backend:

* CPU rows (torch, onnxruntime): the growth of the resident set of a *fresh* Python process, from
  just before the model / session is created to the end of three inference runs
  (``edgedepth.student.deploy.memory_probe``).
* torch on CUDA: ``torch.cuda.max_memory_allocated`` during the timed runs (the caching allocator's
  peak, weights included).
* TensorRT: the engine's activation memory (``device_memory_size``) plus its input/output buffers.

A backend that is not installed gets one row per variant and precision with status
"not installed"; a combination that cannot run gets status "skipped" with the reason. The rows and
their table are ``edgedepth.student.deploy.speed_result``; the timed runs
``edgedepth.student.deploy.timing``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgedepth.common import check_choice, check_choices
from edgedepth.student.deploy.memory_probe import RSS_NOTE, peak_memory_mb
from edgedepth.student.deploy.speed_result import BenchResult, BenchRow, wxh
from edgedepth.student.deploy.timing import latency_stats, time_engine, time_onnx, time_runs
from edgedepth.student.model import (
    VARIANTS,
    ModelConfig,
    count_macs,
    count_parameters,
    load_student,
    read_checkpoint,
)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
BENCH_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class _Variant:
    name: str
    config: ModelConfig
    model: torch.nn.Module
    files: dict[
        str, dict
    ]  # precision (int8-ort: ONNX Runtime's int8 form) -> manifest entry, "file" absolute
    notes: dict[str, str]  # precision -> why there is no file
    weights_note: str = ""


def bench_variants(
    source: str | Path,
    variants: Sequence[str] = ("L", "M", "S", "XS"),
    size: tuple[int, int] = (320, 480),
    backends: Sequence[str] = ("torch", "onnxruntime"),
    precisions: Sequence[str] = ("fp32",),
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 50,
    warmup: int = 10,
    calib_labels: str | Path | None = None,
    calib_frames: int = 64,
    memory: bool = True,
    target: str = "trt10",
    progress: bool = False,
) -> BenchResult:
    """Time every variant x backend x precision at batch 1; see the module docstring.

    ``source`` is a student checkpoint (the ONNX files are exported, target trt10, into a temporary
    folder; INT8 needs ``calib_labels``, else its rows are skipped with the reason) or an export
    folder (its manifest.json; ``size`` is then the files' own). ``size`` is (height, width).
    ``target`` is the export target of a checkpoint source (trt10: uint8 input, the dynamo exporter;
    trt8: float32 input, the legacy exporter, much quicker to export). ``memory`` False skips the
    fresh-process memory probe (about a second per ONNX Runtime row, a few per torch row).
    """
    say = print if progress else (lambda *_: None)
    backends, precisions = [b.lower() for b in backends], [p.lower() for p in precisions]
    check_choices(backends, BACKENDS, "backend")
    check_choices(precisions, BENCH_PRECISIONS, "precision")
    variants = [check_choice(v, VARIANTS, "variant", upper=True) for v in variants]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is visible")
    threads = threads or None
    cpu_threads = threads or os.cpu_count() or 1
    settings: dict[str, object] = {
        "batch": 1,
        "device": device,
        "threads": cpu_threads if device == "cpu" else None,
        "repeats": repeats,
        "warmup": warmup,
        "latency": f"median of {repeats} runs after {warmup} warm-up runs; spread p10-p90",
        "memory": RSS_NOTE + (" (CPU rows)" if memory else "; not measured"),
        "torch": torch.__version__,
    }
    try:
        import onnxruntime

        settings["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="edgedepth-bench-") as tmp:
        work = Path(tmp)
        needs_onnx = any(b in backends for b in ("onnxruntime", "tensorrt"))
        if source.is_dir():
            items = _from_export_dir(source, variants, precisions)
            settings["source"] = f"export folder {source}"
        else:
            items = _from_checkpoint(source, variants, size, precisions, needs_onnx, calib_labels,
                                     calib_frames, work, say, target)  # fmt: skip
            settings["source"] = f"checkpoint {source} (ONNX exported for {target})"
        rows: list[BenchRow] = []
        for item in items:
            base = _base(item)
            for backend in backends:
                for precision in precisions:
                    say(f"bench {item.name} {backend} {precision}")
                    runner = {"torch": _torch_row, "onnxruntime": _ort_row, "tensorrt": _trt_row}[backend]
                    try:
                        row = runner(item, base, precision, device, threads, repeats, warmup, memory, work,
                                     calib_labels)  # fmt: skip
                    except Exception as error:  # one failed row must not hide the others
                        row = BenchRow(**base, backend=backend, precision=precision, status="failed",
                                       note=" ".join(str(error).split())[:200])  # fmt: skip
                    rows.append(row)
    return BenchResult(rows, settings)


def _base(item: _Variant) -> dict:
    config = item.config
    return {
        "variant": item.name,
        "input_size": tuple(config.input_size),
        "output_size": tuple(config.output_size),
        "parameters": count_parameters(item.model),
        "macs": count_macs(item.model, tuple(config.input_size)),
    }


def _from_checkpoint(
    source, variants, size, precisions, needs_onnx, calib_labels, calib_frames, work, say, target
):
    read_checkpoint(source)
    items = []
    for name in variants:
        model, config = load_student(source, name)
        items.append(_Variant(name, config.with_size(tuple(size)), model, {}, {}))
    if not needs_onnx:
        return items
    from edgedepth.student.deploy.export import export_onnx

    wanted = ["fp32"] + [p for p in precisions if p in ("fp16", "int8")]
    notes = {}
    if "int8" in wanted and calib_labels is None:
        wanted.remove("int8")
        notes["int8"] = "int8 needs calib_labels (a label folder to calibrate on)"
    say(f"exporting {', '.join(variants)} ({', '.join(wanted)}) at {wxh(size)}")
    if target == "trt8" and "fp16" in wanted:
        wanted.remove("fp16")  # trt8 writes no FP16 file: FP16 is TensorRT 8's builder flag
        notes["fp16"] = "trt8 exports no FP16 file (a TensorRT builder flag)"
    manifest = export_onnx(source, work / "onnx", tuple(variants), tuple(size), target, tuple(wanted),
                           calib_labels=calib_labels, calib_frames=calib_frames, progress=False)  # fmt: skip
    for item in items:
        item.notes.update(notes)
        for entry in manifest.files:
            if entry["variant"] == item.name:
                item.files[_file_key(entry)] = {**entry, "file": str(manifest.out_dir / entry["path"])}
    return items


def _from_export_dir(folder: Path, variants, precisions):
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{folder}: no manifest.json (not an export folder)")
    entries = _manifest_files(manifest_path)
    items = []
    for name in variants:
        mine = [e for e in entries if e["variant"] == name]
        if not mine:
            raise ValueError(f"{folder}: the manifest has no file of variant {name}")
        config = ModelConfig.from_dict(mine[0]["model_config"], source=str(manifest_path))
        checkpoint, note = Path(str(mine[0].get("checkpoint") or "")), ""
        if checkpoint.is_file():
            model, _ = load_student(checkpoint, name)
        else:
            model, note = config.build().eval(), "torch rows use random weights (checkpoint not found)"
        files = {_file_key(e): {**e, "file": str(folder / e["path"])} for e in mine}
        missing = {p: f"the export folder has no {p} file of {name}" for p in precisions if p not in files}
        items.append(_Variant(name, config, model, files, missing, note))
    return items


def _manifest_files(path: Path) -> list[dict]:
    """The ``files`` of an export manifest, each with a variant, a path and model settings."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise ValueError(f"{path}: field 'files' is missing or not a list (not an export manifest)")
    for i, entry in enumerate(files):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("variant"), str)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("model_config"), dict)
        ):
            raise ValueError(f"{path}: files[{i}] lacks a variant, path or model_config")
        if Path(entry["path"]).name != entry["path"]:
            raise ValueError(f"{path}: files[{i}] path {entry['path']!r} is not a file of the folder")
    return files


def _input(item: _Variant, dtype: str) -> np.ndarray:
    height, width = item.config.input_size
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (1, 3, height, width), dtype=np.uint8).astype(dtype)


def _torch_row(item, base, precision, device, threads, repeats, warmup, memory, work, calib_labels):
    from edgedepth.student.deploy.export import ExportModel

    if precision == "int8" or (precision == "fp16" and not device.startswith("cuda")):
        why = "eager int8 is not benchmarked" if precision == "int8" else "fp16 eager runs on CUDA only"
        return BenchRow(**base, backend="torch", precision=precision, status="skipped",
                        note=f"{why}; see onnxruntime / tensorrt")  # fmt: skip
    if threads and device == "cpu":
        torch.set_num_threads(threads)
    wrapper = ExportModel(item.model, item.config).to(device).eval()
    x = torch.from_numpy(_input(item, "uint8")).to(device)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else None

    def run():
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=precision == "fp16"):
            wrapper(x)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stats = latency_stats(time_runs(run, repeats, warmup, sync))
    peak, what = None, ""
    if cuda:
        peak, what = torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    elif memory:
        state = work / f"torch_{item.name}.pt"
        torch.save({"config": item.config.to_dict(), "state": item.model.state_dict()}, state)
        peak, what = peak_memory_mb("torch", state, x.shape, "uint8", threads), RSS_NOTE
    return BenchRow(**base, backend="torch", precision=precision, status="ok", **stats,
                    peak_memory_mb=peak, memory=what, note=item.weights_note)  # fmt: skip


def _ort_row(item, base, precision, device, threads, repeats, warmup, memory, work, calib_labels):
    try:
        import onnxruntime as ort
    except ImportError:
        return BenchRow(**base, backend="onnxruntime", precision=precision, status="not installed")
    if device.startswith("cuda") and "CUDAExecutionProvider" not in ort.get_available_providers():
        return BenchRow(**base, backend="onnxruntime", precision=precision, status="not installed",
                        note="onnxruntime has no CUDA provider here (onnxruntime-gpu)")  # fmt: skip
    entry = item.files.get(f"{precision}-ort") or item.files.get(precision)
    # int8: ONNX Runtime's own Q/DQ form when the export wrote it, else the TensorRT form
    if entry is None:
        note = item.notes.get(precision, f"no {precision} file")
        return BenchRow(**base, backend="onnxruntime", precision=precision, status="skipped", note=note)
    dtype = entry["input"]["dtype"]
    stats = time_onnx(entry["file"], _input(item, dtype), threads, repeats, warmup, device)
    peak = None
    if memory and device == "cpu":
        peak = peak_memory_mb("onnxruntime", entry["file"], (1, 3, *item.config.input_size), dtype, threads)
    return BenchRow(**base, backend="onnxruntime", precision=precision, status="ok", **stats,
                    peak_memory_mb=peak, memory=RSS_NOTE if peak is not None else "",
                    note=_parity_note(entry))  # fmt: skip


def _file_key(entry: dict) -> str:
    """Key of a manifest entry in a bench item's files: the precision, ``-ort`` for ONNX Runtime's form."""
    return entry["precision"] + ("-ort" if entry.get("runtime") == "onnxruntime" else "")


def _parity_note(entry: dict) -> str:
    parity = entry.get("parity", {})
    if entry["precision"] == "fp32" or "abs_rel" not in parity:
        return ""
    form = f"{Path(entry['path']).name}: " if entry.get("runtime") == "onnxruntime" else ""
    return f"{form}depth vs FP32: Abs Rel {parity['abs_rel']:.3g}, RMSE {parity['rmse']:.3g} m"


def _trt_row(item, base, precision, device, threads, repeats, warmup, memory, work, calib_labels):
    from edgedepth.student.deploy.tensorrt import TensorRTUnavailable, build_engine

    row = {**base, "backend": "tensorrt", "precision": precision}
    try:
        import tensorrt as trt
    except (ImportError, OSError) as error:
        return BenchRow(**row, status="not installed", note=" ".join(str(error).split())[:120])
    if not torch.cuda.is_available():
        return BenchRow(**row, status="not installed", note=f"TensorRT {trt.__version__}, but no CUDA GPU")
    entry = item.files.get(precision) or (item.files.get("fp32") if precision == "fp16" else None)
    # an FP16 engine builds from the FP16 copy, or from the FP32 file with the builder flag
    if entry is None:
        return BenchRow(**row, status="skipped", note=item.notes.get(precision, f"no {precision} file"))
    engine_path = work / f"{Path(entry['file']).stem}.engine"
    try:
        build_engine(entry["file"], engine_path, fp16=precision == "fp16", int8=precision == "int8",
                     calib_labels=calib_labels, log=lambda *_: None,
                     size=tuple(item.config.input_size))  # fmt: skip
    except TensorRTUnavailable as error:
        return BenchRow(**row, status="not installed", note=str(error)[:160])
    stats, peak = time_engine(trt, engine_path, _input(item, entry["input"]["dtype"]), repeats, warmup)
    return BenchRow(**row, status="ok", **stats, peak_memory_mb=peak,
                    memory="engine device_memory_size + I/O buffers", note=_parity_note(entry))  # fmt: skip


__all__ = ["BACKENDS", "BENCH_PRECISIONS", "bench_variants"]
