"""edgedepth.student.evaluate.predict on real photographs (scikit-image) with a randomly initialised student checkpoint."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata
from torch import nn

from edgedepth.labelgen.inspect import seg_palette
from edgedepth.student.evaluate.predict import Prediction, find_images, output_stems, predict_images
from edgedepth.student.model.checkpoint import load_student, save_checkpoint
from edgedepth.student.model.config import ModelConfig
from edgedepth.student.model.preprocess import preprocess_image

SIZE = (64, 128)  # network input (height, width)


def _checkpoint(path: Path, photos: dict[str, np.ndarray], **settings) -> Path:
    """Random weights; BatchNorm statistics measured on ``photos``, so the maps vary over an image
    (a freshly initialised network predicts a nearly constant depth and a single class)."""
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=SIZE, **settings)
    model = cfg.build()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one batch sets the statistics
            module.reset_running_stats()
    x = torch.stack([preprocess_image(rgb, SIZE, cfg.mean, cfg.std) for rgb in photos.values()])
    with torch.no_grad():
        model.train().forward_blocks(x)
    return save_checkpoint(
        path, {"model_config": cfg.to_dict(), "model": model.state_dict(), "epoch": 0, "step": 0}
    )


def _write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    left = skdata.stereo_motorcycle()[0]  # 500x741 RGB
    astronaut = skdata.astronaut()  # 512x512 RGB
    return {"motorcycle": left[::2, ::2].copy(), "astronaut": astronaut[::4, ::4].copy()}


@pytest.fixture(scope="module")
def seg_checkpoint(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, np.ndarray]) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt", photos)


def _reference(checkpoint: Path, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's own depth (and classes), resized to the image, computed here independently."""
    model, cfg = load_student(checkpoint, return_classes=ModelConfig.from_dict(_cfg(checkpoint)).seg)
    x = preprocess_image(image, cfg.input_size, cfg.mean, cfg.std)[None]
    with torch.no_grad():
        out = model(x)
    depth, classes = out if cfg.seg else (out, None)
    shape = image.shape[:2]
    depth = F.interpolate(depth, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    if classes is not None:
        classes = F.interpolate(classes[:, None].float(), size=shape, mode="nearest")[0, 0].long().numpy()
    return depth, classes


def _cfg(checkpoint: Path) -> dict:
    from edgedepth.student.model.checkpoint import read_checkpoint

    return read_checkpoint(checkpoint)["model_config"]


def test_outputs_match_the_model(tmp_path: Path, photos: dict, seg_checkpoint: Path) -> None:
    inputs = [_write_rgb(tmp_path / "in" / f"{name}.png", rgb) for name, rgb in photos.items()]
    out = tmp_path / "out"
    results = predict_images(seg_checkpoint, inputs, out, batch_size=2, progress=False)
    assert [r.source for r in results] == inputs and results.skipped == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}_{kind}.png" for name in photos for kind in ("depth", "depth16", "classes")
    )
    palette = seg_palette()
    for result, (name, rgb) in zip(results, photos.items(), strict=True):
        assert isinstance(result, Prediction) and result.source.stem == name
        depth, classes = _reference(seg_checkpoint, rgb)
        assert depth.std() > 0.05 and len(np.unique(classes)) > 3  # the maps vary: the checks below bite
        png16 = cv2.imread(str(result.depth16_png), cv2.IMREAD_UNCHANGED)
        assert png16.dtype == np.uint16 and png16.shape == rgb.shape[:2]
        assert np.abs(png16 / 256.0 - depth).max() <= 0.5 / 256 + 1e-4  # rounding to 1/256 m
        assert result.depth_min == pytest.approx(depth.min(), rel=1e-4)
        assert result.depth_median == pytest.approx(np.median(depth), rel=1e-4)
        assert result.depth_max == pytest.approx(depth.max(), rel=1e-4)
        assert result.depth_min <= result.depth_median <= result.depth_max
        colours = cv2.cvtColor(cv2.imread(str(result.classes_png), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert colours.shape == rgb.shape
        np.testing.assert_array_equal(colours, palette[classes])
        np.testing.assert_array_equal(np.asarray(Image.open(result.classes_png)), classes)  # paletted: ids
        preview = cv2.imread(str(result.depth_png), cv2.IMREAD_COLOR)
        assert preview is not None and preview.ndim == 3 and preview.shape[0] > 100 and preview.shape[1] > 400
        assert preview.std() > 10  # colour-mapped, not blank
        assert result.outputs == (result.depth_png, result.depth16_png, result.classes_png)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_folders_and_shared_stems(tmp_path: Path, photos: dict, seg_checkpoint: Path) -> None:
    rgb = photos["astronaut"]
    a = _write_rgb(tmp_path / "a" / "frame.png", rgb)
    _write_rgb(tmp_path / "a" / "other.JPG", rgb)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    _write_rgb(tmp_path / "a" / "sub" / "deep.png", rgb)  # folders are not searched recursively
    b = _write_rgb(tmp_path / "b" / "frame.png", photos["motorcycle"])
    assert find_images([tmp_path / "a", b, a]) == [a, tmp_path / "a" / "other.JPG", b]
    results = predict_images(
        seg_checkpoint, [tmp_path / "a", tmp_path / "b"], tmp_path / "out", progress=False
    )
    assert [r.depth16_png.name for r in results] == [
        "frame_depth16.png",
        "other_depth16.png",
        "frame-2_depth16.png",
    ]
    assert (
        cv2.imread(str(results[2].depth16_png), cv2.IMREAD_UNCHANGED).shape == photos["motorcycle"].shape[:2]
    )
    assert output_stems([Path("x/a.png"), Path("y/a.png"), Path("a-2.png"), Path("z/a.jpg")]) == [
        "a",
        "a-2",
        "a-2-2",
        "a-3",
    ]


def test_size_and_variant(tmp_path: Path, photos: dict, seg_checkpoint: Path) -> None:
    rgb = photos["motorcycle"]
    path = _write_rgb(tmp_path / "m.png", rgb)
    (result,) = predict_images(
        seg_checkpoint, [path], tmp_path / "out", variant="S", size=(96, 160), progress=False
    )
    assert cv2.imread(str(result.depth16_png), cv2.IMREAD_UNCHANGED).shape == rgb.shape[:2]
    with pytest.raises(ValueError, match="multiple"):
        predict_images(seg_checkpoint, [path], tmp_path / "out", size=(100, 160), progress=False)


def test_depth_only_checkpoint_writes_no_class_map(tmp_path: Path, photos: dict) -> None:
    checkpoint = _checkpoint(tmp_path / "depth.pt", photos, seg=False)
    path = _write_rgb(tmp_path / "in" / "m.png", photos["motorcycle"])
    (result,) = predict_images(checkpoint, [path], tmp_path / "out", progress=False)
    assert result.classes_png is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m_depth.png", "m_depth16.png"]
    depth, _ = _reference(checkpoint, photos["motorcycle"])
    png16 = cv2.imread(str(result.depth16_png), cv2.IMREAD_UNCHANGED)
    assert np.abs(png16 / 256.0 - depth).max() <= 0.5 / 256 + 1e-4


def test_no_images(tmp_path: Path, seg_checkpoint: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="no images found") as err:
        predict_images(seg_checkpoint, [tmp_path / "empty"], tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no such image file or folder"):
        predict_images(seg_checkpoint, [tmp_path / "missing.png"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_unreadable_image_is_skipped(tmp_path: Path, photos: dict, seg_checkpoint: Path) -> None:
    bad = tmp_path / "in" / "0_broken.png"
    _write_rgb(tmp_path / "in" / "1_good.png", photos["astronaut"])
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.warns(UserWarning, match="0_broken.png: not a readable image"):
        results = predict_images(seg_checkpoint, [tmp_path / "in"], tmp_path / "out", progress=False)
    assert [r.source.name for r in results] == ["1_good.png"]
    assert (
        len(results.skipped) == 1 and "0_broken.png" in results.skipped[0] and "\n" not in results.skipped[0]
    )
    assert not list((tmp_path / "out").glob("0_broken*"))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 images could be read"):
        predict_images(seg_checkpoint, [bad], tmp_path / "out2", progress=False)


def test_not_a_student_checkpoint(tmp_path: Path, photos: dict) -> None:
    path = _write_rgb(tmp_path / "m.png", photos["astronaut"])
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match="not an edgedepth student checkpoint") as err:
        predict_images(other, [path], tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError) as err:
        predict_images(garbage, [path], tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
