"""Speed at accuracy, in one run: every student file on every CPU runtime vs a FastDepth-class baseline.

At 480x320, batch 1, all cores (``--threads``), one process: the student variants exported for every
runtime installed here (ONNX Runtime: the trt10 ONNX files; OpenVINO: IR, latency hint; LiteRT:
.tflite) in FP32, FP16 and INT8 (OpenVINO also runs its FP32 IR in BF16 where the CPU has it), and
the FastDepth-class network (``benchmarks/fastdepth.py``, random weights, legacy exporter, opset 13,
float32 input) on ONNX Runtime and OpenVINO, so each model is judged on its own best runtime.

``--checkpoint`` is the student to ship (default: a random-weight checkpoint made here, with
batch-norm statistics from scikit-image photos); ``--calib-labels`` the label folder INT8 is
calibrated on (default: a folder of those photos); ``--eval-root`` / ``--eval-frames`` the held-out
frames with ground truth (rig or KITTI layout): every row then carries the Abs Rel and RMSE of that
exact file on its runtime. The target ratios are re-measured on interleaved rounds (each file timed
in turn, round after round, after a pause and one untimed run at each switch, since idle runtime
threads spin for a while after a run) so that drift of the shared CPU hits every file alike.

Targets (issue 21):

* the fastest L file whose held-out Abs Rel is within +0.005 of L FP32 runs at >= 2.5x the
  FastDepth-class model on that model's best FP32 runtime;
* L INT8 on its best runtime >= 1.8x L FP32 on the same runtime;
* every file within its parity bound (the export refuses any other), and an INT8 file more than
  0.01 Abs Rel worse than FP32 flagged.

Run: `.venv/bin/python benchmarks/edge_speed.py [--checkpoint CKPT --eval-root HELDOUT ...]`;
writes benchmarks/out/edge_speed.{json,md,png} and edge_speed_pareto.png. ``--profile`` adds the
slowest nodes of L FP32 and INT8 on ONNX Runtime and OpenVINO, and of the baseline.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import click
import cv2
import numpy as np
import torch
from fastdepth import build_fastdepth
from skimage import data

from edgedepth.labelgen.plan import load_plan, plan_shards, write_plan
from edgedepth.labelgen.run import process_shard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.kitti_tree
from edgedepth.student.deploy.memory_probe import RSS_NOTE, peak_memory_mb
from edgedepth.student.deploy.speed import bench_variants
from edgedepth.student.deploy.speed_result import BenchRow, plot_pareto
from edgedepth.student.deploy.targets import export_student, runtime_ready
from edgedepth.student.deploy.timing import latency_stats, ort_session, time_runs
from edgedepth.student.model.checkpoint import save_checkpoint
from edgedepth.student.model.config import ModelConfig
from edgedepth.student.model.network import count_macs, count_parameters
from tests.kitti_tree import make_kitti_tree  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "cat")
DRIVE = "2011_09_26_drive_0001_sync"
SETTLE_S = 0.1


def photos() -> list[np.ndarray]:
    """RGB uint8 photos bundled with scikit-image (nothing is downloaded)."""
    images = [getattr(data, name)() for name in PHOTOS]
    left, right = data.stereo_motorcycle()[:2]
    return [np.ascontiguousarray(im[..., :3]) for im in images + [left, right]]


def make_checkpoint(path: Path, size: tuple[int, int]) -> Path:
    """Random student L weights; batch-norm statistics from train-mode passes over the photos."""
    torch.manual_seed(0)
    cfg = ModelConfig(variant="L", seg=True, input_size=size)
    model = cfg.build().train()
    mean, std = np.array(cfg.mean, np.float32), np.array(cfg.std, np.float32)
    with torch.no_grad():
        for image in photos() * 2:
            half = (max(32, size[1] // 64 * 32), max(32, size[0] // 64 * 32))  # (w, h), multiples of 32
            x = cv2.resize(image, half, interpolation=cv2.INTER_AREA)
            x = (x.astype(np.float32) / 255 - mean) / std
            model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    save_checkpoint(
        path, {"model_config": cfg.to_dict(), "model": model.eval().state_dict(), "epoch": 0, "step": 0}
    )
    return path


def make_label_folder(root: Path, size: tuple[int, int]) -> Path:
    """A label folder whose images stage holds the photos (KITTI layout, labelgen's own images stage)."""
    images = photos()
    tree = make_kitti_tree(root / "kitti", {DRIVE: len(images)}, {DRIVE[:10]: size})
    folder = tree / DRIVE[:10] / DRIVE
    for index, image in enumerate(images):
        resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        for cam in (2, 3):
            cv2.imwrite(str(folder / f"image_0{cam}" / "data" / f"{index:010d}.png"), resized[..., ::-1])
    labels = root / "labels"
    write_plan(plan_shards(tree), labels)
    for index in range(len(load_plan(labels).shards)):
        process_shard(str(labels), "images", index, {})
    return labels


def export_legacy(model: torch.nn.Module, path: Path, size: tuple[int, int]) -> Path:
    """``model`` as ONNX by the legacy exporter at opset 13, float32 input ``image`` (1, 3, H, W)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(1, 3, *size),), str(path), dynamo=False, opset_version=13,
            input_names=["image"], output_names=["depth"], do_constant_folding=True,
        )  # fmt: skip
    return path


def export_fastdepth(path: Path, size: tuple[int, int]) -> Path:
    return export_legacy(build_fastdepth(), path, size)


def interleaved(files: dict[str, tuple[str, np.ndarray]], threads, rounds: int, per_round: int, warmup: int):
    """Median latency (ms) of each file over ``rounds`` rounds, every model timed ``per_round`` times a round."""
    sessions = {name: ort_session(path, threads) for name, (path, _) in files.items()}
    times: dict[str, list[float]] = defaultdict(list)
    for name, sess in sessions.items():
        image = files[name][1]
        time_runs(lambda s=sess, x=image: s.run(None, {s.get_inputs()[0].name: x}), 0, warmup)
    for _ in range(rounds):
        for name, sess in sessions.items():
            image = files[name][1]
            run = lambda s=sess, x=image: s.run(None, {s.get_inputs()[0].name: x})  # noqa: E731
            time.sleep(SETTLE_S)  # the previous session's intra-op threads spin on after its last run
            times[name] += time_runs(run, per_round, 1)
    return {name: statistics.median(t) for name, t in times.items()}


def op_profile(
    path: str, image: np.ndarray, threads, runs: int = 20, top: int = 8
) -> list[tuple[str, float]]:
    """ONNX Runtime's profiler: (operator type, share of node time) of the ``top`` types."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, {sess.get_inputs()[0].name: image})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event.get("args", {}).get("op_name", "?")] += float(event.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    return sorted(((op, t / total) for op, t in per_op.items()), key=lambda kv: -kv[1])[:top]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def interleaved_calls(calls: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int):
    """Median latency (ms) of each zero-argument call over ``rounds`` rounds, each timed ``per_round``
    times a round, after a pause and one untimed run at every switch."""
    times: dict[str, list[float]] = defaultdict(list)
    for call in calls.values():
        time_runs(call, 0, warmup)
    for _ in range(rounds):
        for name, call in calls.items():
            time.sleep(SETTLE_S)
            times[name] += time_runs(call, per_round, 1)
    return {name: statistics.median(t) for name, t in times.items()}


def cpu_flags() -> str:
    """The CPU's model name and the SIMD features that decide INT8 / BF16 speed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?"
    )
    flags = set(
        next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    )
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return f"{name}; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)


def runner_for(backend: str, precision: str, path: str, threads) -> Callable[[np.ndarray], object]:
    """A runner of one file as the bench row ran it."""
    if backend == "onnxruntime":
        sess = ort_session(path, threads)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})
    if backend == "openvino":
        from edgedepth.student.deploy.openvino_backend import openvino_runner

        return openvino_runner(Path(path), "bf16" if precision == "bf16" else "f32", threads)
    from edgedepth.student.deploy.litert_backend import litert_runner

    return litert_runner(Path(path), threads)


def fastdepth_rows(path: Path, hw, threads, repeats, warmup, backends) -> tuple[list[BenchRow], dict]:
    """The baseline's FP32 rows on ONNX Runtime and OpenVINO, and a runner for each."""
    fast = build_fastdepth()
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, *hw)).astype(np.float32)
    base = dict(variant="FastDepth", precision="fp32", input_size=hw, output_size=hw,
                parameters=count_parameters(fast), macs=count_macs(fast, hw))  # fmt: skip
    note = "FastDepth-class (MobileNet v1 + NNConv5, skip add), random weights: no accuracy"
    rows, runners = [], {}
    for backend in [b for b in ("onnxruntime", "openvino") if b in backends]:
        if backend == "openvino":  # its IR, FP32 weights, converted from the same ONNX file
            import openvino as ov

            path = path.with_suffix(".xml")
            ov.save_model(ov.convert_model(str(path.with_suffix(".onnx"))), str(path), compress_to_fp16=False)
        run = runner_for(backend, "fp32", str(path), threads)
        stats = latency_stats(time_runs(lambda r=run: r(image), repeats, warmup))
        peak = peak_memory_mb(
            backend, path, image.shape, "float32", threads, "f32" if backend == "openvino" else None
        )
        rows.append(BenchRow(**base, backend=backend, status="ok", **stats, peak_memory_mb=peak, memory=RSS_NOTE,
                             note=note, file=path.name))  # fmt: skip
        runners[backend] = lambda r=run: r(image)
    return rows, runners


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The student to ship (default: random weights made here).")  # fmt: skip
@click.option("--calib-labels", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="INT8 calibration label folder (default: a folder of photos made here).")  # fmt: skip
@click.option("--eval-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Held-out frames with ground truth (rig or KITTI layout).")  # fmt: skip
@click.option("--eval-frames", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--variants", default="L,M,S,XS", show_default=True)
@click.option("--backends", default="onnxruntime,openvino,litert", show_default=True)
@click.option("--precisions", default="fp32,fp16,int8,bf16", show_default=True)
@click.option("--size", default="480x320", show_default=True, help="Input WxH (multiples of 32).")
@click.option("--threads", type=int, default=None, help="Runtime threads (default: all cores).")
@click.option("--repeats", default=50, show_default=True, help="Timed runs per row.")
@click.option("--warmup", default=10, show_default=True, help="Untimed runs before timing.")
@click.option("--rounds", default=10, show_default=True, help="Interleaved rounds for the target checks.")
@click.option("--calib-frames", default=64, show_default=True, help="INT8 calibration frames.")
@click.option(
    "--out", "out_dir", default="benchmarks/out", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--profile", is_flag=True, help="Print the slowest nodes of L and the baseline.")
def main(checkpoint, calib_labels, eval_root, eval_frames, variants, backends, precisions, size, threads,
         repeats, warmup, rounds, calib_frames, out_dir, profile) -> None:  # fmt: skip
    width, height = (int(v) for v in size.lower().split("x"))
    hw = (height, width)
    variants = [v.strip().upper() for v in variants.split(",") if v.strip()]
    backends = [b for b in (v.strip() for v in backends.split(",")) if b and (b == "onnxruntime" or runtime_ready(
        {"openvino": "openvino", "litert": "ai_edge_litert"}[b]))]  # fmt: skip
    precisions = [p.strip() for p in precisions.split(",") if p.strip()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = sorted({"trt10" if b == "onnxruntime" else b for b in backends})
    with tempfile.TemporaryDirectory(prefix="edge-speed-") as tmp:
        work = Path(tmp)
        if checkpoint is None:
            click.echo("making a random-weight checkpoint ...")
            checkpoint = make_checkpoint(work / "student.pt", hw)
        if calib_labels is None:
            click.echo("making a photo label folder for INT8 calibration ...")
            calib_labels = make_label_folder(work, hw)
        click.echo(f"exporting {', '.join(variants)} for {', '.join(targets)} ...")
        manifest = export_student(checkpoint, work / "export", targets, variants, hw,
                                  [p for p in precisions if p != "bf16"] or ["fp32"], calib_labels=calib_labels,
                                  calib_frames=calib_frames, progress=False)  # fmt: skip
        fast_path = export_fastdepth(work / "fastdepth.onnx", hw)
        click.echo(f"timing at {width}x{height}, batch 1, {', '.join(backends)} ...")
        fast_rows, fast_calls = fastdepth_rows(fast_path, hw, threads, repeats, warmup, backends)
        result = bench_variants(work / "export", variants, hw, backends, precisions, threads=threads,
                                repeats=repeats, warmup=warmup, eval_root=eval_root, eval_frames=eval_frames,
                                progress=True)  # fmt: skip
        result.rows[:0] = fast_rows
        result.settings["cpu"] = cpu_flags()
        result.settings["checkpoint"] = str(checkpoint)
        result.settings["parity"] = f"all {len(manifest.files)} exported files within their parity bounds"

        l_rows = [r for r in result.rows if r.variant == "L" and r.status == "ok" and r.file]
        calls = {f"FastDepth {b}": c for b, c in fast_calls.items()}
        image_of = {"uint8": np.random.default_rng(0).integers(0, 256, (1, 3, *hw), dtype=np.uint8)}
        for row in l_rows:
            entry = next(e for e in manifest.files if e["path"] == row.file)
            x = image_of.setdefault(
                entry["input"]["dtype"], image_of["uint8"].astype(entry["input"]["dtype"])
            )
            run = runner_for(row.backend, row.precision, str(manifest.out_dir / row.file), threads)
            calls[f"L {row.backend} {row.precision}"] = lambda r=run, x=x: r(x)
        click.echo(f"re-timing {len(calls)} files in {rounds} interleaved rounds ...")
        inter = interleaved_calls(calls, rounds, max(repeats // rounds, 3), warmup)
        if profile:
            print_profiles(manifest, fast_path, hw, threads, backends)

    fps = {name: 1000.0 / ms for name, ms in inter.items()}
    result.settings["interleaved_fps"] = {name: round(v, 2) for name, v in fps.items()}
    lines = judge(result, fps)
    report = result.format_markdown() + "\n## Targets (interleaved fps)\n\n" + "\n".join(lines) + "\n"
    click.echo("\n" + result.format_table() + "\n\ntargets:\n" + "\n".join(lines))
    result.save_json(out / "edge_speed.json")
    (out / "edge_speed.md").write_text(report)
    machine = f"{result.settings['threads']} threads, {width}x{height}, batch 1"
    result.plot(out / "edge_speed.png", title=f"CPU runtimes, {machine}")
    if result.has_accuracy():
        plot_pareto(result, out / "edge_speed_pareto.png", title=f"held-out Abs Rel against fps ({machine})")
    click.echo(
        f"\nwrote {out / 'edge_speed.json'}, .md, .png"
        + (" and _pareto.png" if result.has_accuracy() else "")
    )


def judge(result, fps: dict[str, float]) -> list[str]:
    """The issue's targets on the interleaved figures, one line each."""
    lines = []
    fast = {k: v for k, v in fps.items() if k.startswith("FastDepth")}
    best_fast_name = max(fast, key=fast.get) if fast else None
    l_fp32 = [r for r in result.rows if r.variant == "L" and r.precision == "fp32" and r.abs_rel is not None]
    reference = min((r.abs_rel for r in l_fp32), default=None)
    shipped = {}
    for r in result.rows:
        key = f"L {r.backend} {r.precision}"
        if (
            r.variant == "L"
            and key in fps
            and (reference is None or r.abs_rel is None or r.abs_rel <= reference + 0.005)
        ):
            shipped[key] = fps[key]
    if best_fast_name and shipped:
        best = max(shipped, key=shipped.get)
        ratio = shipped[best] / fast[best_fast_name]
        lines.append(f"- fastest L file within +0.005 Abs Rel of L FP32 ({best}, {shipped[best]:.1f} fps) vs "
                     f"{best_fast_name} ({fast[best_fast_name]:.1f} fps): {ratio:.2f}x (needs >= 2.5) "
                     f"**{verdict(ratio >= 2.5)}**")  # fmt: skip
    gains = {}
    for backend in ("onnxruntime", "openvino", "litert"):
        a, b = fps.get(f"L {backend} int8"), fps.get(f"L {backend} fp32")
        if a and b:
            gains[backend] = a / b
    if gains:
        best = max(gains, key=gains.get)
        lines.append(f"- L INT8 vs L FP32 on the same runtime, best {best}: {gains[best]:.2f}x (needs >= 1.8) "
                     f"**{verdict(gains[best] >= 1.8)}**; all: " + ", ".join(f"{k} {v:.2f}x" for k, v in gains.items()))  # fmt: skip
    flagged = [f"{r.variant} {r.backend} {r.precision}" for r in result.rows if r.flag]
    lines.append(f"- INT8 files more than 0.01 Abs Rel worse than FP32: {', '.join(flagged) or 'none'}")
    lines.append(f"- parity: {result.settings.get('parity')}")
    return lines


def print_profiles(manifest, fast_path: Path, hw, threads, backends) -> None:
    """The slowest nodes of L FP32 / INT8 (ONNX Runtime and OpenVINO) and the baseline."""
    image = np.random.default_rng(0).integers(0, 256, (1, 3, *hw), dtype=np.uint8)
    fast_image = image.astype(np.float32)
    for entry in manifest.files:
        if entry["variant"] != "L" or entry["precision"] not in ("fp32", "int8"):
            continue
        path = str(manifest.out_dir / entry["path"])
        if entry["target"] == "trt10" and entry.get("runtime") != "tensorrt" and "onnxruntime" in backends:
            shares = op_profile(path, image.astype(entry["input"]["dtype"]), threads)
            click.echo(f"\n{entry['path']} (ONNX Runtime): " + ", ".join(f"{op} {s:.0%}" for op, s in shares))
        if entry["target"] == "openvino":
            from edgedepth.student.deploy.openvino_backend import profile_openvino

            nodes = profile_openvino(Path(path), image, top=8)
            click.echo(f"\n{entry['path']} (OpenVINO, slowest nodes):")
            click.echo("\n".join(f"  {node}" for node in nodes))
    shares = op_profile(str(fast_path), fast_image, threads)
    click.echo("\nFastDepth (ONNX Runtime): " + ", ".join(f"{op} {s:.0%}" for op, s in shares))


if __name__ == "__main__":
    main()
