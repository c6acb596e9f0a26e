"""Calibration frames for INT8: drawn from the label shards, in the exported input layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgedepth.labelgen.reader import LabelReader
from edgedepth.student.deploy.calibration import calibration_frames, to_export_input
from tests.student.labelfolder import make_label_folder


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    return make_label_folder(
        tmp_path_factory.mktemp("calib"), {"2011_09_26_drive_0001_sync": 3}, seg=False, lidar=False
    )


def test_frames_come_from_the_images_stage_and_are_seeded(labels):
    frames = calibration_frames(labels, count=2, seed=1)
    assert len(frames.images) == 2 and frames.note == ""
    reader = LabelReader(labels, ["images"])
    by_id = {reader[i]["frame_id"]: reader[i]["images/image"] for i in range(len(reader))}
    for frame_id, image in zip(frames.frame_ids, frames.images, strict=True):
        np.testing.assert_array_equal(image, by_id[frame_id])
    assert calibration_frames(labels, count=2, seed=1).frame_ids == frames.frame_ids


def test_fewer_frames_than_asked_calibrates_on_all_and_says_so(labels):
    frames = calibration_frames(labels, count=64)
    assert len(frames.images) == 3
    assert (
        frames.note
        == "calibrating on all 3 labelled frame(s); 64 were asked for (the label folder has no more)"
    )
    with pytest.raises(ValueError, match="at least 1 frame"):
        calibration_frames(labels, count=0)


def test_export_input_layout():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    x = to_export_input(image, (32, 64))
    assert x.shape == (1, 3, 32, 64) and x.dtype == np.uint8
    expected = cv2.resize(image, (64, 32), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    np.testing.assert_array_equal(x[0], expected)
    assert to_export_input(image, (32, 64), "float32").dtype == np.float32
    with pytest.raises(ValueError, match="RGB uint8"):
        to_export_input(image.astype(np.float32), (32, 64))
