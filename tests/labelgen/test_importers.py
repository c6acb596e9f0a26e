"""The importers on the real sets: Middlebury 2006 (third size) and KITTI raw -> rig trees that the
plan and the stages read; their values checked against computations from the source files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedepth.labelgen.importers import import_kitti_depth, import_middlebury
from edgedepth.labelgen.kitti import find_frames, read_calibration
from edgedepth.labelgen.layout import lidar_depth, read_frame_list
from edgedepth.labelgen.plan import plan_shards, write_plan
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.rig import RigFrame, read_rig_calibration
from edgedepth.labelgen.rig_arrays import read_depth_png, read_lidar_points
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.stages import LidarStage

FOCAL_THIRD, BASELINE = 3740.0 / 3, 0.16
SCENES = ("Aloe", "Baby1")  # one held-out scene, one training scene


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def middlebury(real_data, tmp_path_factory):
    """Aloe and Baby1 imported, plus a copy of Baby1 beside a dmin.txt of 240 px (full size)."""
    tmp = tmp_path_factory.mktemp("middlebury")
    src = real_data / "middlebury2006"
    out = tmp / "rig"
    report = import_middlebury(src, out, scenes=list(SCENES), progress=False)
    own = tmp / "own" / "Baby1dmin"
    shutil.copytree(src / "Baby1", own)
    (own / "dmin.txt").write_text("240\n")
    import_middlebury(own.parent, tmp / "own_rig", progress=False)
    return src, out, report, tmp / "own_rig"


def test_middlebury_calibration_and_files(middlebury):
    src, out, report, _ = middlebury
    assert report.sequences == SCENES and report.frames == 2
    assert report.files == {"left": 2, "right": 2, "depth_gt": 2, "lidar": 2}
    calib = read_rig_calibration(out / "Aloe")
    height, width = cv2.imread(str(src / "Aloe" / "view1.png")).shape[:2]
    assert (calib.fx, calib.fy, calib.baseline) == (
        pytest.approx(FOCAL_THIRD),
        pytest.approx(FOCAL_THIRD),
        0.16,
    )
    assert (calib.cx, calib.cy, calib.image_size) == ((width - 1) / 2, (height - 1) / 2, (height, width))
    assert calib.doffs == pytest.approx(200 / 3)
    near, far = FOCAL_THIRD * BASELINE / (85 + 200 / 3), FOCAL_THIRD * BASELINE / (1 / 3 + 200 / 3)
    assert (round(near, 2), round(far, 2)) == (1.32, 2.98) and calib.depth_range == (1.3, 3.0)
    data = json.loads((out / "Aloe" / "calib.json").read_text())
    assert "nominal" in data["source"] and "not surveyed metric depth" in data["depth_note"]
    assert "64 beams" in data["lidar_simulation"]
    frame = RigFrame("Aloe", "view1")
    assert frame.image_path(out, 2).read_bytes() == (src / "Aloe" / "view1.png").read_bytes()
    assert frame.image_path(out, 3).read_bytes() == (src / "Aloe" / "view5.png").read_bytes()


def test_middlebury_depth_is_the_disparity_transform(middlebury):
    src, out, _, own = middlebury
    for root, scene, source, dmin in (
        (out, "Baby1", src / "Baby1", 200.0),
        (own, "Baby1dmin", src / "Baby1", 240.0),
    ):
        code = cv2.imread(str(source / "disp1.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
        expected = np.zeros(code.shape)
        expected[code > 0] = FOCAL_THIRD * BASELINE / (code[code > 0] / 3 + dmin / 3)
        truth = read_depth_png(RigFrame(scene, "view1").depth_gt_path(root))
        np.testing.assert_array_equal(truth > 0, code > 0)
        assert np.abs(truth - expected).max() <= 1 / 512 + 1e-6
        assert read_rig_calibration(root / scene).doffs == pytest.approx(dmin / 3)
    data = json.loads((own / "Baby1dmin" / "calib.json").read_text())
    assert "240 px at full size (dmin.txt)" in data["source"] and "nominal" not in data["depth_note"]
    assert data["depth_range_m"] == [1.2, 2.5]  # f B / (85 + 80) = 1.21 m, f B / (1/3 + 80) = 2.48 m


def test_simulated_lidar_lies_on_the_ground_truth(middlebury):
    _, out, _, _ = middlebury
    frame, calib = RigFrame("Baby1", "view1"), read_rig_calibration(out / "Baby1")
    points = read_lidar_points(frame.lidar_points_path(out))
    depth = lidar_depth(frame, calib, out)
    truth = read_depth_png(frame.depth_gt_path(out))
    hit = depth > 0
    assert 4000 < len(points) == hit.sum() and (truth[hit] > 0).all()
    assert np.abs(depth[hit] - truth[hit]).max() <= 1 / 512 + 1e-5  # the PNG's rounding only
    # the scanner's x axis is the camera's z, and it sits 6 cm behind the camera: camera z = x - 0.06 m
    np.testing.assert_allclose(np.sort(depth[hit]), np.sort(points[:, 0] - 0.06), atol=1e-5)


def test_middlebury_split_lists_and_reimport_gives_the_same_bytes(middlebury):
    src, out, report, _ = middlebury
    assert report.splits == ("splits/train.txt", "splits/heldout.txt", "splits/fit.txt")  # no val scene here
    assert [f.frame_id for f in read_frame_list(out / "splits" / "heldout.txt", "rig")] == ["Aloe/view1"]
    assert [f.frame_id for f in read_frame_list(out / "splits" / "train.txt", "rig")] == ["Baby1/view1"]
    assert [f.frame_id for f in read_frame_list(out / "splits" / "fit.txt", "rig")] == ["Baby1/view1"]
    before = tree_digest(out)
    import_middlebury(src, out, scenes=list(SCENES), progress=False)
    assert tree_digest(out) == before


def test_the_validation_scenes_are_every_fifth_training_scene():
    from edgedepth.labelgen.importers.middlebury import FIT, HELDOUT, TRAINING, VALIDATION

    assert VALIDATION == ("Bowling2", "Lampshade2", "Rocks1") and len(FIT) == 12
    assert set(FIT) | set(VALIDATION) == set(TRAINING) and not set(TRAINING) & set(HELDOUT)


def test_sgbm_teacher_reproduces_middlebury_depth_through_plan_and_run(middlebury, tmp_path):
    """SGBM on left/right of a training scene + doffs gives the ground-truth depth: the doffs sign
    and scale are right. Measured on Baby1: median relative error 0.0017, coverage 0.88."""
    _, out, _, _ = middlebury
    labels = tmp_path / "labels"
    write_plan(plan_shards(out, drives=["Baby1"]), labels)
    (report,) = run_stages(labels, ["sgbm"], workers=1, progress=False)
    assert report.frames_done == 1 and not report.frames_failed
    item = LabelReader(labels, ["sgbm"])[0]
    truth = read_depth_png(RigFrame("Baby1", "view1").depth_gt_path(out))
    both = (truth > 0) & item["sgbm/valid"]
    relative = np.abs(item["sgbm/depth"][both] - truth[both]) / truth[both]
    coverage, median = both.sum() / (truth > 0).sum(), float(np.median(relative))
    print(f"SGBM vs Baby1 depth_gt: median relative error {median:.4f}, coverage {coverage:.3f}")
    assert coverage > 0.75 and median < 0.01
    without_doffs = FOCAL_THIRD * BASELINE / item["sgbm/disparity"][both]  # what ignoring doffs would give
    assert np.median(np.abs(without_doffs - truth[both]) / truth[both]) > 0.5


def test_middlebury_errors_name_the_folder(real_data, tmp_path):
    with pytest.raises(ValueError, match=r"kitti_tiny: not a Middlebury 2005/2006 folder"):
        import_middlebury(real_data / "kitti_tiny", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match=r"nowhere: Middlebury folder not found"):
        import_middlebury(tmp_path / "nowhere", tmp_path / "out", progress=False)
    scene = tmp_path / "src" / "Lamp"
    scene.mkdir(parents=True)
    shutil.copy(real_data / "middlebury2006" / "Aloe" / "view1.png", scene / "view1.png")
    with pytest.raises(ValueError, match=r"src/Lamp: not a Middlebury scene \(no view5\.png, disp1\.png\)"):
        import_middlebury(scene.parent, tmp_path / "out", progress=False)
    for name in ("view5.png", "disp1.png"):
        shutil.copy(real_data / "middlebury2006" / "Aloe" / name, scene / name)
    (scene / "dmin.txt").write_text("dmin: many")
    with pytest.raises(ValueError, match=r"Lamp/dmin\.txt: expected one number"):
        import_middlebury(scene.parent, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def kitti_sample_rig(kitti_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("kitti_rig") / "rig"
    report = import_kitti_depth(kitti_sample, out, progress=False)
    return out, report


def test_kitti_import_calibration_and_files(kitti_sample, kitti_sample_rig):
    out, report = kitti_sample_rig
    drive = "2011_09_26_drive_0001_sync"
    assert report.sequences == (drive,) and report.files == {"left": 1, "right": 1, "lidar": 1, "depth_gt": 1}
    kitti = read_calibration(kitti_sample / "2011_09_26")
    calib = read_rig_calibration(out / drive)
    assert (calib.fx, calib.cx, calib.cy) == (721.5377, 609.5593, 172.854)
    assert calib.baseline == pytest.approx(kitti.baseline) and calib.doffs == 0.0
    assert calib.depth_range == (1.0, 80.0) and calib.image_size == kitti.image_size
    np.testing.assert_allclose(calib.projection(2), kitti.projection(2), rtol=1e-12, atol=1e-9)
    frame = RigFrame(drive, "0000000005")
    annotated = (
        kitti_sample / "data_depth_annotated/train" / drive / "proj_depth/groundtruth/image_02/0000000005.png"
    )
    assert frame.depth_gt_path(out).read_bytes() == annotated.read_bytes()
    scan = np.fromfile(
        kitti_sample / "2011_09_26" / drive / "velodyne_points/data/0000000005.bin", np.float32
    )
    np.testing.assert_array_equal(read_lidar_points(frame.lidar_points_path(out)), scan.reshape(-1, 4))


def test_kitti_import_lidar_stage_equals_the_kitti_layout(kitti_sample, kitti_sample_rig, tmp_path):
    """The rig tree through plan + run gives the LiDAR depth of the KITTI-layout stage on the same frame."""
    out, _ = kitti_sample_rig
    labels = tmp_path / "labels"
    write_plan(plan_shards(out, layout="rig"), labels)
    (report,) = run_stages(labels, ["lidar"], workers=1, progress=False)
    assert report.frames_done == 1
    ours = LabelReader(labels, ["lidar"])[0]["lidar/depth"]
    frame = find_frames(kitti_sample)[0]
    reference = LidarStage().process(frame, read_calibration(kitti_sample / frame.date), kitti_sample, None)[
        "depth"
    ]
    np.testing.assert_array_equal(ours > 0, reference > 0)
    assert (ours > 0).sum() > 15000 and np.abs(ours - reference).max() <= 0.01


def test_kitti_tiny_projected_npz_become_depth_pngs(real_data, tmp_path):
    src = real_data / "kitti_tiny"
    out = tmp_path / "rig"
    report = import_kitti_depth(src, out, progress=False)
    drive = "2011_09_26_drive_0023_sync"
    assert report.frames == 7 and report.files == {"left": 7, "right": 7, "lidar_depth": 7}
    for index in range(7):
        frame = RigFrame(drive, f"{index:010d}")
        with np.load(
            src / "2011_09_26" / drive / "proj_depth/velodyne/image_02" / f"{frame.name}.npz"
        ) as npz:
            expected = npz["velodyne_depth"]
        depth = lidar_depth(frame, read_rig_calibration(out / drive), out)
        np.testing.assert_array_equal(depth > 0, expected > 0)
        assert np.abs(depth - expected).max() <= 1 / 256
        assert (
            frame.image_path(out, 3).read_bytes()
            == (src / "2011_09_26" / drive / "image_03/data" / f"{frame.name}.png").read_bytes()
        )
    before = tree_digest(out)
    import_kitti_depth(src, out, progress=False)
    assert tree_digest(out) == before


def test_kitti_import_errors_name_the_file(real_data, tmp_path):
    with pytest.raises(
        ValueError, match=r"middlebury2006: not a KITTI raw tree \(no <date>/calib_cam_to_cam\.txt\)"
    ):
        import_kitti_depth(real_data / "middlebury2006", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match=r"nowhere: KITTI root folder not found"):
        import_kitti_depth(tmp_path / "nowhere", tmp_path / "out", progress=False)
    src = tmp_path / "tiny"
    shutil.copytree(real_data / "kitti_tiny", src)
    npz = src / "2011_09_26/2011_09_26_drive_0023_sync/proj_depth/velodyne/image_02/0000000003.npz"
    np.savez(npz, depth=np.zeros((375, 1242), np.float32))
    with pytest.raises(ValueError, match=r"0000000003\.npz: no 'velodyne_depth' array \(it holds depth\)"):
        import_kitti_depth(src, tmp_path / "out", progress=False)
