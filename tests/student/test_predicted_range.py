"""Predictions stay in the trained depth range, also on an image the model never saw (issue 22)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from edgedepth.student.evaluate.predict import predict_images
from edgedepth.student.model.checkpoint import load_student, save_checkpoint
from edgedepth.student.model.config import ModelConfig
from edgedepth.student.model.depth_code import g_transform
from edgedepth.student.model.preprocess import preprocess_image

SIZE = (64, 128)
TRAINED = (1.0, 8.0)  # the demo's Motorcycle labels (calib.json depth_range_m)
BORDER = 4  # output columns at each side given the overshoot (the under-supervised border band)


def _overshooting_checkpoint(path: Path, bias_m: float = 3.0, **settings) -> Path:
    """A student whose depth head says 3 m in the interior and G(55 m) on the border columns: what
    the issue's demo checkpoint predicted (2.09 / 2.76 / 55.44 m) where labels were scarce."""
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=SIZE, seg=False, depth_range=TRAINED, **settings)
    model = cfg.build()
    head = model.decoder[-1].depth_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(float(g_transform(torch.tensor(bias_m), *TRAINED)))
    payload = {"model_config": cfg.to_dict(), "model": model.state_dict(), "epoch": 0, "step": 0}
    return save_checkpoint(path, payload)


def _with_border_overshoot(model: torch.nn.Module) -> None:
    """Adds G(55 m) - G(3 m) to the border columns of the depth head's output."""
    extra = float(g_transform(torch.tensor(55.0), *TRAINED) - g_transform(torch.tensor(3.0), *TRAINED))

    def hook(_module, _inputs, out):
        out = out.clone()
        out[..., :BORDER] += extra
        out[..., -BORDER:] += extra
        return out

    model.decoder[-1].depth_head.register_forward_hook(hook)


def _unseen() -> np.ndarray:
    return skdata.astronaut()[::4, ::4].copy()  # never a training frame of the demo


def _predict(checkpoint: Path) -> np.ndarray:
    model, cfg = load_student(checkpoint)
    _with_border_overshoot(model)
    with torch.inference_mode():
        return model(preprocess_image(_unseen(), cfg.input_size, cfg.mean, cfg.std)[None])[0, 0].numpy()


def test_a_border_overshoot_stays_in_the_trained_range(tmp_path: Path) -> None:
    checkpoint = _overshooting_checkpoint(tmp_path / "s.pt", trained_range=TRAINED)
    depth = _predict(checkpoint)
    assert TRAINED[0] <= depth.min() and depth.max() <= TRAINED[1]  # before: 55 m at the borders
    border = np.median(np.concatenate([depth[:, :BORDER], depth[:, -BORDER:]], axis=1))
    interior = np.median(depth[:, BORDER:-BORDER])
    assert interior == pytest.approx(3.0, rel=1e-3)
    assert border / interior <= TRAINED[1] / 3.0 + 1e-4  # before: 55 / 3 = 18


def test_a_checkpoint_without_the_record_is_clamped_to_its_log_space(tmp_path: Path) -> None:
    checkpoint = _overshooting_checkpoint(tmp_path / "old.pt")  # trained_range None: before the record
    assert load_student(checkpoint)[1].output_range == TRAINED  # the data's range, = depth_range
    assert _predict(checkpoint).max() <= TRAINED[1]
    legacy = ModelConfig(input_size=SIZE)  # the KITTI default log space 4-80 m: labels were 1-80 m
    assert legacy.output_range == (1.0, 80.0)
    assert ModelConfig(input_size=SIZE, trained_range=(0.0, 20.0)).output_range == (1e-3, 20.0)


def test_trained_range_round_trips_and_is_checked() -> None:
    cfg = ModelConfig(input_size=SIZE, depth_range=TRAINED, trained_range=(1, 8))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="trained_range .*0 <= min < max"):
        ModelConfig(input_size=SIZE, trained_range=(8.0, 1.0))


def test_predict_images_on_an_unseen_image(tmp_path: Path) -> None:
    """End to end: a head saying 55 m everywhere writes maps and figures within the trained range."""
    checkpoint = _overshooting_checkpoint(tmp_path / "s.pt", trained_range=TRAINED, bias_m=55.0)
    image = tmp_path / "astronaut.png"
    cv2.imwrite(str(image), cv2.cvtColor(_unseen(), cv2.COLOR_RGB2BGR))
    (done,) = predict_images(checkpoint, [image], tmp_path / "out", progress=False)
    assert TRAINED[0] <= done.depth_min <= done.depth_max <= TRAINED[1]  # before: 55 m
    depth16 = cv2.imread(str(done.depth16_png), cv2.IMREAD_UNCHANGED)
    assert depth16.shape == _unseen().shape[:2] and depth16.max() <= TRAINED[1] * 256 + 1


@pytest.mark.parametrize("frames, noted", [(1, True), (9, True), (10, False), (None, False)])
def test_predict_says_when_the_student_was_trained_on_few_frames(tmp_path: Path, frames, noted) -> None:
    """A one-frame student draws stripes at the borders of other images (docs/evaluation.md, "Border
    stripes"): `student predict` says so in one line on stderr, for a checkpoint that records fewer
    than 10 training frames; one from before the record (None) gets no note."""
    from click.testing import CliRunner

    from edgedepth import cli

    checkpoint = _overshooting_checkpoint(tmp_path / "s.pt", trained_range=TRAINED, trained_frames=frames)
    image = tmp_path / "astronaut.png"
    cv2.imwrite(str(image), cv2.cvtColor(_unseen(), cv2.COLOR_RGB2BGR))
    result = CliRunner().invoke(
        cli.main,
        ["student", "predict", str(checkpoint), str(image), "--out", str(tmp_path / "o"), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    note = (
        f"note: {checkpoint} was trained on {frames} frame(s): on images unlike them its depth is a guess, "
        "often with stripes at the left and right borders (docs/evaluation.md, 'Border stripes'); train on "
        "many frames for real use\n"
    )
    assert (note in result.stderr) is noted, result.stderr
    assert ("trained on" in result.stderr) is noted
    assert result.stdout == f"{tmp_path / 'o'}: 1 images predicted, 0 skipped\n"


def test_trained_frames_round_trips_and_is_checked() -> None:
    cfg = ModelConfig(input_size=SIZE, trained_frames=12)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (0, -1, 2.5, "12", True):
        with pytest.raises(
            ValueError, match="model setting trained_frames must be a whole number in 1..100000000"
        ):
            ModelConfig(input_size=SIZE, trained_frames=bad)
