"""Student training samples from a label folder: resizing, the bias table on the fly, failed
frames left out, multi-process loading, and one training step through the multi-task loss."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from calib.fit import fit_from_labels
from calib.lut import apply_lut
from labelgen.kitti import find_frames
from labelgen.plan import plan_shards, write_plan
from labelgen.run import run_stages
from labelgen.shards import LabelReader
from labelgen.synthetic import make_kitti_tree
from labelgen.teachers.deeplab_vainf import build_vainf_deeplab
from student.data import MEAN, STD, LabelDataset
from student.losses import MultiScaleLoss
from student.model import build_student

SIZE = (64, 128)


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    """Images, LiDAR, SGBM and (random-weight) segmentation labels of 4 frames; one image corrupt."""
    root = tmp_path_factory.mktemp("data")
    tree = make_kitti_tree(root / "kitti", {"2011_09_26_drive_0001_sync": 2, "2011_09_26_drive_0002_sync": 2})
    broken = find_frames(tree)[3].image_path(tree, 2)
    broken.write_bytes(broken.read_bytes()[:100])
    seg = root / "seg.pth"
    torch.manual_seed(0)
    torch.save({"model_state": build_vainf_deeplab("deeplabv3plus_mobilenet").state_dict()}, seg)
    labels = root / "labels"
    write_plan(plan_shards(tree), labels)
    options = {"sgbm": {"num_disparities": 32}, "seg": {"checkpoint": str(seg)}}
    run_stages(labels, ["images", "lidar", "sgbm", "seg"], workers=1, stage_options=options, progress=False)
    lut = fit_from_labels(labels, "sgbm", holdout=0, min_count=5, progress=False)
    return labels, lut


def test_samples_are_resized_normalised_and_failed_frames_left_out(labels):
    folder, _ = labels
    data = LabelDataset(folder, teacher="sgbm", size=SIZE)
    reader = LabelReader(folder, ["images", "sgbm", "seg"])
    assert len(data) == 3 and [data[i]["frame_id"] for i in range(3)] == reader.frame_ids[:3]
    sample, item = data[1], reader[1]
    assert sample["image"].shape == (3, *SIZE) and sample["image"].dtype == torch.float32
    expected = cv2.resize(item["images/image"], SIZE[::-1], interpolation=cv2.INTER_AREA) / 255.0 - MEAN
    np.testing.assert_allclose(sample["image"].numpy(), (expected / STD).transpose(2, 0, 1), atol=1e-5)
    depth = cv2.resize(item["sgbm/depth"], SIZE[::-1], interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(sample["depth"].numpy(), depth)
    assert sample["labels"].dtype == torch.int64 and set(sample["labels"].unique().tolist()) <= set(range(19))


def test_the_bias_table_is_applied_on_the_fly(labels):
    folder, lut = labels
    plain, corrected = (
        LabelDataset(folder, "sgbm", size=SIZE)[0],
        LabelDataset(folder, "sgbm", lut=lut, size=SIZE)[0],
    )
    teacher = LabelReader(folder, ["sgbm"])[0]["sgbm/depth"]
    expected = cv2.resize(apply_lut(teacher, lut), SIZE[::-1], interpolation=cv2.INTER_NEAREST)
    np.testing.assert_allclose(corrected["depth"].numpy(), expected, rtol=1e-3)
    valid = plain["depth"] > 0
    assert torch.equal(corrected["depth"] > 0, valid) and not torch.allclose(
        corrected["depth"], plain["depth"]
    )


def test_loader_workers_and_one_training_step(labels):
    folder, lut = labels
    loader = DataLoader(LabelDataset(folder, "sgbm", lut=lut, size=SIZE), batch_size=2, num_workers=2)
    batches = list(loader)
    assert [len(b["frame_id"]) for b in batches] == [2, 1]
    model = build_student("L").train()
    batch = batches[0]
    terms = MultiScaleLoss()(model(batch["image"]), batch["depth"], batch["labels"])
    terms.total.backward()
    assert torch.isfinite(terms.total) and terms.total > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_requests(labels):
    folder, _ = labels
    with pytest.raises(ValueError, match="input height 100 is not a multiple of 32"):
        LabelDataset(folder, "sgbm", size=(100, 128))
    with pytest.raises(ValueError, match=r"psmnet/shard-00000\.h5: shard is missing"):
        LabelDataset(folder, "psmnet")
    with pytest.raises(ValueError, match="no frame has images and sgbm labels"):
        LabelDataset(folder, "sgbm", seg=None, frame_ids=["2011_09_26/none/0000000000"])
