"""Middlebury 2005/2006 stereo scenes (third size) -> a rig tree with depth ground truth and simulated LiDAR.

Source layout: ``<src>/<Scene>/view1.png`` (left), ``view5.png`` (right), ``disp1.png`` (the left
view's disparity x 3 as uint8, 0 = unknown) and, optionally, ``dmin.txt`` (the scene's disparity
offset in full-size pixels). The capture rig: focal 3740 px at full size, baseline 160 mm between
views 1 and 5, principal point at the image centre.

Written per scene (one frame, ``view1``)::

    OUT/<Scene>/left/view1.png         view1.png, byte for byte
    OUT/<Scene>/right/view1.png        view5.png, byte for byte
    OUT/<Scene>/depth_gt/view1.png     Z = fx * B / (disp / 3 + dmin / 3), metres x 256, 0 = unknown
    OUT/<Scene>/lidar/view1.npy        a simulated 64-beam scan of that depth (edgedepth.labelgen.simulated_lidar)
    OUT/<Scene>/calib.json             fx = fy = 3740 / 3, centre, 0.16 m, doffs_px = dmin / 3, ...
    OUT/splits/train.txt, heldout.txt  the fixed public split, for the scenes present in OUT

The 2006 scenes carry no ``dmin``: without a ``dmin.txt`` the nominal 200 px (full size) is used,
so the depths are a consistent transform of the real disparity, not surveyed metric depth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edgedepth.labelgen.importers.writer import ImportReport, RigWriter, calibration_json
from edgedepth.labelgen.rig import CALIB_FILE
from edgedepth.labelgen.simulated_lidar import AZIMUTH_STEP_DEG, BEAMS, scanner_transform, simulate_scan

FOCAL_FULL_PX = 3740.0
BASELINE_M = 0.160
SCALE = 3  # the third-size release: images and disparities at 1/3 of full size; disp1.png = d * 3
NOMINAL_DMIN_FULL_PX = 200.0
FRAME = "view1"
SOURCE_FILES = ("view1.png", "view5.png", "disp1.png")
HELDOUT = ("Aloe", "Baby2", "Bowling1", "Cloth3", "Lampshade1", "Rocks2")
TRAINING = ("Baby1", "Baby3", "Bowling2", "Cloth1", "Cloth2", "Cloth4", "Flowerpots", "Lampshade2",
            "Midd1", "Midd2", "Monopoly", "Plastic", "Rocks1", "Wood1", "Wood2")  # fmt: skip
VALIDATION = TRAINING[2::5]
"""Bowling2, Lampshade2, Rocks1: every fifth training scene by name from the third, for choosing
settings and checkpoints (``student train/ablate --val-frames``); FIT trains."""
FIT = tuple(name for name in TRAINING if name not in VALIDATION)
SPLITS = {
    "splits/train.txt": TRAINING,
    "splits/heldout.txt": HELDOUT,
    "splits/fit.txt": FIT,
    "splits/val.txt": VALIDATION,
}
_SPLIT_NOTES = {
    "train": "the fixed split's training scenes (fit + val)",
    "heldout": "the fixed split's held-out scenes: never tune settings on them",
    "fit": "the training scenes less the validation ones",
    "val": "every fifth training scene by name from the third: choose settings and checkpoints here",
}


def _scene_dirs(src: Path, scenes: Sequence[str] | None) -> list[Path]:
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: Middlebury folder not found")
    if scenes:
        dirs = [src / name for name in scenes]
    else:
        dirs = sorted(p for p in src.iterdir() if (p / SOURCE_FILES[0]).is_file())
        if not dirs:
            raise ValueError(
                f"{src}: not a Middlebury 2005/2006 folder (no <Scene>/{', '.join(SOURCE_FILES)})"
            )
    for scene in dirs:
        missing = [name for name in SOURCE_FILES if not (scene / name).is_file()]
        if missing:
            raise ValueError(f"{scene}: not a Middlebury scene (no {', '.join(missing)})")
    return dirs


def read_dmin(scene: Path, default_full_px: float) -> tuple[float, str]:
    """The scene's dmin in full-size pixels and where it came from (``dmin.txt`` or nominal)."""
    path = scene / "dmin.txt"
    if not path.is_file():
        return float(default_full_px), "nominal"
    text = path.read_text().strip()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{path}: expected one number (dmin in full-size pixels), got {text[:40]!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{path}: dmin {value:g} px is not a finite number >= 0")
    return value, "dmin.txt"


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"{path}: not a readable image (corrupt or truncated?)")
    return image


def scene_depth(disp_code: np.ndarray, fx: float, doffs: float) -> np.ndarray:
    """Depth in metres (float32, 0 = unknown) from disp1.png's values (disparity x 3, third size)."""
    known = disp_code > 0
    depth = np.zeros(disp_code.shape, np.float32)
    depth[known] = fx * BASELINE_M / (disp_code[known].astype(np.float64) / SCALE + doffs)
    return depth


def depth_limits(fx: float, doffs: float) -> tuple[float, float]:
    """[min, max] metres that the 8-bit encoding can express (disparity 255/3 and 1/3 px), widened to
    0.1 m steps."""
    near = fx * BASELINE_M / (255 / SCALE + doffs)
    far = fx * BASELINE_M / (1 / SCALE + doffs)
    return round(math.floor(near * 10) / 10, 1), round(math.ceil(far * 10) / 10, 1)


def _import_scene(scene: Path, writer: RigWriter, dmin_px_full: float) -> None:
    left_path, right_path, disp_path = (scene / name for name in SOURCE_FILES)
    left, right = _read(left_path, cv2.IMREAD_COLOR), _read(right_path, cv2.IMREAD_COLOR)
    disp = _read(disp_path, cv2.IMREAD_UNCHANGED)
    if left.shape != right.shape:
        raise ValueError(
            f"{right_path}: {right.shape[1]}x{right.shape[0]} differs from {left_path.name}'s "
            f"{left.shape[1]}x{left.shape[0]}"
        )
    if disp.dtype != np.uint8 or disp.shape != left.shape[:2]:
        raise ValueError(
            f"{disp_path}: expected an 8-bit single-channel {left.shape[1]}x{left.shape[0]} disparity map, "
            f"got {disp.dtype} of shape {disp.shape}"
        )
    dmin_full, dmin_source = read_dmin(scene, dmin_px_full)
    height, width = disp.shape
    fx, doffs = FOCAL_FULL_PX / SCALE, dmin_full / SCALE
    cx, cy = (width - 1) / 2, (height - 1) / 2
    depth = scene_depth(disp, fx, doffs)
    t_cam_lidar = scanner_transform()
    points = simulate_scan(depth, cv2.cvtColor(left, cv2.COLOR_BGR2GRAY), fx, cx, cy, t_cam_lidar)
    name = scene.name
    writer.copy(name, "left", f"{FRAME}.png", left_path)
    writer.copy(name, "right", f"{FRAME}.png", right_path)
    writer.depth(name, "depth_gt", FRAME, depth)
    writer.points(name, FRAME, points)
    notes = {
        "source": (
            f"Middlebury 2006 stereo (Scharstein & Pal, CVPR 2007), scene {name}, third size: view1 = left, "
            f"view5 = right; focal 3740/3 px, baseline 0.160 m, principal point at the image centre; "
            f"dmin {dmin_full:g} px at full size ({dmin_source}), doffs_px = dmin / 3"
        ),
        "depth_note": (
            "depth_gt = fx * baseline_m / (disp1 / 3 + doffs_px): a consistent transform of the real "
            "disparity"
            + (" with a nominal dmin, not surveyed metric depth" if dmin_source == "nominal" else "")
        ),
        "lidar_simulation": (
            f"simulated from depth_gt (edgedepth.labelgen.simulated_lidar): {BEAMS} beams over the vertical field of "
            f"view, one return every {AZIMUTH_STEP_DEG} deg of azimuth, no noise; {len(points)} points"
        ),
    }
    text = calibration_json(fx, fx, cx, cy, BASELINE_M, doffs, depth_limits(fx, doffs), t_cam_lidar, notes)
    writer.calibration(name, text)


def write_splits(out: Path, writer: RigWriter) -> tuple[str, ...]:
    """``splits/train.txt``, ``heldout.txt`` (the public split), ``fit.txt`` and ``val.txt`` (the training
    scenes split for validation) listing the split's scenes present in ``out``."""
    present = {p.parent.name for p in out.glob(f"*/{CALIB_FILE}")}
    written = []
    for relative, names in SPLITS.items():
        scenes = [name for name in sorted(names) if name in present]
        if scenes:
            header = f"# Middlebury 2006 ({Path(relative).stem}): {_SPLIT_NOTES[Path(relative).stem]}\n"
            writer.text(relative, header + "".join(f"{scene}/{FRAME}\n" for scene in scenes))
            written.append(relative)
    return tuple(written)


def import_middlebury(
    src: str | Path,
    out: str | Path,
    scenes: Sequence[str] | None = None,
    dmin_px_full: float = NOMINAL_DMIN_FULL_PX,
    progress: bool = True,
) -> ImportReport:
    """Import Middlebury 2005/2006 third-size scenes (all under ``src``, or ``scenes``) into the rig
    tree ``out``. ``dmin_px_full`` is used for scenes without a ``dmin.txt``. Re-importing writes the
    same bytes. A folder or scene that is not Middlebury's is a one-line error naming it."""
    src, out = Path(src), Path(out)
    if not math.isfinite(dmin_px_full) or dmin_px_full < 0:
        raise ValueError(f"dmin must be a finite number of pixels >= 0, got {dmin_px_full}")
    dirs = _scene_dirs(src, scenes)
    writer = RigWriter(out)
    for scene in tqdm(dirs, unit="scene", disable=not progress, desc="middlebury"):
        _import_scene(scene, writer, dmin_px_full)
    splits = write_splits(out, writer)
    return writer.report([d.name for d in dirs], len(dirs), splits)


__all__ = [
    "BASELINE_M",
    "FOCAL_FULL_PX",
    "HELDOUT",
    "NOMINAL_DMIN_FULL_PX",
    "TRAINING",
    "depth_limits",
    "import_middlebury",
    "read_dmin",
    "scene_depth",
]
