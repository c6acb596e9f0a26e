"""Model and training settings are checked at the door: type, range and finiteness, before anything
is sized by them (a crafted checkpoint asking for 1e9 classes must not allocate 96 GB)."""

from __future__ import annotations

import math
import resource
import time

import pytest
import torch

from edgedepth.student.model.checkpoint import check_weights
from edgedepth.student.model.config import (
    MAX_BATCH_SIZE,
    MAX_NUM_CLASSES,
    MAX_TOTAL_STEPS,
    ModelConfig,
    TrainConfig,
)
from edgedepth.student.train.sampler import EpochSampler, epoch_order
from edgedepth.student.train.validation import validation_subset

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variant": 4}, "unknown model setting variant 4; choose one of L, M, S, XS"),
        ({"variant": "XL"}, "unknown model setting variant 'XL'"),
        (
            {"num_classes": 10**9},
            f"num_classes must be a whole number in 1..{MAX_NUM_CLASSES}, got 1000000000",
        ),
        ({"num_classes": 2.5}, "num_classes must be a whole number"),
        ({"num_classes": True}, "num_classes must be a whole number"),
        ({"seg": "yes"}, "model setting seg must be true or false"),
        ({"depth_space": ["log"]}, "unknown model setting depth_space ['log']"),
        ({"arch": None}, "unknown model setting arch None"),
        ({"encoder_style": 3}, "unknown model setting encoder_style 3"),
        ({"input_size": [64, 10**9]}, "input_size [64, 1000000000]: each side must be 1..8192 pixels"),
        ({"input_size": [64]}, "input_size must be 2 whole numbers"),
        ({"input_size": "64x96"}, "input_size must be 2 whole numbers"),
        ({"input_size": [64.5, 96]}, "input_size must be 2 whole numbers"),
        ({"input_size": [-64, 96]}, "each side must be 1..8192"),
        ({"input_size": [64, 100]}, "input width 100 is not a multiple of 32"),
        ({"std": [0.2, 0.0, 0.2]}, "model setting std [0.2, 0.0, 0.2]: every value must be positive"),
        ({"std": [0.2, NAN, 0.2]}, "model setting std must be 3 finite numbers"),
        ({"std": [0.2, INF, 0.2]}, "model setting std must be 3 finite numbers"),
        ({"mean": [INF, 0.4, 0.4]}, "model setting mean must be 3 finite numbers"),
        ({"mean": {"r": 0.4}}, "model setting mean must be 3 finite numbers"),
        (
            {"depth_range": [80.0, 1.0]},
            "depth_range [80.0, 1.0]: must be (min, max) metres with 0 < min < max",
        ),
        ({"depth_range": [1.0, INF]}, "model setting depth_range must be 2 finite numbers"),
        ({"depth_range": [0.0, 80.0]}, "0 < min < max"),
    ],
)
def test_every_model_setting_is_checked_and_named(change, message):
    settings = {**ModelConfig(input_size=(64, 96)).to_dict(), **change}
    with pytest.raises(ValueError) as info:
        ModelConfig.from_dict(settings, source="ckpt.pt")
    assert str(info.value).startswith("ckpt.pt: ") and message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_a_crafted_class_count_is_refused_before_any_allocation():
    """1e9 classes would be 96 GB of segmentation-head weights; refused at once (microseconds; the
    5 s bound leaves room for a loaded CI machine), with no growth of the process's peak memory."""
    settings = {**ModelConfig().to_dict(), "num_classes": 10**9}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig.from_dict(settings, source="ckpt.pt")
    assert time.perf_counter() - started < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 50_000  # KiB


def test_settings_of_other_shapes_are_one_line_errors():
    with pytest.raises(ValueError, match="ckpt.pt: model settings are a list, not a mapping"):
        ModelConfig.from_dict([1, 2], source="ckpt.pt")
    with pytest.raises(ValueError, match="ckpt.pt: unknown model settings 5, colour"):
        ModelConfig.from_dict({5: 1, "colour": "red"}, source="ckpt.pt")
    good = ModelConfig(input_size=(64, 96), depth_range=(1.3, 3.0))
    assert ModelConfig.from_dict(good.to_dict()) == good  # lists from JSON read back as tuples


def test_non_finite_weights_and_buffers_are_refused_naming_the_tensor():
    state = ModelConfig(variant="XS", input_size=(64, 96)).build().state_dict()
    check_weights(state, "ok.pt")
    for key, value in (("encoder.features.0.0.weight", NAN), ("encoder.features.0.1.running_var", INF)):
        bad = {k: v.clone() for k, v in state.items()}
        bad[key].view(-1)[0] = value
        with pytest.raises(ValueError, match=rf"bad\.pt: tensor {key} holds 1 NaN or infinite values"):
            check_weights(bad, "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: model entry w is a float, not a tensor"):
        check_weights({"w": 1.0}, "bad.pt")
    check_weights({"n": torch.tensor(3)}, "ints.pt")  # integer buffers (num_batches_tracked) hold no NaN


def test_training_sizes_are_bounded_at_the_door(tmp_path):
    base = {"labels_dir": str(tmp_path), "out_dir": str(tmp_path / "run")}
    with pytest.raises(ValueError, match=f"batch size must be 1..{MAX_BATCH_SIZE}, got 1000000000"):
        TrainConfig(**base, batch_size=10**9)
    with pytest.raises(ValueError, match="--epochs 1000 x --iters-per-epoch 1000000 = 1,000,000,000 steps"):
        TrainConfig(**base, epochs=1000, iters_per_epoch=10**6)
    with pytest.raises(ValueError, match="val max frames must be 0"):
        TrainConfig(**base, val_max_frames=-1)
    for window in (0.0, 1.01):
        with pytest.raises(ValueError, match=r"window must be in \(0, 1\] \(1 = the whole input\)"):
            TrainConfig(**base, window=window)
    assert TrainConfig(**base, epochs=10, iters_per_epoch=MAX_TOTAL_STEPS // 10).val_max_frames == 200


def test_the_sample_order_is_lazy_and_unchanged():
    """An epoch of 10^7 steps of 1024 samples starts at once (the old order array was 80 GB), and
    the lazy order is the order of ``epoch_order``, rank by rank (the 5 s bound leaves room for a
    loaded CI machine; building the old array would take minutes or fail)."""
    started = time.perf_counter()
    first = next(iter(EpochSampler(3, 10**7, MAX_BATCH_SIZE, seed=1)))
    assert time.perf_counter() - started < 5.0 and 0 <= first[0] < 3
    for world in (1, 2):
        order = epoch_order(5, 4 * 3 * world, seed=7, epoch=2)
        for rank in range(world):
            sampler = EpochSampler(5, 4, 3, seed=7, rank=rank, world_size=world)
            sampler.set_epoch(2)
            rows = [row for row, _ in sampler]
            want = [int(order[s * 3 * world + rank * 3 + i]) for s in range(4) for i in range(3)]
            assert rows == want


def test_the_validation_subset_is_capped_seeded_and_in_order():
    frames = [f"drive/{i:04d}" for i in range(500)]
    picked = validation_subset(frames, 200, seed=3)
    assert len(picked) == 200 and len(set(picked)) == 200
    assert picked == sorted(picked), "kept in the frames' own order"
    assert picked == validation_subset(frames, 200, seed=3), "the same frames every time"
    assert picked != validation_subset(frames, 200, seed=4)
    assert (
        validation_subset(frames, 0, seed=3) == frames and validation_subset(frames[:5], 200, 3) == frames[:5]
    )
