"""Running stages on dask.distributed: values, failures, resume, reports, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from edgedepth.labelgen.kitti import find_frames, read_calibration, read_image, read_velodyne
from edgedepth.labelgen.lidar import project_lidar
from edgedepth.labelgen.plan import load_plan, plan_shards, write_plan
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.report import format_reports
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.shards import check_shard, shard_path
from edgedepth.labelgen.teachers.sgbm import SgbmConfig, sgbm_disparity
from edgedepth.labelgen.teachers.stereo import disparity_to_depth

FAST = {"sgbm": {"num_disparities": 32}}
VOLATILE_ATTRS = {"created", "host", "device"}


def shard_contents(path) -> dict[str, object]:
    """Everything in a shard except when and where it was written."""
    with h5py.File(path, "r") as f:
        out = {k: v for k, v in f.attrs.items() if k not in VOLATILE_ATTRS}
        out.update({name: f[name][()] for name in f})
    return out


def assert_same_shards(dir_a, dir_b, stages) -> None:
    plan = load_plan(dir_a)
    for stage in stages:
        for shard in plan.shards:
            a = shard_contents(shard_path(dir_a, stage, shard.name))
            b = shard_contents(shard_path(dir_b, stage, shard.name))
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{stage}/{shard.name}/{key}")


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A synthetic tree planned into shards of 4 and labelled once by every stage (2 workers)."""
    from tests.kitti_tree import make_kitti_tree

    root = tmp_path_factory.mktemp("run")
    tree = make_kitti_tree(
        root / "kitti",
        {"2011_09_26_drive_0001_sync": 5, "2011_09_26_drive_0002_sync": 3, "2011_09_28_drive_0001_sync": 3},
        {"2011_09_26": (64, 160), "2011_09_28": (62, 156)},
    )
    labels = root / "labels"
    write_plan(plan_shards(tree, shard_size=4), labels)
    reports = run_stages(labels, ["images", "lidar", "sgbm"], workers=2, stage_options=FAST, progress=False)
    return tree, labels, reports


def test_every_shard_is_complete_and_reported(planned):
    _, labels, reports = planned
    plan = load_plan(labels)
    assert [(r.stage, r.shards_complete, r.frames_done, r.frames_failed) for r in reports] == [
        (s, 4, 11, []) for s in ("images", "lidar", "sgbm")
    ]
    saved = json.loads((labels / "sgbm" / "report.json").read_text())
    assert saved["frames_done"] == 11 and saved["shards_total"] == len(plan.shards) == 4
    assert saved["workers"] == 2 and saved["frames_per_second"] > 0
    table = format_reports(reports)
    assert table.splitlines()[2].split()[:5] == ["images", "4/4", "11", "0", "0"]


def test_stored_values_equal_a_direct_computation(planned):
    tree, labels, _ = planned
    reader = LabelReader(labels, ["images", "lidar", "sgbm"])
    for i in (0, 10):
        item = reader[i]
        frame = find_frames(tree)[i]
        assert item["frame_id"] == frame.frame_id
        calib = read_calibration(tree / frame.date)
        left, right = read_image(frame.image_path(tree, 2)), read_image(frame.image_path(tree, 3))
        np.testing.assert_array_equal(item["images/image"], left)
        lidar = project_lidar(read_velodyne(frame.velodyne_path(tree)), calib)
        np.testing.assert_array_equal(item["lidar/depth"], lidar)
        disparity, valid = sgbm_disparity(left, right, SgbmConfig(num_disparities=32))
        depth = disparity_to_depth(disparity, calib.focal, calib.baseline, valid)
        np.testing.assert_array_equal(item["sgbm/valid"], valid)
        np.testing.assert_allclose(item["sgbm/disparity"], disparity, atol=1 / 512)
        np.testing.assert_allclose(item["sgbm/depth"], depth, rtol=1e-3)
        assert valid.mean() > 0.5 and np.median(depth[valid]) == pytest.approx(721.5377 * 0.54 / 16, rel=0.02)
    with h5py.File(shard_path(labels, "sgbm", "shard-00003"), "r") as f:
        assert f.attrs["teacher"] == "opencv-sgbm" and f.attrs["stage"] == "sgbm"
        assert json.loads(f.attrs["settings"])["num_disparities"] == 32
        assert json.loads(f.attrs["calibration"])["date"] == "2011_09_28"
        assert f.attrs["plan_id"] == load_plan(labels).plan_id and f.attrs["tool_version"]


def test_rerun_skips_complete_shards_and_redoes_the_rest(planned):
    _, labels, _ = planned
    mtimes = {p: p.stat().st_mtime_ns for p in sorted(labels.glob("*/shard-*.h5"))}
    (labels / "lidar" / "shard-00001.h5").unlink()
    broken = labels / "sgbm" / "shard-00002.h5"
    broken.write_bytes(broken.read_bytes()[:500])
    reports = run_stages(labels, ["images", "lidar", "sgbm"], workers=1, stage_options=FAST, progress=False)
    assert [r.frames_processed for r in reports] == [0, 1, 3]
    changed = {p.relative_to(labels).as_posix() for p in mtimes if p.stat().st_mtime_ns != mtimes[p]}
    assert changed == {"lidar/shard-00001.h5", "sgbm/shard-00002.h5"}  # only the deleted and the broken one
    assert all(r.shards_complete == 4 for r in reports)


def test_overwrite_redoes_everything(planned):
    _, labels, _ = planned
    before = {p: p.stat().st_mtime_ns for p in labels.glob("lidar/shard-*.h5")}
    (report,) = run_stages(labels, ["lidar"], workers=1, overwrite=True, progress=False)
    assert report.frames_processed == 11
    assert all(p.stat().st_mtime_ns != t for p, t in before.items())


def test_bad_frames_are_recorded_and_the_rest_goes_on(kitti_tree, tmp_path):
    frames = find_frames(kitti_tree)
    png = frames[1].image_path(kitti_tree, 2)
    png.write_bytes(png.read_bytes()[:200])
    scan = frames[6].velodyne_path(kitti_tree)
    scan.write_bytes(scan.read_bytes()[:-3])
    (kitti_tree / "2011_09_28" / "calib_cam_to_cam.txt").unlink()
    write_plan(plan_shards(kitti_tree, shard_size=4), tmp_path)
    images, lidar = run_stages(tmp_path, ["images", "lidar"], workers=1, progress=False)
    assert images.frames_done == 7 and lidar.frames_done == 7
    reasons = dict(images.frames_failed)
    assert reasons[frames[1].frame_id].endswith(
        "0000000001.png: not a readable image (corrupt or truncated?)"
    )
    assert all("calib_cam_to_cam.txt: calibration file not found" in reasons[f.frame_id] for f in frames[8:])
    assert dict(lidar.frames_failed)[frames[6].frame_id].endswith(
        "bytes is not a multiple of 16 (truncated scan?)"
    )
    saved = json.loads((tmp_path / "images" / "report.json").read_text())
    assert len(saved["frames_failed"]) == 4 and saved["shards_complete"] == 4  # failed frames, whole shards
    status = check_shard(
        shard_path(tmp_path, "images", "shard-00000"),
        load_plan(tmp_path).plan_id,
        load_plan(tmp_path).shards[0].frame_ids,
    )
    assert status.complete and [f for f, _ in status.failures] == [frames[1].frame_id]


def test_bad_input_errors(kitti_tree, tmp_path, monkeypatch):
    write_plan(plan_shards(kitti_tree), tmp_path)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' requested but no CUDA device is available"):
        run_stages(tmp_path, ["lidar"], device="cuda", progress=False)
    with pytest.raises(ValueError, match="unknown stage 'psmnt'; available: images, lidar, sgbm"):
        run_stages(tmp_path, ["psmnt"], progress=False)
    with pytest.raises(ValueError, match="stage sgbm: bad option"):
        run_stages(tmp_path, ["sgbm"], stage_options={"sgbm": {"disparities": 3}}, progress=False)
    with pytest.raises(ValueError, match=r"tcp://127\.0\.0\.1:1: scheduler unreachable"):
        run_stages(tmp_path, ["lidar"], scheduler="tcp://127.0.0.1:1", progress=False)
    with pytest.raises(FileNotFoundError, match="no plan"):
        run_stages(tmp_path / "elsewhere", ["lidar"], progress=False)


def test_real_kitti_frame_end_to_end(kitti_sample, tmp_path):
    """plan + run on the real frame: SGBM depth agrees with KITTI's annotated depth (Abs Rel < 0.08)."""
    import cv2

    write_plan(plan_shards(kitti_sample), tmp_path)
    reports = run_stages(tmp_path, ["images", "lidar", "sgbm"], workers=1, progress=False)
    assert all(r.frames_done == 1 and not r.frames_failed for r in reports)
    item = LabelReader(tmp_path, ["images", "lidar", "sgbm"])[0]
    assert item["frame_id"] == "2011_09_26/2011_09_26_drive_0001_sync/0000000005"
    annotated = kitti_sample / "data_depth_annotated/train/2011_09_26_drive_0001_sync/proj_depth"
    gt = cv2.imread(str(annotated / "groundtruth/image_02/0000000005.png"), cv2.IMREAD_UNCHANGED) / 256.0
    depth = item["sgbm/depth"]
    both = (gt > 0) & (depth > 0)
    abs_rel = float(np.mean(np.abs(depth[both] - gt[both]) / gt[both]))
    assert abs_rel < 0.08 and both.sum() / (gt > 0).sum() > 0.9  # measured: 0.030 on 97.9 % of gt pixels
    raw = cv2.imread(str(annotated / "velodyne_raw/image_02/0000000005.png"), cv2.IMREAD_UNCHANGED) / 256.0
    lidar = item["lidar/depth"]
    same = (raw > 0) & (lidar > 0)
    assert np.median(np.abs(lidar[same] - raw[same]) / raw[same]) < 0.01


def test_a_stage_model_is_loaded_once_per_worker_process(planned, monkeypatch):
    """process_shard (the dask task) reuses the model its process already loaded."""
    from edgedepth.labelgen import run, stages

    loads = []

    class Counting(stages.LidarStage):
        name = "counting"

        def load(self, device):
            loads.append(device)
            return object()

    monkeypatch.setitem(stages.STAGES, "counting", Counting)
    run._cached_model.cache_clear()
    _, labels, _ = planned
    results = [run.process_shard(str(labels), "counting", i, {}) for i in range(3)]
    assert loads == ["cpu"] and [r["frames"] for r in results] == [4, 1, 3]
    run._cached_model.cache_clear()


def test_a_noop_rerun_keeps_the_record_and_appends_its_own(kitti_tree, tmp_path):
    write_plan(plan_shards(kitti_tree, shard_size=4), tmp_path)
    (first,) = run_stages(tmp_path, ["lidar"], workers=1, progress=False)
    (again,) = run_stages(tmp_path, ["lidar"], workers=1, progress=False)
    assert first.frames_processed == 11 and again.frames_processed == 0 and again.workers == 0
    saved = json.loads((tmp_path / "lidar" / "report.json").read_text())
    assert [h["frames_processed"] for h in saved["history"]] == [11, 0]
    assert saved["history"][0]["frames_per_second"] == pytest.approx(first.frames_per_second)
    assert saved["history"][0]["finished"] == first.finished


def test_batch_size_is_capped_at_the_shard_size_and_workers_at_the_work(kitti_tree, tmp_path, capfd):
    write_plan(plan_shards(kitti_tree, shard_size=64), tmp_path)  # 3 shards (one a drive)
    (report,) = run_stages(tmp_path, ["lidar"], workers=16, batch_size=10**9, progress=True)
    assert report.frames_done == 11 and report.workers == min(3, os.cpu_count() or 1)
    assert "using" in capfd.readouterr().err  # the cap is said, not silent


def test_the_driver_of_a_stage_without_a_model_never_imports_torch(kitti_tree, tmp_path):
    """``labelgen run --stages images,lidar`` and its no-op rerun: no torch in the driver (the
    teachers are imported in the workers that run them)."""
    write_plan(plan_shards(kitti_tree, shard_size=4), tmp_path)
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom edgedepth import cli\n"
        f"for _ in range(2):\n"
        f"    r = CliRunner().invoke(cli.main, ['labelgen', 'run', {str(tmp_path)!r}, '--stages', "
        "'images,lidar', '--workers', '1', '--no-progress'])\n"
        "    assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
