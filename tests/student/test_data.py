"""Student training samples from a label folder: resizing, the bias table on the fly, failed
frames left out, multi-process loading, and one training step through the multi-task loss."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from edgedepth.calib.fit import fit_from_labels
from edgedepth.calib.lut import apply_lut
from edgedepth.labelgen.kitti import find_frames
from edgedepth.labelgen.plan import load_plan, plan_shards, write_plan
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.teachers.deeplab_vainf import build_vainf_deeplab
from edgedepth.student.model.build import build_student
from edgedepth.student.model.preprocess import MEAN, STD
from edgedepth.student.train.data import (
    LabelDataset,
    check_lut,
    colour_jitter,
    find_sources,
    split_by_drive,
)
from edgedepth.student.train.losses import MultiScaleLoss
from tests.kitti_tree import make_kitti_tree

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


def test_spawned_loader_workers_read_the_same_samples(labels):
    folder, lut = labels
    data = LabelDataset(folder, "sgbm", lut=lut, size=SIZE)
    loader = DataLoader(data, batch_size=3, num_workers=2, multiprocessing_context="spawn")
    batch = next(iter(loader))
    direct = [data[i] for i in range(3)]
    assert torch.equal(batch["image"], torch.stack([d["image"] for d in direct]))
    assert torch.equal(batch["depth"], torch.stack([d["depth"] for d in direct]))


def test_augmentation_flips_labels_with_the_image_and_jitters_only_the_image(labels):
    folder, _ = labels
    data = LabelDataset(folder, "sgbm", size=SIZE, augment=True)
    plain = data[0]
    seeds = range(40)
    samples = [data[(0, s)] for s in seeds]
    flipped = [s for s in samples if s["flipped"]]
    kept = [s for s in samples if not s["flipped"]]
    assert 8 < len(flipped) < 32  # p = 0.5
    for sample in flipped:
        assert torch.equal(sample["depth"], plain["depth"].flip(-1))
        assert torch.equal(sample["labels"], plain["labels"].flip(-1))
    for sample in kept:
        assert torch.equal(sample["depth"], plain["depth"]) and torch.equal(sample["labels"], plain["labels"])
        assert not torch.equal(sample["image"], plain["image"])  # jittered
    again = data[(0, 7)]
    assert torch.equal(again["image"], samples[7]["image"])  # the seed decides everything
    # jitter keeps the image's structure: flipped back, it correlates with the plain image
    back = flipped[0]["image"].flip(-1).flatten()
    assert torch.corrcoef(torch.stack([back, plain["image"].flatten()]))[0, 1] > 0.8


def test_colour_jitter_stays_in_range_and_is_identity_at_unit_factors():
    rng = np.random.default_rng(0)
    image = rng.random((16, 24, 3), dtype=np.float32)
    out = colour_jitter(image, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1

    class Unit:
        def uniform(self, low, high):
            return (low + high) / 2  # 1.0 for the factors, 0 for the hue

    np.testing.assert_allclose(colour_jitter(image, Unit()), image, atol=2e-3)


def test_validation_split_is_by_whole_drives(labels):
    folder, _ = labels
    plan = load_plan(folder)
    train, val, drives = split_by_drive(plan, ["2011_09_26_drive_0002"])
    assert drives == ["2011_09_26_drive_0002_sync"]
    assert val and all("drive_0002" in f for f in val) and not any("drive_0002" in f for f in train)
    assert sorted(train + val) == sorted(plan.frame_ids)
    assert split_by_drive(plan, None, 0.0)[1] == []
    _, val, drives = split_by_drive(plan, None, 0.3)
    assert len(drives) == 1 and all(drives[0] in f for f in val)
    with pytest.raises(
        ValueError, match="--val-drives: 2011_09_26_drive_0009_sync is not a drive of the plan"
    ):
        split_by_drive(plan, ["2011_09_26_drive_0009"])
    with pytest.raises(ValueError, match="every drive of the plan is held out"):
        split_by_drive(plan, ["2011_09_26_drive_0001", "2011_09_26_drive_0002"])


def test_a_table_that_does_not_describe_the_labels_is_refused(labels):
    folder, lut = labels
    sources = find_sources(folder, "sgbm")
    check_lut(lut, sources, (1.0, 80.0))  # fitted on these sgbm shards, 1-80 m: accepted
    other = replace(lut, source={**lut.source, "teacher_stage": "psmnet"})
    with pytest.raises(ValueError, match="lut: fitted for teacher 'psmnet', but the depth labels are 'sgbm'"):
        check_lut(other, sources, (1.0, 80.0))
    narrow = replace(lut, settings={**lut.settings, "max_depth": 40.0})
    with pytest.raises(
        ValueError, match="fitted on teacher depths 1-40 m, but the labels are used over 1-80 m"
    ):
        check_lut(narrow, sources, (1.0, 80.0))
    foreign = replace(lut, source={**lut.source, "checkpoint_sha256": ["ab" * 32]})
    with pytest.raises(ValueError, match="fitted on another sgbm checkpoint"):
        check_lut(foreign, sources, (1.0, 80.0))
    with pytest.raises(ValueError, match="the LiDAR is the reference"):
        check_lut(lut, find_sources(folder, "lidar"), (1.0, 80.0))


def test_missing_stages_are_named(labels, tmp_path):
    folder, _ = labels
    with pytest.raises(
        ValueError, match=r"psmnet: no such label stage \(the depth labels\); run `edgedepth labelgen run"
    ):
        find_sources(folder, "psmnet")
    with pytest.raises(
        ValueError, match="images/shard-00000.h5: no `depth` dataset; images is not a depth stage"
    ):
        find_sources(folder, "images")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "plan.json").write_text((folder / "plan.json").read_text())
    with pytest.raises(ValueError, match=r"bare/images: no such label stage \(the student's input images\)"):
        find_sources(bare, "sgbm")
    assert find_sources(folder, "sgbm", seg_stage=None).seg_stage is None


def test_crop_zoom_cuts_the_same_window_from_image_and_labels(tmp_path):
    """With crop_zoom the sample is a random window of 1/z of each side, resized, its depth divided
    by z: image, depth and classes stay aligned."""
    from edgedepth.student.train.data import crop_window
    from tests.student.labelfolder import make_label_folder

    labels = make_label_folder(tmp_path, {"2011_09_26_drive_0001_sync": 1}, lidar=False)
    plain = LabelDataset(
        labels, "synth", seg="seg", size=(64, 128), augment=True, mean=(0, 0, 0), std=(1, 1, 1)
    )
    zoomed = LabelDataset(labels, "synth", seg="seg", size=(64, 128), augment=True, crop_zoom=2.0,
                          mean=(0, 0, 0), std=(1, 1, 1))  # fmt: skip
    for seed in range(5):
        rng = np.random.default_rng(seed)  # the sample's draws: flip, then the window (then the jitter)
        flip = bool(rng.random() < 0.5)
        zoom = rng.uniform(1.0, 2.0)
        window = crop_window((64, 128), zoom, rng)
        top, left, h, w = window
        sample, full = zoomed[(0, seed)], plain[(0, seed)]
        assert 32 <= h <= 64 and 64 <= w <= 128
        depth = sample["depth"].numpy()
        reference = LabelDataset(labels, "synth", seg="seg", size=(64, 128), full_res=True)[0][
            "depth"
        ].numpy()
        expected = cv2.resize(
            reference[top : top + h, left : left + w], (128, 64), interpolation=cv2.INTER_NEAREST
        )
        expected = expected / np.float32(zoom)  # a z-times zoom looks z times closer
        np.testing.assert_array_equal(depth, expected[:, ::-1] if flip else expected)
        assert sample["labels"].shape == (64, 128) and full["depth"].shape == (64, 128)
    with pytest.raises(ValueError, match="crop zoom must be at least 1"):
        LabelDataset(labels, "synth", crop_zoom=0.5)


def test_window_shows_the_network_an_aligned_random_part_of_the_sample_at_its_own_scale(tmp_path):
    """With window w the sample is a window of w of each side (rounded down to the stride) of the
    sample it would otherwise be, the same one for image, depth and classes, at the same scale (the
    depth unchanged), at a position that varies with the seed; evaluation samples stay whole."""
    from edgedepth.student.train.data import window_size
    from tests.student.labelfolder import make_label_folder

    labels = make_label_folder(tmp_path, {"2011_09_26_drive_0001_sync": 1}, lidar=False)
    common = {"seg": "seg", "size": (64, 128), "augment": True, "mean": (0, 0, 0), "std": (1, 1, 1)}
    whole = LabelDataset(labels, "synth", **common)
    windowed = LabelDataset(labels, "synth", window=0.6, **common)
    assert window_size((64, 128), 0.6) == (32, 64) and window_size((64, 128), 0.1) == (32, 32)
    offsets = set()
    for seed in range(8):
        part, full = windowed[(0, seed)], whole[(0, seed)]
        assert part["image"].shape == (3, 32, 64) and part["depth"].shape == part["labels"].shape == (32, 64)
        depth, image = full["depth"].numpy(), full["image"].numpy()
        found = [
            (top, left)
            for top in range(64 - 32 + 1)
            for left in range(128 - 64 + 1)
            if np.array_equal(depth[top : top + 32, left : left + 64], part["depth"].numpy())
            and np.array_equal(image[:, top : top + 32, left : left + 64], part["image"].numpy())
        ]
        assert len(found) == 1, (seed, found)
        top, left = found[0]
        np.testing.assert_array_equal(
            full["labels"].numpy()[top : top + 32, left : left + 64], part["labels"]
        )
        offsets.add(found[0])
    assert len(offsets) >= 6  # the position is drawn, not fixed
    assert windowed[0]["depth"].shape == (64, 128)  # no seed (validation): the whole sample
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"window must be a share of each side in \(0, 1\]"):
            LabelDataset(labels, "synth", window=share)
