"""The rig layout: calibration, frames, LiDAR sources, ground truth, their one-line errors, and a
labelgen run over a rig tree in which some frames are broken."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedepth.labelgen.layout import (
    detect_layout,
    frame_from_id,
    lidar_depth,
    lidar_depth_maps,
    read_frame_list,
)
from edgedepth.labelgen.plan import load_plan, missing_inputs, plan_shards, write_plan
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.rig import (
    RigCalibration,
    RigFrame,
    find_rig_frames,
    read_rig_calibration,
)
from edgedepth.labelgen.rig_arrays import read_depth_png, read_lidar_points
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.teacher_stages import SgbmStage
from tests.rig_tree import BASELINE, DEPTH, DOFFS, FOCAL, SHIFT, T_CAM_LIDAR, camera_points, make_rig_tree


@pytest.fixture
def rig_tree(tmp_path: Path) -> Path:
    """Two sequences: "street" (3 frames, 64x160, npy LiDAR), "yard" (2 frames, 60x150, depth PNGs)."""
    return make_rig_tree(tmp_path / "rig", {"street": 3, "yard": 2}, {"yard": (60, 150)}, {"yard": "png"})


def _edit_calib(sequence_dir: Path, **changes) -> Path:
    path = sequence_dir / "calib.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


def test_calibration_is_read_with_the_image_size_of_the_first_left_image(rig_tree):
    calib = read_rig_calibration(rig_tree / "yard")
    assert (calib.sequence, calib.focal, calib.fy, calib.baseline, calib.doffs) == (
        "yard",
        FOCAL,
        FOCAL,
        BASELINE,
        DOFFS,
    )
    assert (calib.cx, calib.cy) == (74.5, 29.5) and calib.image_size == (60, 150)
    assert calib.depth_range == (0.5, 50.0)
    np.testing.assert_array_equal(calib.t_cam_lidar, T_CAM_LIDAR)
    again = RigCalibration.from_dict(json.loads(json.dumps(calib.to_dict())))
    np.testing.assert_array_equal(again.projection(3), calib.projection(3))
    assert again.to_dict() == calib.to_dict()


def test_projection_matches_a_hand_computation(rig_tree):
    calib = read_rig_calibration(rig_tree / "street")  # 64x160: cx = 79.5, cy = 31.5
    lidar = np.array([10.0, 1.0, 0.5, 1.0])  # 10 m ahead, 1 m left, 0.5 m up
    # camera = R lidar + t: x = -y_l + 0.05, y = -z_l - 0.08, z = x_l - 0.2
    x, y, z = -1.0 + 0.05, -0.5 - 0.08, 10.0 - 0.2
    u2, v2 = 500 * x / z + 79.5, 500 * y / z + 31.5
    u3 = 500 * (x - 0.2) / z + 79.5 + 4.0  # right camera: 0.2 m to the right, principal point cx + doffs
    left, right = calib.projection(2) @ lidar, calib.projection(3) @ lidar
    np.testing.assert_allclose(left / left[2], [u2, v2, 1.0])
    np.testing.assert_allclose(right / right[2], [u3, v2, 1.0])
    assert left[2] == pytest.approx(z)
    disparity = u2 - u3  # = f B / z - doffs, so depth = f B / (d + doffs)
    assert FOCAL * BASELINE / (disparity + DOFFS) == pytest.approx(z)


def test_npy_points_project_through_the_extrinsics(rig_tree):
    frame = RigFrame("street", "frame_001")
    calib = read_rig_calibration(rig_tree / "street")
    points = read_lidar_points(frame.lidar_points_path(rig_tree))
    assert points.shape == (300, 4) and points.dtype == np.float32
    depth = lidar_depth(frame, calib, rig_tree)
    cam = camera_points((64, 160), seed=1)  # the generator's camera-frame points of this frame
    rows = np.floor(cam[:, 1] / cam[:, 2] * FOCAL + 31.5 + 0.5).astype(int)
    cols = np.floor(cam[:, 0] / cam[:, 2] * FOCAL + 79.5 + 0.5).astype(int)
    expected = np.zeros((64, 160), bool)
    expected[rows, cols] = True
    np.testing.assert_array_equal(depth > 0, expected)
    np.testing.assert_allclose(depth[expected], DEPTH, rtol=1e-5)
    right = lidar_depth_maps(frame, calib, rig_tree, (2, 3))[3]
    assert (right > 0).sum() > 200  # the right camera sees the plane too, shifted by the disparity


def test_sparse_depth_png_and_ground_truth(rig_tree):
    frame = frame_from_id("rig", "yard/frame_000")
    calib = read_rig_calibration(rig_tree / "yard")
    raw = cv2.imread(str(frame.lidar_depth_path(rig_tree)), cv2.IMREAD_UNCHANGED)
    depth = lidar_depth(frame, calib, rig_tree)
    np.testing.assert_array_equal(depth, raw.astype(np.float32) / 256)
    assert 150 < (depth > 0).sum() <= 200 and set(np.unique(depth)) == {0.0, 1280 / 256}
    with pytest.raises(
        ValueError, match=r"lidar_depth/frame_000\.png: a projected depth PNG gives the left camera only"
    ):
        lidar_depth_maps(frame, calib, rig_tree, (2, 3))
    truth = read_depth_png(frame.depth_gt_path(rig_tree))
    assert truth.shape == (60, 150) and truth.dtype == np.float32 and (truth == DEPTH).all()


def test_frames_lists_and_layout_detection(rig_tree, tmp_path):
    frames = find_rig_frames(rig_tree)
    assert [f.frame_id for f in frames] == [
        "street/frame_000", "street/frame_001", "street/frame_002", "yard/frame_000", "yard/frame_001"
    ]  # fmt: skip
    assert {(f.drive, f.date) for f in frames[3:]} == {("yard", "yard")}
    assert [f.sequence for f in find_rig_frames(rig_tree, sequences=["yard"])] == ["yard", "yard"]
    with pytest.raises(ValueError, match="sequence lane not found"):
        find_rig_frames(rig_tree, sequences=["lane"])
    listed = tmp_path / "frames.txt"
    listed.write_text("# a comment\nyard/frame_001\n\nstreet/frame_000  # trailing comment\n")
    assert [f.frame_id for f in read_frame_list(listed, "rig")] == ["yard/frame_001", "street/frame_000"]
    assert [f.frame_id for f in find_rig_frames(rig_tree, frame_list=listed)] == [
        "street/frame_000",
        "yard/frame_001",
    ]
    listed.write_text("yard/frame_001\nyard frame_000\n")
    with pytest.raises(ValueError, match=r"frames\.txt:2: expected '<sequence>/<frame>'"):
        read_frame_list(listed, "rig")
    assert detect_layout(rig_tree) == "rig"
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError, match=r"empty: neither a rig tree \(no <sequence>/calib\.json\) nor a KITTI"
    ):
        detect_layout(tmp_path / "empty")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"baseline_m": None, "fy": None}, r"calib\.json: missing key\(s\) fy, baseline_m$"),
        ({"fx": "721"}, r"calib\.json: fx is not a number \(got '721'\)$"),
        ({"cy": True}, r"calib\.json: cy is not a number"),
        ({"cx": float("nan")}, r"calib\.json: cx is not finite \(got nan\)$"),
        ({"baseline_m": 0}, r"calib\.json: baseline_m 0 is not positive$"),
        ({"fy": -500}, r"calib\.json: fy -500 is not positive$"),
        ({"depth_range_m": [5, 1]}, r"calib\.json: depth_range_m \[5, 1\] is not 0 <= min < max$"),
        ({"depth_range_m": [-1, 10]}, r"is not 0 <= min < max$"),
        ({"depth_range_m": [1]}, r"calib\.json: depth_range_m must be \[min, max\]"),
        ({"T_cam_lidar": np.eye(3).tolist()}, r"calib\.json: T_cam_lidar must be 4x4, got shape \(3, 3\)$"),
        ({"T_cam_lidar": (2 * np.eye(4)).tolist()}, r"calib\.json: T_cam_lidar's last row"),
        (
            {"T_cam_lidar": np.diag([1.0, 1.0, 2.0, 1.0]).tolist()},
            r"T_cam_lidar's rotation is not a rotation",
        ),
    ],
)
def test_bad_calibration_is_one_line_naming_calib_json(rig_tree, changes, message):
    path = _edit_calib(rig_tree / "street", **changes)
    with pytest.raises(ValueError, match=message) as info:
        read_rig_calibration(rig_tree / "street")
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_calibration_file_or_left_images(rig_tree):
    (rig_tree / "street" / "calib.json").rename(rig_tree / "street" / "calib.txt")
    with pytest.raises(FileNotFoundError, match=r"street/calib\.json: calibration file not found"):
        read_rig_calibration(rig_tree / "street")
    for image in (rig_tree / "yard" / "left").iterdir():
        image.unlink()
    with pytest.raises(ValueError, match=r"yard/calib\.json: no left images in .*yard/left"):
        read_rig_calibration(rig_tree / "yard")
    (rig_tree / "yard" / "calib.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"yard/calib\.json: expected a JSON object"):
        read_rig_calibration(rig_tree / "yard")


def test_bad_depth_pngs_and_point_files_are_named(tmp_path):
    eight_bit, colour, jpeg = tmp_path / "eight.png", tmp_path / "colour.png", tmp_path / "photo.png"
    cv2.imwrite(str(eight_bit), np.full((8, 8), 7, np.uint8))
    cv2.imwrite(str(colour), np.zeros((8, 8, 3), np.uint16))
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "photo.jpg").rename(jpeg)
    cases = [
        (eight_bit, r"eight\.png: not a 16-bit single-channel depth PNG \(it is uint8, 1 channel\(s\)\)"),
        (colour, r"colour\.png: not a 16-bit single-channel depth PNG \(it is uint16, 3 channel\(s\)\)"),
        (jpeg, r"photo\.png: not a PNG file"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            read_depth_png(path)
    with pytest.raises(FileNotFoundError, match=r"none\.png: depth PNG not found"):
        read_depth_png(tmp_path / "none.png")

    npy = tmp_path / "points.npy"
    np.save(npy, np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match=r"points\.npy: empty point cloud \(0 points\)"):
        read_lidar_points(npy)
    np.save(npy, np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match=r"points\.npy: expected N x 3\+ points .* got shape \(10, 2\)"):
        read_lidar_points(npy)
    np.save(npy, np.array([{"x": 1}, {"y": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"points\.npy: not a readable \.npy array"):
        read_lidar_points(npy)
    np.save(npy, np.full((5, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"points\.npy: no finite points \(5 points, all nan or inf\)"):
        read_lidar_points(npy)
    mixed = np.arange(20, dtype=np.float64).reshape(4, 5)
    mixed[1, 2] = np.inf
    np.save(npy, mixed)
    kept = read_lidar_points(npy)
    assert kept.dtype == np.float32 and kept.shape == (3, 5) and kept[1, 0] == 10


def test_plan_of_a_rig_tree(rig_tree, tmp_path):
    plan = plan_shards(rig_tree, shard_size=2)
    assert plan.layout == "rig" and plan.data_root == str(rig_tree.resolve())
    assert [(s.date, s.drive, s.image_size, len(s.frame_ids)) for s in plan.shards] == [
        ("street", "street", (64, 160), 2), ("street", "street", (64, 160), 1), ("yard", "yard", (60, 150), 2)
    ]  # fmt: skip
    assert plan.shards[2].frames == [RigFrame("yard", "frame_000"), RigFrame("yard", "frame_001")]
    assert plan.depth_range() == (0.5, 50.0)
    write_plan(plan, tmp_path / "labels")
    data = json.loads((tmp_path / "labels" / "plan.json").read_text())
    assert (data["schema_version"], data["layout"], data["data_root"]) == (2, "rig", str(rig_tree.resolve()))
    assert data["calibrations"]["yard"]["doffs"] == DOFFS and "kitti_root" not in data
    loaded = load_plan(tmp_path / "labels")
    assert loaded.plan_id == plan.plan_id and loaded.shards[0].frames[0] == RigFrame("street", "frame_000")
    assert missing_inputs(loaded) == (0, [])  # a LiDAR source is optional
    (rig_tree / "yard" / "right" / "frame_001.png").unlink()
    assert missing_inputs(plan_shards(rig_tree)) == (1, ["yard/frame_001 (yard/right/frame_001.png)"])
    _edit_calib(rig_tree / "street", depth_range_m=[0.2, 20.0])
    _edit_calib(rig_tree / "yard", depth_range_m=None)
    assert plan_shards(rig_tree).depth_range() == (0.2, 20.0)


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """One run of images, lidar and sgbm over a rig tree with a broken frame or sequence of each kind."""
    tmp = tmp_path_factory.mktemp("broken")
    root = make_rig_tree(
        tmp / "rig",
        {"good": 2, "nokey": 1, "flat": 1, "pair": 2, "png": 2},
        lidar={"png": "png"},
    )
    _edit_calib(root / "nokey", baseline_m=None)
    _edit_calib(root / "flat", baseline_m=-0.2)
    cv2.imwrite(str(root / "pair" / "right" / "frame_001.png"), np.zeros((64, 150, 3), np.uint8))
    cv2.imwrite(str(root / "png" / "lidar_depth" / "frame_000.png"), np.full((64, 160), 9, np.uint8))
    labels = tmp / "labels"
    write_plan(plan_shards(root), labels)
    reports = run_stages(labels, ["images", "lidar", "sgbm"], workers=1, progress=False)
    return root, labels, {r.stage: r for r in reports}


def test_broken_frames_fail_with_one_line_and_the_others_are_labelled(broken_run):
    root, labels, reports = broken_run
    for stage, report in reports.items():
        failed = dict(report.frames_failed)
        assert all("\n" not in reason for reason in failed.values())
        assert failed["nokey/frame_000"] == f"{root / 'nokey' / 'calib.json'}: missing key(s) baseline_m"
        assert failed["flat/frame_000"] == f"{root / 'flat' / 'calib.json'}: baseline_m -0.2 is not positive"
        expected = {"nokey/frame_000", "flat/frame_000"}
        if stage in ("images", "sgbm"):
            left, right = root / "pair" / "left" / "frame_001.png", root / "pair" / "right" / "frame_001.png"
            assert (
                failed["pair/frame_001"]
                == f"{left} is 160x64 but {right} is 150x64 (a left/right size mismatch)"
            )
            expected.add("pair/frame_001")
        if stage == "lidar":
            png = root / "png" / "lidar_depth" / "frame_000.png"
            assert failed["png/frame_000"].startswith(f"{png}: not a 16-bit single-channel depth PNG")
            expected.add("png/frame_000")
        assert set(failed) == expected, stage
        assert report.frames_done == report.frames_total - len(expected) and not report.shards_failed


def test_labels_of_the_good_frames_hold_the_known_answers(broken_run):
    root, labels, _ = broken_run
    reader = LabelReader(labels, ["images", "lidar", "sgbm"])
    ok = dict(zip(reader.frame_ids, reader.all_ok(), strict=True))
    good = {"good/frame_000", "good/frame_001", "pair/frame_000", "png/frame_001"}
    assert {frame_id for frame_id, done in ok.items() if done} == good
    item = reader[reader.frame_ids.index("good/frame_001")]
    left = cv2.imread(str(root / "good" / "left" / "frame_001.png"))[..., ::-1]
    np.testing.assert_array_equal(item["images/image"], left)
    np.testing.assert_allclose(item["lidar/depth"][item["lidar/depth"] > 0], DEPTH, rtol=1e-5)
    valid = item["sgbm/valid"]
    assert valid.mean() > 0.7
    # SGBM finds the true disparity SHIFT; depth = f B / (d + doffs), not f B / d
    assert np.median(item["sgbm/disparity"][valid]) == pytest.approx(SHIFT, abs=0.1)
    assert np.median(item["sgbm/depth"][valid]) == pytest.approx(DEPTH, rel=2e-3)
    assert np.median(item["sgbm/depth"][valid]) != pytest.approx(FOCAL * BASELINE / SHIFT, rel=0.1)
    png_item = reader[reader.frame_ids.index("png/frame_001")]
    raw = cv2.imread(str(root / "png" / "lidar_depth" / "frame_001.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(png_item["lidar/depth"], raw / np.float32(256))
    reader.close()


def test_sgbm_stage_uses_doffs_on_a_single_frame(rig_tree):
    frame, calib = RigFrame("street", "frame_000"), read_rig_calibration(rig_tree / "street")
    out = SgbmStage().process(frame, calib, rig_tree, None)
    valid = out["valid"]
    expected = FOCAL * BASELINE / (out["disparity"][valid] / 256.0 + DOFFS)
    np.testing.assert_allclose(out["depth"][valid], expected, rtol=1e-3)


def test_rig_frame_ids_stay_inside_the_root(rig_tree, tmp_path):
    from edgedepth.labelgen.rig import frame_id_problem

    assert (
        frame_id_problem("yard/frame_000") is None
        and RigFrame.from_id(" yard/frame_000 ").name == "frame_000"
    )
    for bad in (
        "../frame_000",
        "yard/..",
        "./x",
        "/yard/frame_000",
        "yard/frame\x00",
        "yard",
        "a/b/c",
        " yard/x",
    ):
        assert "is not a rig frame id" in frame_id_problem(bad), bad
    assert frame_id_problem(["yard", "x"]) == "a frame id must be a string, got list ['yard', 'x']"
    listed = tmp_path / "frames.txt"
    listed.write_text("yard/frame_000\n../etc/passwd\n")
    with pytest.raises(
        ValueError, match=r"frames\.txt:2: expected '<sequence>/<frame>' \(neither '\.' nor '\.\.'\)"
    ):
        read_frame_list(listed, "rig")
    listed.write_bytes(b"yard/frame_000\n\xc3\x28\n")
    with pytest.raises(ValueError, match=r"frames\.txt: not a UTF-8 text file \(byte 15"):
        read_frame_list(listed, "rig")


def test_a_rig_plan_is_checked_at_load(rig_tree, tmp_path):
    write_plan(plan_shards(rig_tree), tmp_path)
    path = tmp_path / "plan.json"
    good = json.loads(path.read_text())
    for edit, problem in [
        (
            lambda d: d["shards"][0]["frames"].__setitem__(0, "../street/frame_000"),
            r"shards\[0\]\.frames\[0\]: '\.\./street/frame_000' is not a rig frame id",
        ),
        (
            lambda d: d["shards"][0]["frames"].__setitem__(0, "yard/frame_000"),
            r"shards\[0\]\.frames\[0\]: 'yard/frame_000' is not a frame of 'street'",
        ),
        (
            lambda d: d["shards"][0].update(drive="yard"),
            r"shards\[0\]: date 'street' and drive 'yard' differ",
        ),
        (
            lambda d: d["calibrations"]["street"].update(fx="721"),
            r"calibrations\[street\]: fx: not a number \(got '721'\)",
        ),
        (
            lambda d: d["calibrations"]["street"].update(fx=10**400),
            r"calibrations\[street\]: fx: .* is out of range",
        ),
        (
            lambda d: d["calibrations"]["street"].update(depth_range=[1, "far"]),
            r"calibrations\[street\]: depth_range: not a number",
        ),
        (
            lambda d: d["calibrations"]["street"].update(T_cam_lidar=[[1, 0], [0, 1]]),
            r"calibrations\[street\]: T_cam_lidar: not a 4x4 matrix",
        ),
        (
            lambda d: d["calibrations"]["street"].update(fx=float("nan")),
            r"plan\.json \(street\): fx is not finite",
        ),
    ]:
        data = json.loads(json.dumps(good))
        edit(data)
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=problem):
            load_plan(tmp_path)
