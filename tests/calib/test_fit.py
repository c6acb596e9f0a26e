"""Fitting from a label folder: hold-out by drive, loop vs dask, corrected shards, errors, real frame."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from edgedepth.calib.apply import write_corrected
from edgedepth.calib.fit import accumulate_shard, fit_from_labels, format_lut, split_drives
from edgedepth.calib.lut import FitSettings, apply_lut, load_lut
from edgedepth.calib.plot import plot_lut
from edgedepth.labelgen.plan import load_plan, plan_shards, write_plan
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.shards import check_shard, shard_path
from tests.kitti_tree import make_kitti_tree

FAST = {"sgbm": {"num_disparities": 32}}
DRIVES = {"2011_09_26_drive_0001_sync": 3, "2011_09_26_drive_0002_sync": 2, "2011_09_28_drive_0001_sync": 2}
SMALL = {"min_count": 20, "n_bootstrap": 100, "progress": False}


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    """Three drives (two image sizes) in shards of 2, lidar + sgbm; one frame's right image is broken."""
    root = tmp_path_factory.mktemp("calib")
    tree = make_kitti_tree(root / "kitti", DRIVES, {"2011_09_26": (64, 160), "2011_09_28": (62, 156)})
    broken = tree / "2011_09_26" / "2011_09_26_drive_0001_sync" / "image_03" / "data" / "0000000001.png"
    broken.write_bytes(b"not a png")
    out = root / "labels"
    write_plan(plan_shards(tree, shard_size=2), out)
    run_stages(out, ["lidar", "sgbm"], workers=1, stage_options=FAST, progress=False)
    return out


def copy_labels(labels: Path, tmp_path: Path) -> Path:
    target = tmp_path / "labels"
    shutil.copytree(labels, target)
    return target


def pixel_pairs_by_drive(labels: Path, edges: np.ndarray) -> dict[str, np.ndarray]:
    """Per drive, the per-bin count of pixels with a LiDAR depth and a teacher depth in range."""
    reader = LabelReader(labels, ["lidar", "sgbm"])
    counts: dict[str, np.ndarray] = {}
    for i in range(len(reader)):
        item = reader[i]
        drive = item["frame_id"].split("/")[1]
        teacher, lidar = item["sgbm/depth"], item["lidar/depth"]
        both = (lidar > 0) & (teacher > 0)
        hist = np.histogram(teacher[both], bins=edges)[0]
        counts[drive] = counts.get(drive, 0) + hist
    return counts


def test_whole_drives_are_held_out_and_their_frames_are_not_fitted(labels):
    lut = fit_from_labels(labels, holdout=0.3, **SMALL)
    plan = load_plan(labels)
    by_hash = sorted(DRIVES, key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    held = []  # independently: the shortest hash-ordered prefix holding >= 30 % of the 7 frames
    while sum(DRIVES[d] for d in held) < 0.3 * 7:
        held.append(by_hash[len(held)])
    assert lut.heldout["drives"] == sorted(held) and 0 < len(held) < 3
    assert sorted(lut.source["drives"] + lut.heldout["drives"]) == sorted(DRIVES)
    fit_shards = [s.name for s in plan.shards if s.drive not in held]
    assert lut.source["shards"] == fit_shards
    counts = pixel_pairs_by_drive(labels, lut.edges)
    np.testing.assert_array_equal(lut.count, sum(counts[d] for d in DRIVES if d not in held))
    assert lut.heldout["residual_count"] == sum(counts[d] for d in held).tolist()
    assert lut.heldout["pixels"] == sum(counts[d].sum() for d in held)
    broken = 0 if "2011_09_26_drive_0001_sync" in held else 1  # its sgbm row failed: not fitted
    assert lut.source["frames"] == sum(DRIVES[d] for d in DRIVES if d not in held) - broken
    assert lut.heldout["rmse_after"] < lut.heldout["rmse_before"]


def test_source_records_the_plan_teacher_and_shards(labels):
    lut = fit_from_labels(labels, holdout=0, **SMALL)
    plan = load_plan(labels)
    src = lut.source
    assert src["plan_id"] == plan.plan_id and src["labels_dir"] == str(labels.resolve())
    assert src["teacher_stage"] == "sgbm" and src["teacher"] == ["opencv-sgbm"]
    assert src["checkpoint_sha256"] == [""]  # SGBM has no weights
    assert src["shards"] == [s.name for s in plan.shards] and lut.heldout is None
    assert src["frames"] == 6  # 7 planned, one failed in sgbm
    assert "teacher sgbm (opencv-sgbm)" in format_lut(lut) and "held-out: none" in format_lut(lut)


def test_split_is_deterministic_and_refuses_to_hold_out_everything(labels):
    plan = load_plan(labels)
    assert split_drives(plan, 0.3) == split_drives(plan, 0.3)
    assert split_drives(plan, 0)[1:] == ([], [])
    with pytest.raises(ValueError, match="leaves no drive to fit on.*--holdout 0") as err:
        fit_from_labels(labels, holdout=0.95, **SMALL)
    assert "\n" not in str(err.value)


def test_dask_gives_the_same_table_as_the_loop(labels, monkeypatch):
    from distributed import Client, LocalCluster

    monkeypatch.setattr("edgedepth.calib.fit.IN_FLIGHT", 2)  # exercise the submission window on 3..4 shards
    options = {"holdout": 0.3, "stat": "median", "reservoir_size": 64, **SMALL}
    loop = fit_from_labels(labels, **options)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        dask = fit_from_labels(labels, client=client, **options)
    assert loop.count.sum() > 10 * 64  # reservoirs really subsample and merge
    assert dask.to_dict() == loop.to_dict() and dask.sha256 == loop.sha256


def test_accumulate_shard_is_a_plain_function_of_small_arguments(labels):
    settings = FitSettings(min_count=20)
    acc = accumulate_shard(str(labels), "sgbm", 1, settings.to_dict())
    again = accumulate_shard(labels, "sgbm", 1, settings)
    np.testing.assert_array_equal(acc.reservoir, again.reservoir)
    assert acc.frames == 1 and acc.counts.sum() > 0  # shard 1 = frame 2 of drive 0001


def test_write_corrected_shards_hold_the_applied_table_and_resume(labels, tmp_path):
    labels = copy_labels(labels, tmp_path)
    lut = fit_from_labels(labels, holdout=0, **SMALL)
    lut_path = lut.save(tmp_path / "lut.json")
    summary = write_corrected(labels, lut, "sgbm", lut_path=lut_path)
    plan = load_plan(labels)
    assert summary["stage"] == "sgbm_corrected" and summary["lut_sha256"] == lut.sha256
    assert (summary["shards"], summary["written"], summary["skipped"]) == (4, 4, 0)
    assert summary["frames"] == 7 and summary["frames_failed"] == 1
    for shard in plan.shards:
        path = shard_path(labels, "sgbm_corrected", shard.name)
        assert check_shard(path, plan.plan_id, shard.frame_ids).complete
        with h5py.File(path, "r") as out, h5py.File(shard_path(labels, "sgbm", shard.name), "r") as src:
            assert out.attrs["stage"] == "sgbm_corrected" and out.attrs["lut_sha256"] == lut.sha256
            assert out.attrs["teacher"] == src.attrs["teacher"] == "opencv-sgbm"
            assert out.attrs["checkpoint_sha256"] == src.attrs["checkpoint_sha256"]
            assert out.attrs["calibration"] == src.attrs["calibration"]
            assert str(lut_path) in out.attrs["settings"] and out.attrs["shard_name"] == shard.name
            assert out["depth"].dtype == np.float16 and out["depth"].attrs["units"] == "m"
            np.testing.assert_array_equal(out["ok"][()], src["ok"][()])
            np.testing.assert_array_equal(out["failure"][()], src["failure"][()])
            np.testing.assert_array_equal(out["depth"][()], apply_lut(src["depth"][()], lut))
    item = LabelReader(labels, ["sgbm", "sgbm_corrected"])[0]
    assert np.all((item["sgbm_corrected/depth"] > 0) == (item["sgbm/depth"] > 0))
    mtimes = [shard_path(labels, "sgbm_corrected", s.name).stat().st_mtime_ns for s in plan.shards]
    again = write_corrected(labels, lut_path, "sgbm")  # a path works too; same table: nothing to do
    assert (again["written"], again["skipped"]) == (0, 4)
    assert mtimes == [shard_path(labels, "sgbm_corrected", s.name).stat().st_mtime_ns for s in plan.shards]
    other = fit_from_labels(labels, holdout=0, stat="median", **SMALL)
    assert write_corrected(labels, other, "sgbm")["written"] == 4  # another table: rewritten


def test_write_corrected_refuses_a_table_of_another_teacher(labels):
    lut = fit_from_labels(labels, holdout=0, **SMALL)
    foreign = type(lut)(**{**lut.__dict__, "source": {**lut.source, "teacher_stage": "psmnet"}})
    with pytest.raises(ValueError, match="fitted on teacher stage 'psmnet'"):
        write_corrected(labels, foreign, "sgbm")


def test_missing_and_incomplete_stages_are_one_line_errors(labels, tmp_path):
    copy = copy_labels(labels, tmp_path)
    with pytest.raises(ValueError, match=r"teacher stage 'psmnet' absent \(0/4") as err:
        fit_from_labels(copy, "psmnet", **SMALL)
    assert str(copy / "psmnet") in str(err.value) and "\n" not in str(err.value)
    shard_path(copy, "lidar", "shard-00002").unlink()
    with pytest.raises(ValueError, match=r"LiDAR stage 'lidar' incomplete \(3/4.*shard-00002.h5 missing"):
        fit_from_labels(copy, **SMALL)
    shutil.rmtree(copy / "lidar")
    with pytest.raises(ValueError, match=r"lidar: LiDAR stage 'lidar' absent"):
        fit_from_labels(copy, **SMALL)
    with pytest.raises(FileNotFoundError, match="plan.json"):
        fit_from_labels(tmp_path / "nowhere", **SMALL)


def test_shards_of_another_plan_are_refused(labels, tmp_path):
    copy = copy_labels(labels, tmp_path)
    with h5py.File(shard_path(copy, "sgbm", "shard-00001"), "r+") as f:
        f.attrs["plan_id"] = "0" * 64
    with pytest.raises(ValueError, match="shard-00001.h5: shards of different plans") as err:
        fit_from_labels(copy, **SMALL)
    assert "\n" not in str(err.value)


def test_no_overlap_and_empty_bin_ranges_are_one_line_errors(labels):
    with pytest.raises(ValueError, match="no overlapping pixels") as err:
        fit_from_labels(labels, holdout=0, max_depth=10, **SMALL)  # synthetic SGBM sees 24 m
    assert str(labels) in str(err.value) and "\n" not in str(err.value)
    for bad in ({"max_depth": 1}, {"bin_width": 0}, {"bin_width": 200}):
        with pytest.raises(ValueError, match="empty bin range"):
            fit_from_labels(labels, **bad, **SMALL)


def test_real_kitti_frame_fit_report_and_plot(kitti_sample, tmp_path):
    labels = tmp_path / "labels"
    write_plan(plan_shards(kitti_sample), labels)
    run_stages(labels, ["lidar", "sgbm"], workers=1, progress=False)
    lut = fit_from_labels(labels, holdout=0, min_count=20, progress=False)
    populated = ~lut.filled
    assert populated.sum() >= 15 and lut.source["frames"] == 1
    assert np.all(np.abs(lut.value[populated]) < 10)  # SGBM vs LiDAR on one frame: metres, not tens
    assert np.all(lut.ci_low[populated] <= lut.value[populated])
    assert np.all(lut.value[populated] <= lut.ci_high[populated])
    report = format_lut(lut)
    assert f"populated bins {populated.sum()}/79" in report
    png = plot_lut(lut, tmp_path / "lut.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < png.stat().st_size < 2_000_000
    assert load_lut(lut.save(tmp_path / "lut.json")).sha256 == lut.sha256
