"""The embedded Motorcycle data in the KITTI layout: calibration, LiDAR and ground truth agree, and
the pipeline's own readers and SGBM work on it as on KITTI."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.data import stereo_motorcycle

from demo.motorcycle import BASELINE_M, DOFFS_PX, FOCAL_PX, make_motorcycle_kitti
from labelgen.kitti import find_frames, read_calibration, read_image, read_split_file, read_velodyne
from labelgen.lidar import project_lidar
from labelgen.teachers.sgbm import SgbmConfig, sgbm_disparity
from student.groundtruth import annotated_groundtruth_path, read_annotated


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_motorcycle_kitti(tmp_path_factory.mktemp("motorcycle"))


@pytest.fixture(scope="module")
def frame(tree):
    (only,) = find_frames(tree.root)
    return only


def test_tree_is_one_kitti_frame_with_the_published_calibration(tree, frame):
    assert read_split_file(tree.split_file) == [frame]
    calib = read_calibration(tree.root / frame.date)
    assert calib.image_size == (500, 741) == tree.image_size
    assert calib.focal == pytest.approx(994.978)
    assert calib.baseline == pytest.approx(0.193001, rel=1e-6)
    assert np.array_equal(read_image(frame.image_path(tree.root, 2)), stereo_motorcycle()[0])


def test_ground_truth_is_depth_from_the_shipped_disparity(tree, frame):
    _, _, disparity = stereo_motorcycle()
    gt = read_annotated(annotated_groundtruth_path(tree.root, frame))
    known = np.isfinite(disparity)
    assert np.array_equal(gt > 0, known)
    expected = FOCAL_PX * BASELINE_M / (disparity[known] + DOFFS_PX)
    assert np.abs(gt[known] - expected).max() <= 0.5 / 256 + 1e-6  # KITTI PNG: 1/256 m steps
    assert 2.0 < gt[known].min() and gt[known].max() < 5.1


def test_lidar_scan_projects_onto_the_ground_truth(tree, frame):
    calib = read_calibration(tree.root / frame.date)
    points = read_velodyne(frame.velodyne_path(tree.root))
    assert len(points) == tree.lidar_points > 5000
    assert np.all((points[:, 3] >= 0) & (points[:, 3] <= 1))
    assert np.all(points[:, 0] > 1.5)  # x forward in the LiDAR frame: everything is in front
    projected = project_lidar(points, calib)
    gt = read_annotated(annotated_groundtruth_path(tree.root, frame))
    hit = projected > 0
    assert hit.sum() == len(points)  # one pixel per point: the scan lines never land twice
    assert np.abs(projected[hit] - gt[hit]).max() < 0.005
    per_column = hit.sum(axis=0)
    assert per_column.max() <= 64  # at most one return per beam in a column: scan lines, not a scatter
    assert np.median(per_column[per_column > 0]) > 30


def test_sgbm_on_the_moved_right_image_matches_the_ground_truth(tree, frame):
    """The right image moved by dx makes depth = f B / d: SGBM then lands well under 0.1 Abs Rel."""
    calib = read_calibration(tree.root / frame.date)
    left, right = (read_image(frame.image_path(tree.root, cam)) for cam in (2, 3))
    disparity, valid = sgbm_disparity(left, right, SgbmConfig())
    gt = read_annotated(annotated_groundtruth_path(tree.root, frame))
    both = valid & (disparity > 0) & (gt > 0)
    depth = calib.focal * calib.baseline / disparity[both]
    abs_rel = float(np.mean(np.abs(depth - gt[both]) / gt[both]))
    assert both.sum() > 0.7 * (gt > 0).sum()
    assert abs_rel < 0.03


def test_tree_is_rewritten_byte_identically(tree, tmp_path):
    again = make_motorcycle_kitti(tmp_path)
    for path in sorted(p for p in tree.root.rglob("*") if p.is_file()):
        twin = again.root / path.relative_to(tree.root)
        assert twin.read_bytes() == path.read_bytes(), path
