"""Backend speed of the exported student: `edgedepth student bench` and `benchmarks/edge_speed.py`.

``bench_variants`` times each variant x backend x precision at batch 1 after warm-up and reports
parameters and multiply-adds (of the PyTorch model, ``count_parameters`` / ``count_macs``), the
median latency, frames per second (1000 / median), the spread (10th-90th percentile latency) and
the peak memory. What the memory figure measures depends on the backend:

* CPU rows (torch, onnxruntime): the growth of the resident set of a *fresh* Python process, from
  just before the model / session is created to the end of three inference runs (peak resident
  set, Linux ``VmHWM``, minus the resident set before creation; ``getrusage``'s max RSS is not used
  on Linux: it carries the forking parent's peak over). It holds the weights, the runtime's arenas
  and the activations; the interpreter and the imported libraries are excluded.
* torch on CUDA: ``torch.cuda.max_memory_allocated`` during the timed runs (the caching allocator's
  peak, weights included).
* TensorRT: the engine's activation memory (``device_memory_size``) plus its input/output buffers.

A backend that is not installed gets one row per variant and precision with status
"not installed"; a combination that cannot run gets status "skipped" with the reason.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from labelgen.atomic import save_figure, write_text_atomic
from student.checkpoint import load_student, read_checkpoint
from student.config import ModelConfig
from student.model import VARIANTS, count_macs, count_parameters

BACKENDS = ("torch", "onnxruntime", "tensorrt")
BENCH_PRECISIONS = ("fp32", "fp16", "int8")
MEMORY_RUNS = 3  # inference runs of the fresh process that measures peak memory
_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchRow:
    """One model x backend x precision. Timings are None unless ``status`` is "ok"."""

    variant: str
    backend: str
    precision: str
    status: str  # "ok", "not installed", "skipped", "failed"
    input_size: tuple[int, int]  # (height, width)
    output_size: tuple[int, int]
    parameters: int
    macs: int
    latency_ms: float | None = None  # median
    p10_ms: float | None = None
    p90_ms: float | None = None
    fps: float | None = None  # 1000 / median latency, batch 1
    peak_memory_mb: float | None = None
    memory: str = ""  # what peak_memory_mb measures
    note: str = ""

    @property
    def spread_ms(self) -> float | None:
        return None if self.p10_ms is None or self.p90_ms is None else self.p90_ms - self.p10_ms

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "spread_ms": self.spread_ms}


@dataclass
class BenchResult:
    rows: list[BenchRow]
    settings: dict[str, object] = field(default_factory=dict)

    def row(self, variant: str, backend: str, precision: str) -> BenchRow | None:
        return next(
            (r for r in self.rows if (r.variant, r.backend, r.precision) == (variant, backend, precision)),
            None,
        )

    def columns(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((r.backend, r.precision) for r in self.rows))

    def format_table(self) -> str:
        """Table VI's shape (model, output, fps per backend / precision, params, MACs), then one line per
        row with latency, spread, memory and status."""
        cols = self.columns()
        models = list(dict.fromkeys(r.variant for r in self.rows))
        heads = [f"{b} {p} fps" for b, p in cols]
        widths = [max(len(h), 15) + 2 for h in heads]
        header = f"{'model':<10}{'input':>9}{'output':>9}{'params (M)':>12}{'MACs (G)':>10}"
        header += "".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True))
        lines = [header, "-" * len(header)]
        for model in models:
            first = next(r for r in self.rows if r.variant == model)
            line = (
                f"{model:<10}{_wxh(first.input_size):>9}{_wxh(first.output_size):>9}"
                f"{first.parameters / 1e6:>12.3f}{first.macs / 1e9:>10.3f}"
            )
            for (backend, precision), width in zip(cols, widths, strict=True):
                row = self.row(model, backend, precision)
                cell = "-" if row is None else _cell(row)
                line += f"{cell:>{width}}"
            lines.append(line)
        lines += ["", f"{'model':<10}{'backend':<13}{'prec':<6}{'median ms':>10}{'p10-p90 ms':>14}"
                      f"{'fps':>8}{'peak MB':>9}  status"]  # fmt: skip
        for r in self.rows:
            spread = f"{r.p10_ms:.1f}-{r.p90_ms:.1f}" if r.p10_ms is not None else "-"
            status = r.status + (f": {r.note}" if r.note else "")
            lines.append(
                f"{r.variant:<10}{r.backend:<13}{r.precision:<6}{_num(r.latency_ms, 10, 2)}{spread:>14}"
                f"{_num(r.fps, 8, 1)}{_num(r.peak_memory_mb, 9, 1)}  {status}"
            )
        notes = [f"{k}: {v}" for k, v in self.settings.items()]
        return "\n".join(lines + ([""] + notes if notes else []))

    def to_dict(self) -> dict[str, object]:
        return {"settings": self.settings, "rows": [r.as_dict() for r in self.rows]}

    def save_json(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def plot(self, path: str | Path, title: str = "frames per second, batch 1") -> None:
        """Grouped bar chart of fps per model, one bar per backend / precision, written as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = self.columns()
        models = list(dict.fromkeys(r.variant for r in self.rows))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(models) + 2), 4))
        width = 0.8 / max(len(cols), 1)
        for k, (backend, precision) in enumerate(cols):
            picked = [self.row(m, backend, precision) for m in models]
            values = [r.fps if r is not None and r.fps is not None else 0.0 for r in picked]
            missing = all(r is None or r.status != "ok" for r in picked)
            label = f"{backend} {precision}" + (" (not run)" if missing else "")
            bars = ax.bar([i + k * width for i in range(len(models))], values, width, label=label)
            for bar, r in zip(bars, picked, strict=True):
                if r is not None and r.fps is not None:
                    ax.annotate(
                        f"{r.fps:.0f}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        ax.set_xticks([i + width * (len(cols) - 1) / 2 for i in range(len(models))], models)
        ax.set_ylabel("frames per second (1000 / median ms)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, path, dpi=120)
        plt.close(fig)


def _wxh(size: Sequence[int]) -> str:
    return f"{size[1]}x{size[0]}"


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def _cell(row: BenchRow) -> str:
    if row.status == "ok" and row.fps is not None:
        return f"{row.fps:.1f} ({row.latency_ms:.1f} ms)"
    return row.status


def latency_stats(times_ms: Sequence[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile (ms) and fps = 1000 / median."""
    median = statistics.median(times_ms)
    p10, p90 = (float(v) for v in np.percentile(times_ms, [10, 90]))
    return {"latency_ms": median, "p10_ms": p10, "p90_ms": p90, "fps": 1000.0 / median}


def time_runs(
    fn: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], object] | None = None
) -> list[float]:
    """Wall time (ms) of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def ort_session(path: str | Path, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime session as deployed: all graph optimisations, ``threads`` intra-op threads
    (default: every core), sequential execution; CUDA provider first when ``device`` is cuda."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def time_onnx(
    path: str | Path, image: np.ndarray, threads: int | None = None, repeats: int = 50, warmup: int = 10,
    device: str = "cpu",
) -> dict[str, float]:  # fmt: skip
    """``latency_stats`` of one ONNX file on ``image`` (its full input array)."""
    sess = ort_session(path, threads, device)
    name = sess.get_inputs()[0].name
    return latency_stats(time_runs(lambda: sess.run(None, {name: image}), repeats, warmup))


_MEMORY_SCRIPT = r"""
import json, resource, sys
import numpy as np
spec = json.loads(sys.argv[1])
def status_mb(key):
    # VmRSS: resident now; VmHWM: peak resident of this process image (reset by exec, unlike
    # getrusage's ru_maxrss, which Linux carries over from the parent that forked us)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)
def rss_mb():
    return status_mb("VmRSS")
def peak_mb():
    try:
        return status_mb("VmHWM")
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
image = np.zeros(spec["shape"], dtype=spec["dtype"])
if spec["kind"] == "onnxruntime":
    import os
    import onnxruntime as ort
    before = rss_mb()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = spec["threads"] or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sess = ort.InferenceSession(spec["path"], options, providers=["CPUExecutionProvider"])
    run = lambda: sess.run(None, {sess.get_inputs()[0].name: image})
else:
    import torch
    from student.config import ModelConfig
    from student.export import ExportModel
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    data = torch.load(spec["path"], weights_only=True)
    x = torch.from_numpy(image)
    before = rss_mb()
    config = ModelConfig.from_dict(data["config"])
    model = config.build()
    model.load_state_dict(data["state"])
    wrapper = ExportModel(model, config).eval()
    def run():
        with torch.inference_mode():
            wrapper(x)
for _ in range(spec["runs"]):
    run()
print(json.dumps({"peak_mb": max(0.0, peak_mb() - before)}))
"""


def peak_memory_mb(
    kind: str, path: str | Path, shape: Sequence[int], dtype: str, threads: int | None = None
) -> float:
    """Peak RSS growth (MiB) of a fresh process that creates the model / session and runs it
    ``MEMORY_RUNS`` times; ``kind`` is "onnxruntime" (``path`` an ONNX file) or "torch" (``path`` a
    file of ``{"config": ModelConfig dict, "state": state dict}``)."""
    spec = {"kind": kind, "path": str(path), "shape": list(shape), "dtype": dtype, "threads": threads}
    spec["runs"] = MEMORY_RUNS
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, json.dumps(spec)], capture_output=True, text=True, env=env,
        timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe failed: {last}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


RSS_NOTE = "peak RSS growth of a fresh process: model/session creation + 3 runs"


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
    for name, given, known in (("backend", backends, BACKENDS), ("precision", precisions, BENCH_PRECISIONS)):
        bad = [v for v in given if v not in known]
        if bad:
            raise ValueError(f"unknown {name} {bad[0]!r}; choose from {', '.join(known)}")
    variants = [v.upper() for v in variants]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant {bad[0]!r}; choose one of {', '.join(VARIANTS)}")
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
    from student.export import export_onnx

    wanted = ["fp32"] + [p for p in precisions if p in ("fp16", "int8")]
    notes = {}
    if "int8" in wanted and calib_labels is None:
        wanted.remove("int8")
        notes["int8"] = "int8 needs calib_labels (a label folder to calibrate on)"
    say(f"exporting {', '.join(variants)} ({', '.join(wanted)}) at {_wxh(size)}")
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
    from student.export import ExportModel

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
    from student.tensorrt import TensorRTUnavailable, build_engine

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
    stats, peak = _time_engine(trt, engine_path, _input(item, entry["input"]["dtype"]), repeats, warmup)
    return BenchRow(**row, status="ok", **stats, peak_memory_mb=peak,
                    memory="engine device_memory_size + I/O buffers", note=_parity_note(entry))  # fmt: skip


def _time_engine(trt, engine_path: Path, image: np.ndarray, repeats: int, warmup: int):
    """Median latency of a serialized engine: the host input copied in, outputs left on the GPU.
    TensorRT 8.5+ uses the named-tensor API (execute_async_v3), older 8.x the bindings (execute_v2)."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    host = torch.from_numpy(image).pin_memory()
    named = hasattr(engine, "num_io_tensors") and hasattr(context, "execute_async_v3")
    if named:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        for name in names:
            if is_input[name] and -1 in tuple(engine.get_tensor_shape(name)):
                context.set_input_shape(name, tuple(image.shape))
        shape_of, dtype_of = context.get_tensor_shape, engine.get_tensor_dtype
    else:
        names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        is_input = {n: engine.binding_is_input(i) for i, n in enumerate(names)}
        for i, name in enumerate(names):
            if is_input[name] and -1 in tuple(engine.get_binding_shape(i)):
                context.set_binding_shape(i, tuple(image.shape))
        shape_of = lambda n: context.get_binding_shape(names.index(n))  # noqa: E731
        dtype_of = lambda n: engine.get_binding_dtype(names.index(n))  # noqa: E731
    buffers, bound = {}, 0
    for name in names:
        dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(dtype_of(name)))).dtype
        buffers[name] = torch.empty(tuple(shape_of(name)), dtype=dtype, device="cuda")
        bound += buffers[name].numel() * buffers[name].element_size()
        if named:
            context.set_tensor_address(name, buffers[name].data_ptr())
    first_input = next(n for n in names if is_input[n])
    pointers = [buffers[n].data_ptr() for n in names]

    def run():
        with torch.cuda.stream(stream):
            buffers[first_input].copy_(host, non_blocking=True)
            if named:
                context.execute_async_v3(stream.cuda_stream)
        if not named:
            stream.synchronize()
            context.execute_v2(pointers)
        stream.synchronize()

    stats = latency_stats(time_runs(run, repeats, warmup))
    activation = int(getattr(engine, "device_memory_size", 0) or 0)
    return stats, (activation + bound) / 2**20


__all__ = [
    "BACKENDS",
    "BenchResult",
    "BenchRow",
    "bench_variants",
    "latency_stats",
    "ort_session",
    "peak_memory_mb",
    "time_onnx",
    "time_runs",
]
