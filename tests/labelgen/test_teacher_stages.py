"""The psmnet and seg label stages: the shards equal the teachers run directly, checkpoints are
hashed into the shards, and bad checkpoints stop the run in the driver with one line."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from edgedepth.common.checkpoints import sha256_file
from edgedepth.labelgen.kitti import find_frames, read_calibration, read_image
from edgedepth.labelgen.plan import plan_shards, write_plan
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.shards import shard_path
from edgedepth.labelgen.teachers.deeplab_vainf import build_vainf_deeplab
from edgedepth.labelgen.teachers.psmnet import load_psmnet, predict_disparity
from edgedepth.labelgen.teachers.psmnet_model import PSMNet
from edgedepth.labelgen.teachers.segmentation import SegConfig, load_segmenter, predict_segmentation
from edgedepth.labelgen.teachers.stereo import disparity_to_depth
from tests.kitti_tree import make_kitti_tree


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A two-frame tree, a random PSMNet in the authors' container, a random VainF V3+ MobileNet."""
    root = tmp_path_factory.mktemp("teachers")
    tree = make_kitti_tree(root / "kitti", {"2011_09_26_drive_0001_sync": 2}, {"2011_09_26": (60, 150)})
    torch.manual_seed(0)
    psmnet = root / "psmnet.tar"
    state = {f"module.{k}": v for k, v in PSMNet().state_dict().items()}
    torch.save({"epoch": 1, "state_dict": state, "train_loss": 0.1}, psmnet)
    seg = root / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    torch.save(
        {
            "cur_itrs": 1,
            "model_state": build_vainf_deeplab("deeplabv3plus_mobilenet").state_dict(),
            "best_score": np.float64(0.5),
        },
        seg,
    )
    labels = root / "labels"
    write_plan(plan_shards(tree), labels)
    options = {"psmnet": {"checkpoint": str(psmnet)}, "seg": {"checkpoint": str(seg)}}
    reports = run_stages(
        labels, ["psmnet", "seg"], workers=1, batch_size=2, stage_options=options, progress=False
    )
    return tree, labels, psmnet, seg, reports


def test_teacher_shards_equal_the_teachers_run_directly(teachers):
    tree, labels, psmnet, seg, reports = teachers
    assert [(r.stage, r.frames_done, r.frames_failed) for r in reports] == [("psmnet", 2, []), ("seg", 2, [])]
    frame = find_frames(tree)[1]
    calib = read_calibration(tree / frame.date)
    left, right = read_image(frame.image_path(tree, 2)), read_image(frame.image_path(tree, 3))
    disparity = predict_disparity(load_psmnet(psmnet), left, right)
    item = LabelReader(labels, ["psmnet", "seg"])[1]
    np.testing.assert_allclose(
        item["psmnet/disparity"], np.where(disparity > 0, disparity, 0), atol=1 / 512 + 1e-4
    )
    expected = disparity_to_depth(disparity, calib.focal, calib.baseline)
    np.testing.assert_allclose(item["psmnet/depth"], expected, rtol=1e-3)
    np.testing.assert_array_equal(item["psmnet/valid"], disparity > 0)
    classes, confidence = predict_segmentation(
        load_segmenter(SegConfig(format="vainf", arch="deeplabv3plus_mobilenet", checkpoint=str(seg))), left
    )
    np.testing.assert_array_equal(item["seg/seg"], classes)
    np.testing.assert_allclose(item["seg/seg_conf"], confidence / 255.0, atol=1e-6)


def test_shards_record_the_checkpoint_and_settings(teachers):
    _, labels, psmnet, seg, _ = teachers
    with h5py.File(shard_path(labels, "psmnet", "shard-00000"), "r") as f:
        assert f.attrs["teacher"] == "psmnet" and f.attrs["checkpoint_sha256"] == sha256_file(psmnet)
        assert json.loads(f.attrs["settings"])["align_corners"] is True
    with h5py.File(shard_path(labels, "seg", "shard-00000"), "r") as f:
        assert f.attrs["teacher"] == "vainf-deeplabv3plus_mobilenet"
        assert f.attrs["checkpoint_sha256"] == sha256_file(seg)
        assert json.loads(f["seg"].attrs["classes"])[13] == "car" and f["seg"].attrs["ignore"] == 255


def test_bad_checkpoints_stop_the_run_in_one_line(teachers, tmp_path):
    _, labels, psmnet, seg, _ = teachers
    with pytest.raises(FileNotFoundError, match=r"nope\.tar: checkpoint file not found"):
        run_stages(
            labels,
            ["psmnet"],
            stage_options={"psmnet": {"checkpoint": str(tmp_path / "nope.tar")}},
            progress=False,
        )
    with pytest.raises(
        ValueError, match=r"best_deeplabv3plus_mobilenet_cityscapes_os16\.pth: not a PSMNet"
    ) as info:
        run_stages(labels, ["psmnet"], stage_options={"psmnet": {"checkpoint": str(seg)}}, progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(
        ValueError, match=r"psmnet\.tar: checkpoint does not fit VainF deeplabv3plus_resnet101"
    ):
        options = {"seg": {"checkpoint": str(psmnet), "arch": "deeplabv3plus_resnet101"}}
        run_stages(labels, ["seg"], stage_options=options, progress=False)


@pytest.mark.slow
def test_psmnet_stage_on_the_real_frame(kitti_sample, psmnet_kitti2015, tmp_path):
    """The public KITTI 2015 checkpoint through `labelgen run`: Abs Rel <= 0.06 (measured 0.020)."""
    import cv2

    write_plan(plan_shards(kitti_sample), tmp_path)
    options = {"psmnet": {"checkpoint": str(psmnet_kitti2015)}}
    (report,) = run_stages(tmp_path, ["psmnet"], workers=1, stage_options=options, progress=False)
    assert report.frames_done == 1
    depth = LabelReader(tmp_path, ["psmnet"])[0]["psmnet/depth"]
    gt_path = (
        kitti_sample / "data_depth_annotated/train/2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02"
    )
    gt = cv2.imread(str(gt_path / "0000000005.png"), cv2.IMREAD_UNCHANGED) / 256.0
    both = (gt > 0) & (depth > 0)
    assert float(np.mean(np.abs(depth[both] - gt[both]) / gt[both])) <= 0.06
