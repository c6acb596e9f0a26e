"""Backend speed of the exported student: `edgedepth student bench` and `benchmarks/edge_speed.py`.

``bench_variants`` times each variant x backend x precision at batch 1 after warm-up and reports
parameters and multiply-adds (of the PyTorch model, ``count_parameters`` / ``count_macs``), the
median latency, frames per second (1000 / median), the spread (10th-90th percentile latency) and
the peak memory. What the memory figure measures depends on the backend:

* CPU rows (torch, onnxruntime, openvino, litert): the growth of the resident set of a *fresh* Python process, from
  just before the model / session is created to the end of three inference runs
  (``edgedepth.student.deploy.memory_probe``).
* torch on CUDA: ``torch.cuda.max_memory_allocated`` during the timed runs (the caching allocator's
  peak, weights included).
* TensorRT: the engine's activation memory (``device_memory_size``) plus its input/output buffers.

With ``eval_root`` (a held-out rig or KITTI folder), every row that ran also carries the Abs Rel,
RMSE and δ<1.25 of *that file* on *its runtime* against ground truth
(``edgedepth.student.deploy.accuracy``); an INT8 row more than 0.01 Abs Rel worse than the FP32 row
of the same variant and backend is flagged.

A backend that is not installed gets one row per variant and precision with status
"not installed" and the pip line; a combination that cannot run gets status "skipped" with the reason. The rows and
their table are ``edgedepth.student.deploy.speed_result``; the timed runs
``edgedepth.student.deploy.timing``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from edgedepth.common import check_choice, check_choices
from edgedepth.student.deploy.accuracy import INT8_FLAG_ABS_REL, file_accuracy, heldout_set
from edgedepth.student.deploy.bench_rows import ROWS, BenchItem, RowSettings, file_key
from edgedepth.student.deploy.memory_probe import RSS_NOTE
from edgedepth.student.deploy.runtimes import pip_line
from edgedepth.student.deploy.speed_result import BenchResult, BenchRow, wxh
from edgedepth.student.model import (
    VARIANTS,
    ModelConfig,
    count_macs,
    count_parameters,
    load_student,
    read_checkpoint,
)

BACKENDS = tuple(ROWS)
BENCH_PRECISIONS = ("fp32", "fp16", "int8", "bf16")
"""bf16 is execution, not a file: the FP32 OpenVINO IR run with the bf16 inference precision hint."""


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
    eval_root: str | Path | None = None,
    eval_frames: str | Path | None = None,
) -> BenchResult:
    """Time every variant x backend x precision at batch 1; see the module docstring.

    ``source`` is a student checkpoint (its files are exported into a temporary folder for the
    backends asked: ONNX for ``target`` (trt10: uint8 input, the dynamo exporter; trt8: float32
    input, the legacy exporter), OpenVINO IR, LiteRT; INT8 needs ``calib_labels``, else its rows
    are skipped with the reason) or an export folder (its manifest.json; ``size`` is then the
    files' own). ``size`` is (height, width). ``memory`` False skips the fresh-process memory probe
    (about a second per row). ``eval_root`` (and its frame list ``eval_frames``) adds held-out
    accuracy to every row that ran.
    """
    say = print if progress else (lambda *_: None)
    backends, precisions = [b.lower() for b in backends], [p.lower() for p in precisions]
    check_choices(backends, BACKENDS, "backend")
    check_choices(precisions, BENCH_PRECISIONS, "precision")
    variants = [check_choice(v, VARIANTS, "variant", upper=True) for v in variants]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is visible")
    eval_set = heldout_set(eval_root, eval_frames) if eval_root is not None else None  # refused up front
    threads = threads or None
    settings: dict[str, object] = {
        "batch": 1,
        "device": device,
        "threads": (threads or os.cpu_count() or 1) if device == "cpu" else None,
        "repeats": repeats,
        "warmup": warmup,
        "latency": f"median of {repeats} runs after {warmup} warm-up runs; spread p10-p90",
        "memory": RSS_NOTE + (" (CPU rows)" if memory else "; not measured"),
        **_versions(backends),
    }
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="edgedepth-bench-") as tmp:
        work = Path(tmp)
        if source.is_dir():
            items = _from_export_dir(source, variants, precisions)
            settings["source"] = f"export folder {source}"
        else:
            # ONNX Runtime and TensorRT run the ONNX files of ``target``; the others their own
            targets = sorted(
                {target if b in ("onnxruntime", "tensorrt") else b for b in backends} - {"torch"}
            )
            items = _from_checkpoint(source, variants, size, precisions, targets, calib_labels,
                                     calib_frames, work, say)  # fmt: skip
            settings["source"] = f"checkpoint {source} (exported for {', '.join(targets) or 'torch only'})"
        if eval_set is not None:
            settings["eval"] = f"{eval_set.describe()}, {len(eval_set)} frames of {eval_set.root}"
        row_settings = RowSettings(device, threads, repeats, warmup, memory, work, calib_labels)
        rows: list[BenchRow] = []
        for item in items:
            base = _base(item)
            for backend in backends:
                for precision in precisions:
                    say(f"bench {item.name} {backend} {precision}")
                    rows.append(_one_row(item, base, backend, precision, row_settings, eval_set))
    return BenchResult(_flag_int8(rows), settings)


def _one_row(item: BenchItem, base: dict, backend: str, precision: str, s: RowSettings, eval_set) -> BenchRow:
    """The timed row, then (with an evaluation set) the accuracy of the same file on its runtime."""
    try:
        row, make_runner = ROWS[backend](item, base, precision, s)
    except Exception as error:  # one failed row must not hide the others
        return BenchRow(**base, backend=backend, precision=precision, status="failed",
                        note=" ".join(str(error).split())[:200])  # fmt: skip
    if eval_set is None or row.status != "ok":
        return row
    if make_runner is None:
        return dataclasses.replace(row, note=(row.note + "; " if row.note else "") + "accuracy not measured")
    dtype = "uint8"
    entry = next((e for e in item.files.values() if Path(e["file"]).name == row.file), None)
    if entry is not None:
        dtype = entry["input"]["dtype"]
    try:
        figures = file_accuracy(
            make_runner(), eval_set, tuple(item.config.input_size), dtype, row.file or backend
        )
    except ValueError as error:
        return dataclasses.replace(row, status="failed", note=" ".join(str(error).split())[:200])
    return dataclasses.replace(row, abs_rel=figures["abs_rel"], rmse=figures["rmse"],
                               delta1=figures["delta1"], eval_frames=figures["frames"])  # fmt: skip


def _flag_int8(rows: list[BenchRow]) -> list[BenchRow]:
    """Flag INT8 rows whose held-out Abs Rel is more than INT8_FLAG_ABS_REL worse than their FP32's."""
    out = []
    for row in rows:
        fp32 = next(
            (r for r in rows if (r.variant, r.backend, r.precision) == (row.variant, row.backend, "fp32")),
            None,
        )
        if (
            row.precision == "int8"
            and row.abs_rel is not None
            and fp32 is not None
            and fp32.abs_rel is not None
        ):
            if row.abs_rel - fp32.abs_rel > INT8_FLAG_ABS_REL:
                row = dataclasses.replace(
                    row, flag=f"Abs Rel +{row.abs_rel - fp32.abs_rel:.3f} vs FP32 (> {INT8_FLAG_ABS_REL})"
                )
        out.append(row)
    return out


def _versions(backends: Sequence[str]) -> dict[str, str]:
    versions = {"torch": torch.__version__}
    for backend, module in (
        ("onnxruntime", "onnxruntime"),
        ("openvino", "openvino"),
        ("litert", "ai_edge_litert"),
    ):
        if backend in backends:
            try:
                versions[module] = __import__(module).__version__
            except (ImportError, AttributeError):
                pass
    return versions


def _base(item: BenchItem) -> dict:
    config = item.config
    return {
        "variant": item.name,
        "input_size": tuple(config.input_size),
        "output_size": tuple(config.output_size),
        "parameters": count_parameters(item.model),
        "macs": count_macs(item.model, tuple(config.input_size)),
    }


def _from_checkpoint(source, variants, size, precisions, targets, calib_labels, calib_frames, work, say):
    """Load each variant and export its files for ``targets`` into ``work``."""
    read_checkpoint(source)
    items = []
    for name in variants:
        model, config = load_student(source, name)
        items.append(BenchItem(name, config.with_size(tuple(size)), model, {}, {}))
    from edgedepth.student.deploy.targets import RUNTIME_MODULES, export_student, runtime_ready

    needed = {
        t: [m for m in RUNTIME_MODULES.get(t, ()) if m != "nncf" or "int8" in precisions] for t in targets
    }
    missing = {t: m for t, modules in needed.items() for m in modules if not runtime_ready(m)}
    targets = [t for t in targets if t not in missing]  # their rows say "not installed" and the pip line
    if not targets:
        return items

    wanted = ["fp32"] + [p for p in precisions if p in ("fp16", "int8")]
    notes = {f"{t}:{p}": f"not exported: {pip_line(m)}" for t, m in missing.items() for p in precisions}
    if "int8" in wanted and calib_labels is None:
        wanted.remove("int8")
        notes["int8"] = "int8 needs calib_labels (a label folder to calibrate on)"
    if "trt8" in targets and "fp16" in wanted:
        notes["fp16"] = "trt8 exports no FP16 file (a TensorRT builder flag)"
    say(f"exporting {', '.join(variants)} for {', '.join(targets)} ({', '.join(wanted)}) at {wxh(size)}")
    manifest = export_student(source, work / "export", targets, tuple(variants), tuple(size), tuple(wanted),
                              calib_labels=calib_labels, calib_frames=calib_frames, progress=False)  # fmt: skip
    for item in items:
        item.notes.update(notes)
        for entry in manifest.files:
            if entry["variant"] == item.name:
                item.files[file_key(entry)] = {**entry, "file": str(manifest.out_dir / entry["path"])}
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
        files = {file_key(e): {**e, "file": str(folder / e["path"])} for e in mine}
        missing = {p: f"the export folder has no {p} file of {name}" for p in precisions if p not in files}
        items.append(BenchItem(name, config, model, files, missing, note))
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


__all__ = ["BACKENDS", "BENCH_PRECISIONS", "bench_variants"]
