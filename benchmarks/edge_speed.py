"""Edge speed, side by side in one run: the student variants vs a FastDepth-class baseline on ONNX Runtime.

At 480x320, batch 1, ONNX Runtime CPU (all graph optimisations, ``--threads`` intra-op threads, default
every core), one process: the FastDepth-class network (``benchmarks/fastdepth.py``, random weights,
legacy exporter, opset 13, float32 input), the student L / M / S / XS FP32 and INT8 (a random-weight
checkpoint made here, batch-norm statistics from train-mode passes over scikit-image photos so the
depth varies; exported for trt10 with ``edgedepth.student.deploy.export.export_onnx``; INT8 calibrated on a small
label folder of those photos). Latency is the median of ``--repeats`` runs after ``--warmup``;
the three targets are then re-checked on interleaved rounds (each model timed in turn, round after
round, after a pause and one untimed run at each switch, since ONNX Runtime's idle intra-op threads
spin for a while after a run) so that drift of the shared CPU hits every model alike. Targets:

* L at least 2x the frames per second of the FastDepth-class model;
* XS at least 3x L;
* L INT8 faster than L FP32, with its depth within the INT8 bound (Abs Rel <= 0.05, RMSE <= 1 m vs FP32).
  The INT8 file timed is the export's ONNX Runtime form (``*_int8_ort.onnx``); its TensorRT form
  (``*_int8.onnx``) is timed beside it for the record (docs/export.md says why they differ).

Run: `.venv/bin/python benchmarks/edge_speed.py` (a few minutes on 2 cores); writes
benchmarks/out/edge_speed.png and benchmarks/out/edge_speed.json. ``--profile`` adds ONNX Runtime's
per-operator time of L (FP32, INT8) and the baseline.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
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
from edgedepth.student.deploy import onnx_checks as checks
from edgedepth.student.deploy.export import export_onnx
from edgedepth.student.deploy.memory_probe import RSS_NOTE, peak_memory_mb
from edgedepth.student.deploy.speed import bench_variants
from edgedepth.student.deploy.speed_result import BenchRow
from edgedepth.student.deploy.timing import ort_session, time_onnx, time_runs
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


@click.command()
@click.option("--size", default="480x320", show_default=True, help="Input WxH (multiples of 32).")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--repeats", default=50, show_default=True, help="Timed runs per row.")
@click.option("--warmup", default=10, show_default=True, help="Untimed runs before timing.")
@click.option("--rounds", default=10, show_default=True, help="Interleaved rounds for the target checks.")
@click.option("--calib-frames", default=9, show_default=True, help="INT8 calibration frames (photos).")
@click.option(
    "--out", "out_dir", default="benchmarks/out", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--profile",
    is_flag=True,
    help="Also print ONNX Runtime's per-operator time of L FP32, L INT8 and FastDepth.",
)
def main(size, threads, repeats, warmup, rounds, calib_frames, out_dir, profile) -> None:
    width, height = (int(v) for v in size.lower().split("x"))
    hw = (height, width)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-speed-") as tmp:
        work = Path(tmp)
        click.echo("making a random-weight checkpoint and a photo label folder ...")
        ckpt = make_checkpoint(work / "student.pt", hw)
        labels = make_label_folder(work, hw)
        click.echo("exporting the student (trt10: uint8 input) and the FastDepth-class baseline ...")
        manifest = export_onnx(ckpt, work / "onnx", ("L", "M", "S", "XS"), hw, "trt10", ("fp32", "int8"),
                               calib_labels=labels, calib_frames=calib_frames, progress=False)  # fmt: skip
        fast_path = export_fastdepth(work / "fastdepth.onnx", hw)

        click.echo(f"timing at {width}x{height}, batch 1, ONNX Runtime CPU ...")
        fast = build_fastdepth()
        fast_input = np.random.default_rng(0).uniform(0, 1, (1, 3, *hw)).astype(np.float32)
        stats = time_onnx(fast_path, fast_input, threads, repeats, warmup)
        fast_row = BenchRow(
            "FastDepth", "onnxruntime", "fp32", "ok", hw, hw, count_parameters(fast), count_macs(fast, hw),
            **stats, peak_memory_mb=peak_memory_mb("onnxruntime", fast_path, fast_input.shape, "float32", threads),
            memory=RSS_NOTE, note="FastDepth-class (MobileNet v1 + NNConv5, skip add), random weights",
        )  # fmt: skip
        result = bench_variants(work / "onnx", ("L", "M", "S", "XS"), hw, ("onnxruntime",), ("fp32", "int8"),
                                threads=threads, repeats=repeats, warmup=warmup)  # fmt: skip
        result.rows.insert(0, fast_row)
        result.settings["baseline"] = "FastDepth-class: float32 input; the student's graphs take uint8"

        files = {"FastDepth": (str(fast_path), fast_input)}
        picks = (("L fp32", "L", "fp32", "any"), ("XS fp32", "XS", "fp32", "any"),
                 ("L int8", "L", "int8", "onnxruntime"), ("L int8 TensorRT form", "L", "int8", "tensorrt"))  # fmt: skip
        for key, name, precision, runtime in picks:
            entry = next(
                e
                for e in manifest.files
                if (e["variant"], e["precision"], e["runtime"]) == (name, precision, runtime)
            )
            image = np.random.default_rng(0).integers(0, 256, (1, 3, *hw), dtype=np.uint8)
            files[key] = (str(manifest.out_dir / entry["path"]), image)
        click.echo(f"re-timing {', '.join(files)} in {rounds} interleaved rounds ...")
        inter = interleaved(files, threads, rounds, max(repeats // rounds, 3), warmup)
        int8 = next(
            e
            for e in manifest.files
            if (e["variant"], e["precision"], e["runtime"]) == ("L", "int8", "onnxruntime")
        )["parity"]

        if profile:
            for name in ("FastDepth", "L fp32", "L int8", "L int8 TensorRT form"):
                shares = op_profile(*files[name], threads)
                click.echo(f"\n{name}: share of node time by operator")
                click.echo("  " + ", ".join(f"{op} {share:.0%}" for op, share in shares))

    fps = {name: 1000.0 / ms for name, ms in inter.items()}
    int8_ok = int8["abs_rel"] <= checks.INT8_ABS_REL_MAX and int8["rmse"] <= checks.INT8_RMSE_MAX
    targets = [
        ("L fps >= 2x FastDepth-class", fps["L fp32"] / fps["FastDepth"], 2.0),
        ("XS fps >= 3x L", fps["XS fp32"] / fps["L fp32"], 3.0),
        ("L INT8 faster than FP32", fps["L int8"] / fps["L fp32"], 1.0),
    ]
    result.settings["interleaved_fps"] = {name: round(v, 2) for name, v in fps.items()}
    lines = []
    for text, ratio, need in targets:
        ok = ratio >= need if need > 1.0 else ratio > need
        lines.append(
            f"{text:<30} ratio {ratio:5.2f} (needs {'>=' if need > 1 else '>'} {need:g})  {verdict(ok)}"
        )
        result.settings.setdefault("targets", {})[text] = {"ratio": round(ratio, 3), "pass": ok}
    depth = f"Abs Rel {int8['abs_rel']:.4f} (<= {checks.INT8_ABS_REL_MAX}), RMSE {int8['rmse']:.3f} m "
    depth += f"(<= {checks.INT8_RMSE_MAX})"
    lines.append(f"{'L INT8 depth vs FP32':<30} {depth}  {verdict(int8_ok)}")
    result.settings.setdefault("targets", {})["L INT8 depth within bound"] = {**int8, "pass": int8_ok}

    click.echo("\n" + result.format_table())
    click.echo(f"\ntargets (interleaved medians, fps: {', '.join(f'{k} {v:.1f}' for k, v in fps.items())})")
    click.echo("\n".join(lines))
    result.save_json(out / "edge_speed.json")
    threads_text = result.settings["threads"]
    result.plot(
        out / "edge_speed.png", title=f"ONNX Runtime CPU, {threads_text} threads, {width}x{height}, batch 1"
    )
    click.echo(f"\nwrote {out / 'edge_speed.json'} and {out / 'edge_speed.png'}")


if __name__ == "__main__":
    main()
