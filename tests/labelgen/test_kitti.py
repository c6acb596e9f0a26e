"""KITTI raw layout: calibration, frame selection, readers and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgedepth.labelgen.kitti import (
    Calibration,
    Frame,
    find_frames,
    read_calibration,
    read_image,
    read_split_file,
    read_velodyne,
)


def test_real_calibration_focal_and_baseline(kitti_sample):
    calib = read_calibration(kitti_sample / "2011_09_26")
    assert calib.focal == pytest.approx(721.5377)
    assert calib.baseline == pytest.approx((44.85728 + 339.5242) / 721.5377, rel=1e-6)  # 0.5327 m
    assert calib.image_size == (375, 1242)
    assert calib.projection(2).shape == (3, 4)
    np.testing.assert_allclose(Calibration.from_dict(calib.to_dict()).projection(3), calib.projection(3))


def test_missing_calibration_key_names_file_and_key(tmp_path, kitti_tree):
    date = kitti_tree / "2011_09_26"
    text = (date / "calib_cam_to_cam.txt").read_text()
    (date / "calib_cam_to_cam.txt").write_text(
        "\n".join(line for line in text.splitlines() if "P_rect_03" not in line)
    )
    with pytest.raises(ValueError, match=r"calib_cam_to_cam\.txt: missing P_rect_03"):
        read_calibration(date)
    with pytest.raises(
        FileNotFoundError, match=r"2011_10_03/calib_cam_to_cam\.txt: calibration file not found"
    ):
        read_calibration(kitti_tree / "2011_10_03")


def test_frames_are_named_by_relative_path_and_sorted(kitti_tree):
    frames = find_frames(kitti_tree)
    assert len(frames) == 11
    assert frames[0].frame_id == "2011_09_26/2011_09_26_drive_0001_sync/0000000000"
    assert frames == sorted(frames)
    assert len({f.frame_id for f in frames}) == 11 and len({f.index for f in frames}) == 5  # indices repeat
    assert Frame.from_id(frames[7].frame_id) == frames[7]


def test_drive_selection_with_or_without_sync_suffix(kitti_tree):
    frames = find_frames(kitti_tree, drives=["2011_09_26_drive_0002", "2011_09_28_drive_0001_sync"])
    assert {f.drive for f in frames} == {"2011_09_26_drive_0002_sync", "2011_09_28_drive_0001_sync"}
    with pytest.raises(ValueError, match="drive 2011_09_26_drive_0099_sync not found"):
        find_frames(kitti_tree, drives=["2011_09_26_drive_0099"])


def test_split_file_in_monodepth2_format(tmp_path, kitti_tree):
    split = tmp_path / "split.txt"
    split.write_text(
        "2011_09_26/2011_09_26_drive_0001_sync 3 l\n2011_09_26/2011_09_26_drive_0001_sync 3 r\n"
        "2011_09_28/2011_09_28_drive_0001_sync 0000000001 l\n\n"
    )
    frames = find_frames(kitti_tree, split_file=split)
    assert [f.frame_id for f in frames] == [
        "2011_09_26/2011_09_26_drive_0001_sync/0000000003",
        "2011_09_28/2011_09_28_drive_0001_sync/0000000001",
    ]
    split.write_text("2011_09_26/2011_09_26_drive_0001_sync l 3\n")
    with pytest.raises(ValueError, match=r"split\.txt:1: expected '<date>/<drive>_sync <frame_index> l\|r'"):
        find_frames(kitti_tree, split_file=split)


def test_missing_root_and_no_frames(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere: KITTI root folder not found"):
        find_frames(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no frames matched"):
        find_frames(tmp_path / "empty")


def test_jpg_images_are_found_when_png_is_absent(kitti_tree):
    frame = find_frames(kitti_tree)[0]
    png = frame.image_path(kitti_tree, 2)
    image = read_image(png)
    jpg = png.with_suffix(".jpg")
    import cv2

    cv2.imwrite(str(jpg), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    png.unlink()
    assert frame.image_path(kitti_tree, 2) == jpg
    assert read_image(jpg).shape == image.shape
    assert frame in find_frames(kitti_tree)


def test_corrupt_image_and_truncated_scan_are_named(kitti_tree):
    frame = find_frames(kitti_tree)[0]
    png, scan = frame.image_path(kitti_tree, 2), frame.velodyne_path(kitti_tree)
    png.write_bytes(png.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"0000000000\.png: not a readable image"):
        read_image(png)
    points = read_velodyne(scan)
    assert points.shape == (4000, 4) and points.dtype == np.float32
    scan.write_bytes(scan.read_bytes()[:-6])
    with pytest.raises(ValueError, match=r"0000000000\.bin: 63994 bytes is not a multiple of 16"):
        read_velodyne(scan)


@pytest.mark.parametrize(
    "name, lines, frames",
    [("eigen_zhou_train", 39810, 21880), ("eigen_zhou_val", 4424, 4187), ("eigen_test", 697, 697)],
)
def test_public_split_lists_read_as_they_are(kitti_sample, name, lines, frames):
    """The Zhou lists (unpadded indices, both sides) and the Eigen list (padded); l and r of one
    frame are one planned frame, since the student's input is camera 2."""
    path = kitti_sample.parent / "splits" / f"{name}.txt"
    if not path.is_file():
        pytest.skip(f"{path}: public split lists not beside the sample")
    entries = read_split_file(path)
    assert len(entries) == lines and len(set(entries)) == frames


def test_doffs_is_the_right_principal_point_minus_the_left(kitti_tree):
    """P_rect_03's principal point dx px right of P_rect_02's: doffs = dx, and the sgbm stage's depth
    is f * B / (d + dx) for the disparity d it finds (the tree's true disparity, SHIFT px)."""
    from edgedepth.labelgen.teacher_stages import SgbmStage
    from tests.kitti_tree import BASELINE, FOCAL, SHIFT

    date = kitti_tree / "2011_09_26"
    assert read_calibration(date).doffs == 0.0 and read_calibration(date).depth_range is None
    dx = 6.5
    path = date / "calib_cam_to_cam.txt"
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("P_rect_03:"):
            values = [float(v) for v in line.split(":")[1].split()]
            values[2] += dx
            line = "P_rect_03: " + " ".join(f"{v:.6e}" for v in values)
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    calib = read_calibration(date)
    assert calib.doffs == pytest.approx(dx) and calib.to_dict()["doffs"] == pytest.approx(dx)
    assert calib.baseline == pytest.approx(BASELINE, rel=1e-6)
    frame = find_frames(kitti_tree)[0]
    out = SgbmStage().process(frame, calib, kitti_tree, None)
    valid, disparity = out["valid"], out["disparity"] / 256.0  # stored as disparity x 256
    assert valid.mean() > 0.7
    assert np.median(disparity[valid]) == pytest.approx(SHIFT, abs=0.1)
    np.testing.assert_allclose(out["depth"][valid], FOCAL * BASELINE / (disparity[valid] + dx), rtol=1e-3)
    assert np.median(out["depth"][valid]) == pytest.approx(FOCAL * BASELINE / (SHIFT + dx), rel=2e-3)


def test_split_file_also_takes_frame_ids_and_comments(tmp_path, kitti_tree):
    split = tmp_path / "ids.txt"
    split.write_text(
        "# frames by id\n2011_09_26/2011_09_26_drive_0002_sync/0000000001\n"
        "2011_09_28/2011_09_28_drive_0001 2 l  # monodepth2 style\n"
    )
    assert [f.frame_id for f in read_split_file(split)] == [
        "2011_09_26/2011_09_26_drive_0002_sync/0000000001",
        "2011_09_28/2011_09_28_drive_0001_sync/0000000002",
    ]
    split.write_text("2011_09_26/2011_09_26_drive_0002_sync/one\n")
    with pytest.raises(ValueError, match=r"ids\.txt:1: expected .* or '<date>/<drive>_sync/<frame_index>'"):
        read_split_file(split)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("../outside 5 l", r"'\.\.' is not a KITTI date folder \(YYYY_MM_DD\)"),
        ("/etc/2011_09_26_drive_0001_sync 5 l", r"'etc' is not a KITTI date folder"),
        ("2011_09_26/../../etc/0000000005", r"expected '<date>/<drive>_sync <frame_index> l\|r'"),
        (
            "2011_09_26/2011_09_28_drive_0001_sync 5 l",
            r"'2011_09_28_drive_0001_sync' is not a drive of 2011_09_26",
        ),
        ("2011_09_26/2011_09_26_drive_0001_sync/..", r"expected '<date>/<drive>_sync <frame_index> l\|r'"),
        ("2011_09_26/2011_09_26_drive_0001_sync ² l", r"expected '<date>/<drive>_sync <frame_index> l\|r'"),
        (
            "2011_09_26/2011_09_26_drive_0001_sync 12345678901 l",
            r"frame index '12345678901' has more than 10",
        ),
    ],
)
def test_split_lines_that_leave_the_root_or_name_no_frame_are_refused(tmp_path, line, problem):
    """One line naming the file and the line number; every listed frame stays inside the data root."""
    split = tmp_path / "split.txt"
    split.write_text(f"2011_09_26/2011_09_26_drive_0001_sync 1 l\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"split\.txt:2: {problem}") as caught:
        read_split_file(split)
    assert "\n" not in str(caught.value)


def test_a_split_file_that_is_not_text_is_one_line(tmp_path):
    split = tmp_path / "split.bin"
    split.write_bytes(b"2011_09_26/2011_09_26_drive_0001_sync 1 l\n\xff\xfe\x00\n")
    with pytest.raises(
        ValueError, match=r"split\.bin: not a UTF-8 text file \(byte 42: invalid start byte\)"
    ):
        read_split_file(split)


def test_frame_ids_are_parsed_strictly(kitti_tree):
    from edgedepth.labelgen.kitti import frame_id_problem

    good = "2011_09_26/2011_09_26_drive_0001_sync/0000000003"
    assert frame_id_problem(good) is None and Frame.from_id(good) == Frame(
        "2011_09_26", good.split("/")[1], 3
    )
    for bad in ("../x/y", "/abs/2011_09_26_drive_0001_sync/0000000003", good[:-1], good + "/", " " + good):
        assert "is not a KITTI frame id" in frame_id_problem(bad)
        with pytest.raises(ValueError, match="is not a KITTI frame id"):
            Frame.from_id(bad)
    other_date = "2011_09_28/2011_09_26_drive_0001_sync/0000000003"
    assert "is not a KITTI frame id" in frame_id_problem(other_date)
    assert frame_id_problem(None) == "a frame id must be a string, got NoneType None"
    # files not named <index:010d> are not frames (they would plan ids whose files do not exist)
    folder = kitti_tree / "2011_09_26" / "2011_09_26_drive_0002_sync" / "image_02" / "data"
    (folder / "7.png").write_bytes((folder / "0000000000.png").read_bytes())
    assert len(find_frames(kitti_tree, drives=["2011_09_26_drive_0002"])) == 3


def test_calibration_from_dict_checks_types_and_shapes(kitti_tree):
    data = read_calibration(kitti_tree / "2011_09_26").to_dict()
    for key, value, problem in [
        ("P_rect_02", [[1, 2, 3]], "P_rect_02: not a 3x4 matrix of numbers"),
        ("velo_to_cam", "eye", "velo_to_cam: not a 4x4 matrix of numbers"),
        ("R_rect_00", [[1, 0], [0, 1, 0], [0, 0, 1]], "R_rect_00: not a 3x3 matrix of numbers"),
        ("image_size", [True, 160], r"image_size: not \[height, width\] in whole pixels"),
        ("image_size", [64, 20000], r"image_size: 64x20000 is outside 1\.\.16384 pixels a side"),
        ("date", 2011, "date: not a string"),
    ]:
        with pytest.raises(ValueError, match=problem):
            Calibration.from_dict({**data, key: value})
    with pytest.raises(ValueError, match="^P_rect_03: missing$"):
        Calibration.from_dict({k: v for k, v in data.items() if k != "P_rect_03"})


def test_an_image_size_beyond_the_cap_is_a_calibration_error(kitti_tree):
    """Every label array is sized by it: S_rect_02 of 20000 px would ask for gigabytes per frame."""
    path = kitti_tree / "2011_09_26" / "calib_cam_to_cam.txt"
    text = path.read_text().splitlines()
    path.write_text("\n".join("S_rect_02: 2.0e+04 6.4e+01" if t.startswith("S_rect_02") else t for t in text))
    with pytest.raises(ValueError, match=r"S_rect_02 gives image size 20000x64 \(1 to 16384 px a side\)"):
        read_calibration(path.parent)
