"""Label-generation throughput: frames per second per stage, pipeline vs a bare loop.

For each stage the bare loop only reads the frame's inputs and runs the teacher (no HDF5, no
compression, no dask); the pipeline runs `edgedepth.labelgen.run.run_stages` on the local cluster it starts,
beforehand (its start-up is not counted; scheduling, writing and compression are). Target for
sgbm: the pipeline with 1 worker reaches at least 80 % of the bare loop's frames per second.

Frames are copies of the real KITTI sample frame ($EDGEDEPTH_KITTI_SAMPLE, or ../shared/...) when
it is there, else synthetic KITTI-size frames. Run: `.venv/bin/python benchmarks/labelgen_throughput.py`.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from edgedepth.labelgen.client import dask_client
from edgedepth.labelgen.kitti import find_frames, read_calibration, read_image, read_velodyne
from edgedepth.labelgen.lidar import project_lidar
from edgedepth.labelgen.plan import plan_shards, write_plan
from edgedepth.labelgen.run import run_stages

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.kitti_tree
from edgedepth.labelgen.teachers.sgbm import SgbmConfig, sgbm_disparity
from edgedepth.labelgen.teachers.stereo import disparity_to_depth
from tests.kitti_tree import make_kitti_tree  # noqa: E402

SAMPLE = Path(
    os.environ.get(
        "EDGEDEPTH_KITTI_SAMPLE", Path(__file__).resolve().parents[2] / "shared/data/kitti_raw_sample"
    )
)
DRIVE = "2011_09_26_drive_0001_sync"


def build_tree(root: Path, frames: int) -> str:
    """A one-drive tree of ``frames`` frames: the real sample copied, or synthetic frames."""
    if not (SAMPLE / "2011_09_26" / DRIVE).is_dir():
        make_kitti_tree(root, {DRIVE: frames}, {"2011_09_26": (375, 1242)})
        return "synthetic KITTI-size frames"
    date = root / "2011_09_26"
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt"):
        (date).mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "2011_09_26" / name, date / name)
    for sub, suffix in (("image_02", ".png"), ("image_03", ".png"), ("velodyne_points", ".bin")):
        source = SAMPLE / "2011_09_26" / DRIVE / sub / "data" / f"0000000005{suffix}"
        target = date / DRIVE / sub / "data"
        target.mkdir(parents=True, exist_ok=True)
        for i in range(frames):
            shutil.copy(source, target / f"{i:010d}{suffix}")
    return "copies of the real KITTI sample frame"


def bare_loop(stage: str, root: Path) -> float:
    """Frames per second of reading the inputs and running the teacher, nothing else."""
    frames = find_frames(root)
    calib = read_calibration(root / frames[0].date)
    start = time.perf_counter()
    for frame in frames:
        if stage == "images":
            read_image(frame.image_path(root, 2))
        elif stage == "lidar":
            project_lidar(read_velodyne(frame.velodyne_path(root)), calib)
        else:
            disparity, valid = sgbm_disparity(
                read_image(frame.image_path(root, 2)), read_image(frame.image_path(root, 3)), SgbmConfig()
            )
            disparity_to_depth(disparity, calib.focal, calib.baseline, valid)
    return len(frames) / (time.perf_counter() - start)


def pipeline(stage: str, root: Path, labels: Path, workers: int) -> float:
    """Frames per second of `run_stages` on an already running local cluster of ``workers``."""
    shutil.rmtree(labels / stage, ignore_errors=True)
    with dask_client(None, workers, "cpu") as client:  # the cluster `labelgen run` would start
        client.wait_for_workers(workers)
        client.run(importlib.import_module, "edgedepth.labelgen.run")  # a long run pays the imports once
        start = time.perf_counter()
        (report,) = run_stages(labels, [stage], scheduler=client.scheduler.address, progress=False)
        seconds = time.perf_counter() - start
    return report.frames_done / seconds


@click.command()
@click.option("--frames", default=32, show_default=True, help="Frames in the benchmark tree.")
@click.option("--shard-size", default=8, show_default=True)
@click.option("--stages", default="images,lidar,sgbm", show_default=True)
def main(frames: int, shard_size: int, stages: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, labels = Path(tmp) / "kitti", Path(tmp) / "labels"
        source = build_tree(root, frames)
        write_plan(plan_shards(root, shard_size=shard_size), labels)
        click.echo(
            f"labelgen throughput, {frames} frames ({source}), shards of {shard_size}, {os.cpu_count()} cores\n"
        )
        header = f"{'stage':<8}{'bare loop':>12}{'1 worker':>12}{'2 workers':>12}{'1 worker / bare':>18}"
        click.echo(header + "\n" + "-" * len(header))
        for stage in stages.split(","):
            bare = bare_loop(stage, root)
            one, two = pipeline(stage, root, labels, 1), pipeline(stage, root, labels, 2)
            click.echo(f"{stage:<8}{bare:>12.2f}{one:>12.2f}{two:>12.2f}{one / bare:>17.0%}")
        click.echo("\nframes per second; the pipeline includes scheduling, HDF5 writing and gzip compression")


if __name__ == "__main__":
    main()
