"""Run a trained student on image files and write its depth and class maps as PNG files.

Per input image ``<stem>`` (written to ``out_dir``, each file atomically: temp file, then rename)::

    <stem>_depth.png     colour-mapped depth (turbo_r: near red, far blue) with a metre colour bar
                         over the 2nd-98th percentiles (``labelgen.depth_figure``)
    <stem>_depth16.png   uint16 depth, metres x 256 (the KITTI convention; 0 = no value), image-sized
    <stem>_classes.png   class map in the Cityscapes palette, image-sized; a paletted PNG, so its
                         pixel indices are the class ids (only for a model with the segmentation head)

Depth and classes are predicted at the network input size and resized back to each image's own
resolution (depth bilinear, classes nearest) before they are written. The depth stays within the
range the model was trained on (``ModelConfig.output_range``: the network clamps its output there).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from edgedepth.common import check_writable, write_bytes_atomic
from edgedepth.labelgen import IMAGE_SUFFIXES, depth_figure, depth_to_png16, read_image, seg_palette
from edgedepth.student.model import MAX_BATCH_SIZE, load_student, preprocess_image


@dataclass(frozen=True)
class Prediction:
    """What was written for one image, and the range of its predicted depth (metres, image-sized)."""

    source: Path
    depth_png: Path
    depth16_png: Path
    classes_png: Path | None
    depth_min: float
    depth_median: float
    depth_max: float

    @property
    def outputs(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.depth_png, self.depth16_png, self.classes_png) if p is not None)


FEW_TRAINING_FRAMES = 10
"""A student trained on fewer frames gets a note: one frame teaches the network where things are, and
on other images it draws stripes at the borders; a student trained on 12 scenes drew none
(docs/evaluation.md, "Border stripes"; nothing between was measured)."""


class Predictions(list[Prediction]):
    """The list of :class:`Prediction` (input order), plus ``skipped``: one line per unreadable
    image, and ``notes``: what the user should know about the checkpoint's depth, one line each."""

    def __init__(
        self, predictions: Sequence[Prediction] = (), skipped: Sequence[str] = (), notes: Sequence[str] = ()
    ) -> None:
        super().__init__(predictions)
        self.skipped: list[str] = list(skipped)
        self.notes: list[str] = list(notes)


def few_frames_note(checkpoint: str | Path, trained_frames: int | None) -> str | None:
    """The note for a student trained on fewer than ``FEW_TRAINING_FRAMES`` frames, else None."""
    if trained_frames is None or trained_frames >= FEW_TRAINING_FRAMES:
        return None
    return (
        f"{checkpoint} was trained on {trained_frames} frame(s): on images unlike them its depth is a "
        "guess, often with stripes at the left and right borders (docs/evaluation.md, 'Border stripes'); "
        "train on many frames for real use"
    )


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files of ``inputs``: files as given, folders' .png/.jpg/.jpeg files (sorted, not recursive).

    A path given twice is taken once. A missing input, or no image at all, is a one-line ValueError.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found += images
        elif item.is_file():
            found.append(item)
        else:
            raise ValueError(f"{item}: no such image file or folder")
    first: dict[Path, Path] = {}
    for path in found:
        first.setdefault(path.resolve(), path)  # a path given twice is taken once, where it came first
    unique = list(first.values())
    if not unique:
        names = ", ".join(str(p) for p in inputs) or "(no inputs)"
        raise ValueError(f"no images found in {names} (looked for {', '.join(IMAGE_SUFFIXES)} files)")
    return unique


def output_stems(paths: Sequence[Path]) -> list[str]:
    """One output stem per path: the file stem, or ``<stem>-2``, ``<stem>-3``... for later repeats."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem, n = path.stem, 1
        while stem in used:
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem)
        stems.append(stem)
    return stems


def _png_bytes(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"could not encode a {array.dtype} {array.shape} array as PNG")
    return encoded.tobytes()


def class_palette(num_classes: int) -> np.ndarray:
    """(256, 3) uint8 RGB: Cityscapes colours for ids 0..18, fixed random colours for further ids."""
    palette = seg_palette()
    extra = np.arange(19, min(num_classes, 255))
    if extra.size:
        palette[extra] = np.random.default_rng(19).integers(32, 256, (extra.size, 3), dtype=np.uint8)
    return palette


def _classes_png(classes: np.ndarray, palette: np.ndarray) -> bytes:
    from PIL import Image

    image = Image.fromarray(classes.astype(np.uint8)).convert("P")
    image.putpalette(palette.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _depth_png(plt, depth: np.ndarray, title: str) -> bytes:
    fig = depth_figure(plt, depth, title)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _read_batches(paths: Sequence[Path], batch_size: int, skipped: list[str], bar: tqdm):
    """Lists of (index, image) of at most ``batch_size`` readable images; unreadable ones are skipped."""
    batch: list[tuple[int, np.ndarray]] = []
    for index, path in enumerate(paths):
        try:
            batch.append((index, read_image(path)))
        except ValueError as err:
            message = f"{err}; skipped"
            skipped.append(message)
            warnings.warn(message, stacklevel=3)
            bar.update(1)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_images(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    variant: str | None = None,
    size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    progress: bool = True,
) -> Predictions:
    """Predict depth (and classes) for every image of ``inputs`` and write the PNG files to ``out_dir``.

    ``inputs``: image files and/or folders; a folder contributes its .png/.jpg/.jpeg files (case
    insensitive), sorted by name, not recursively. Outputs are named after the image's stem; when two
    inputs share a stem, the later one (in input order) gets ``<stem>-2``, ``<stem>-3``, ...

    ``size`` (height, width; multiples of 32) overrides the checkpoint's input size; ``variant`` cuts
    the network to a smaller variant. A missing input or no image at all is a one-line ValueError
    raised before the model is loaded; a file that cannot be decoded as an image is skipped with a
    one-line warning (also listed in the result's ``skipped``), and if no image could be read at all
    that is a ValueError. Returns one :class:`Prediction` per written image, in input order.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size must be 1..{MAX_BATCH_SIZE}, got {batch_size}")
    paths = find_images(inputs)
    stems = output_stems(paths)
    out_dir = Path(out_dir)
    check_writable(out_dir / f"{stems[0]}_depth.png")  # before any work, and without creating folders

    # return_classes is honoured only by a model with the segmentation head (ModelConfig.build)
    model, config = load_student(checkpoint, variant, device, return_classes=True)
    seg = config.seg
    if size is not None:
        config = config.with_size((int(size[0]), int(size[1])))  # validates: multiples of 32
    palette = class_palette(config.num_classes)
    trained = config.output_range

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skipped: list[str] = []  # out_dir is made by the first write: a refused run leaves none
    results: list[Prediction] = []
    model_device = next(model.parameters()).device
    with tqdm(total=len(paths), unit="image", disable=not progress) as bar:
        for batch in _read_batches(paths, batch_size, skipped, bar):
            x = torch.stack(
                [preprocess_image(img, config.input_size, config.mean, config.std) for _, img in batch]
            )
            with torch.inference_mode():
                out = model(x.to(model_device))
                depth, classes = out if seg else (out, None)
                finite = torch.isfinite(depth.float()).flatten(1).all(dim=1)
                if not bool(finite.all()):
                    bad = paths[batch[int((~finite).nonzero()[0, 0])][0]]
                    raise ValueError(
                        f"{checkpoint}: the network predicts NaN or infinite depth for {bad}; the "
                        "checkpoint is damaged or its training diverged (nothing written for it)"
                    )
                for k, (index, image) in enumerate(batch):
                    shape = image.shape[:2]
                    full = F.interpolate(
                        depth[k : k + 1].float(), size=shape, mode="bilinear", align_corners=False
                    )
                    depth_np = full[0, 0].cpu().numpy()
                    classes_np = None
                    if classes is not None:
                        grid = F.interpolate(classes[k : k + 1, None].float(), size=shape, mode="nearest")
                        classes_np = grid[0, 0].to(torch.int64).cpu().numpy()
                    results.append(
                        _write_outputs(
                            plt, paths[index], stems[index], out_dir, depth_np, classes_np, palette, trained
                        )
                    )
                    bar.update(1)
    if not results:
        raise ValueError(f"none of the {len(paths)} images could be read ({skipped[0]})")
    note = few_frames_note(checkpoint, config.trained_frames)
    return Predictions(results, skipped, [note] if note else [])


def _write_outputs(
    plt,
    source: Path,
    stem: str,
    out_dir: Path,
    depth: np.ndarray,
    classes: np.ndarray | None,
    palette: np.ndarray,
    trained: tuple[float, float],
) -> Prediction:
    depth16 = write_bytes_atomic(out_dir / f"{stem}_depth16.png", _png_bytes(depth_to_png16(depth)))
    depth_png = write_bytes_atomic(
        out_dir / f"{stem}_depth.png",
        _depth_png(
            plt, depth, f"{source.name}  predicted depth (trained on {trained[0]:g}-{trained[1]:g} m)"
        ),
    )
    classes_png = None
    if classes is not None:
        classes_png = write_bytes_atomic(out_dir / f"{stem}_classes.png", _classes_png(classes, palette))
    return Prediction(
        source=source,
        depth_png=depth_png,
        depth16_png=depth16,
        classes_png=classes_png,
        depth_min=float(depth.min()),
        depth_median=float(np.median(depth)),
        depth_max=float(depth.max()),
    )


__all__ = [
    "FEW_TRAINING_FRAMES",
    "IMAGE_SUFFIXES",
    "Prediction",
    "Predictions",
    "class_palette",
    "find_images",
    "few_frames_note",
    "output_stems",
    "predict_images",
]
