"""The two input layouts behind one face: KITTI raw trees and rig trees (docs/rig.md).

The plan, the stages and the run never ask which layout a frame comes from: they call a
``Layout`` (``get_layout(plan.layout)``) or ``lidar_depth_maps``, which dispatches once on the
frame's type. A layout finds frames, reads frame lists and calibrations, names the input files a
frame needs, and turns a frame's LiDAR source into sparse depth maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from edgedepth.labelgen import kitti, rig, rig_arrays
from edgedepth.labelgen.kitti import Calibration, Frame
from edgedepth.labelgen.lidar import project_lidar
from edgedepth.labelgen.rig import RigCalibration, RigFrame

LAYOUTS = ("kitti", "rig")
AnyFrame = Frame | RigFrame
AnyCalibration = Calibration | RigCalibration


class Layout(Protocol):
    """What the plan and the stages need of a layout (``KittiLayout``, ``RigLayout``)."""

    name: str

    def find_frames(
        self, root: Path, drives: Sequence[str] | None, frame_list: str | Path | None
    ) -> list[AnyFrame]: ...
    def read_frame_list(self, path: str | Path) -> list[AnyFrame]: ...
    def frame_from_id(self, frame_id: str) -> AnyFrame: ...
    def frame_id_problem(self, frame_id: object) -> str | None: ...
    def frame_prefix(self, date: str, drive: str) -> str | None: ...
    def read_calibration(self, root: Path, key: str) -> AnyCalibration: ...
    def calibration_from_dict(self, data: dict) -> AnyCalibration: ...
    def check_calibration(self, calib: AnyCalibration, source: str) -> None: ...
    def input_paths(self, frame: AnyFrame, root: Path) -> tuple[Path, ...]: ...
    def lidar_depth_maps(
        self, frame: AnyFrame, calib: AnyCalibration, root: Path, cams: Sequence[int], convention: str
    ) -> dict[int, np.ndarray]: ...


def _projected(
    points: np.ndarray, source: Path, calib: AnyCalibration, cams: Sequence[int], convention: str
) -> dict[int, np.ndarray]:
    maps = {cam: project_lidar(points[:, :4], calib, cam=cam, depth=convention) for cam in cams}
    for cam, depth in maps.items():
        if not (depth > 0).any():
            raise ValueError(
                f"{source}: none of its {len(points)} points projects into the image (camera {cam}); "
                "wrong calibration or a scan of another sequence?"
            )
    return maps


class KittiLayout:
    """``<root>/<date>/<date>_drive_<NNNN>_sync/...`` with per-date calibration files."""

    name = "kitti"

    def find_frames(
        self, root: Path, drives: Sequence[str] | None, frame_list: str | Path | None
    ) -> list[AnyFrame]:
        return list(kitti.find_frames(root, drives=drives, split_file=frame_list))

    def read_frame_list(self, path: str | Path) -> list[AnyFrame]:
        return list(kitti.read_split_file(path))

    def frame_from_id(self, frame_id: str) -> AnyFrame:
        return Frame.from_id(frame_id)

    def frame_id_problem(self, frame_id: object) -> str | None:
        """Why ``frame_id`` is not ``<date>/<date>_drive_<NNNN>_sync/<frame:010d>`` (None if it is)."""
        return kitti.frame_id_problem(frame_id)

    def frame_prefix(self, date: str, drive: str) -> str | None:
        """What every frame id of a shard of ``date`` and ``drive`` starts with."""
        return f"{date}/{drive}/"

    def read_calibration(self, root: Path, key: str) -> AnyCalibration:
        return kitti.read_calibration(Path(root) / key)

    def calibration_from_dict(self, data: dict) -> AnyCalibration:
        return Calibration.from_dict(data)

    def check_calibration(self, calib: AnyCalibration, source: str) -> None:
        kitti.check_calibration(calib, source, source)

    def input_paths(self, frame: AnyFrame, root: Path) -> tuple[Path, ...]:
        return frame.image_path(root, 2), frame.image_path(root, 3), frame.velodyne_path(root)

    def lidar_depth_maps(
        self, frame: AnyFrame, calib: AnyCalibration, root: Path, cams: Sequence[int], convention: str
    ) -> dict[int, np.ndarray]:
        path = frame.velodyne_path(root)
        return _projected(kitti.read_velodyne(path), path, calib, cams, convention)


class RigLayout:
    """``<root>/<sequence>/calib.json, left/, right/`` and optional LiDAR (docs/rig.md)."""

    name = "rig"

    def find_frames(
        self, root: Path, drives: Sequence[str] | None, frame_list: str | Path | None
    ) -> list[AnyFrame]:
        return list(rig.find_rig_frames(root, sequences=drives, frame_list=frame_list))

    def read_frame_list(self, path: str | Path) -> list[AnyFrame]:
        return list(rig.read_rig_frame_list(path))

    def frame_from_id(self, frame_id: str) -> AnyFrame:
        return RigFrame.from_id(frame_id)

    def frame_id_problem(self, frame_id: object) -> str | None:
        """Why ``frame_id`` is not ``<sequence>/<frame>`` (None if it is)."""
        return rig.frame_id_problem(frame_id)

    def frame_prefix(self, date: str, drive: str) -> str | None:
        """What every frame id of a shard of a sequence starts with (its date and drive are both the
        sequence; None when they differ)."""
        return f"{drive}/" if date == drive else None

    def read_calibration(self, root: Path, key: str) -> AnyCalibration:
        return rig.read_rig_calibration(Path(root) / key)

    def calibration_from_dict(self, data: dict) -> AnyCalibration:
        return RigCalibration.from_dict(data)

    def check_calibration(self, calib: AnyCalibration, source: str) -> None:
        rig.check_rig_calibration(calib, source)

    def input_paths(self, frame: AnyFrame, root: Path) -> tuple[Path, ...]:
        return frame.image_path(root, 2), frame.image_path(root, 3)  # a LiDAR source is optional

    def lidar_depth_maps(
        self, frame: AnyFrame, calib: AnyCalibration, root: Path, cams: Sequence[int], convention: str
    ) -> dict[int, np.ndarray]:
        """From ``lidar_depth/<frame>.png`` (camera 2, camera z only) if present, else from
        ``lidar/<frame>.npy`` projected through T_cam_lidar."""
        png, npy = frame.lidar_depth_path(root), frame.lidar_points_path(root)
        if png.exists():
            if set(cams) != {2}:
                raise ValueError(f"{png}: a projected depth PNG gives the left camera only, not camera 3")
            if convention != "z":
                raise ValueError(f"{png}: a projected depth PNG holds camera z, not LiDAR {convention}")
            depth = rig_arrays.read_depth_png(png)
            if depth.shape != tuple(calib.image_size):
                raise ValueError(
                    f"{png}: depth map is {depth.shape[1]}x{depth.shape[0]}, the sequence's images are "
                    f"{calib.image_size[1]}x{calib.image_size[0]}"
                )
            if not (depth > 0).any():
                raise ValueError(f"{png}: no LiDAR depth in the map (every pixel is 0)")
            return {2: depth}
        if npy.exists():
            if calib.t_cam_lidar is None:
                raise ValueError(f"{npy}: LiDAR points but calib.json has no T_cam_lidar to project them")
            return _projected(rig_arrays.read_lidar_points(npy), npy, calib, cams, convention)
        raise ValueError(f"no LiDAR for this frame: neither {png} nor {npy} exists")


_LAYOUTS: dict[str, Layout] = {"kitti": KittiLayout(), "rig": RigLayout()}
_FRAME_LAYOUTS: dict[type, str] = {Frame: "kitti", RigFrame: "rig"}


def get_layout(name: str) -> Layout:
    """The layout called ``name`` ("kitti" or "rig"); anything else is a one-line ValueError."""
    if name not in _LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; expected one of {', '.join(LAYOUTS)}")
    return _LAYOUTS[name]


def layout_of(frame: AnyFrame) -> Layout:
    """The layout a frame object belongs to."""
    return _LAYOUTS[_FRAME_LAYOUTS[type(frame)]]


def detect_layout(root: str | Path) -> str:
    """``rig`` when any ``<root>/*/calib.json`` exists, ``kitti`` when a ``<root>/*/calib_cam_to_cam.txt``
    or a ``<root>/*/*_drive_*_sync`` folder exists; otherwise a one-line error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root folder not found")
    if any(root.glob(f"*/{rig.CALIB_FILE}")):
        return "rig"
    if any(root.glob(f"*/{kitti.CAM_TO_CAM}")) or any(root.glob("*/*_drive_*_sync")):
        return "kitti"
    raise ValueError(
        f"{root}: neither a rig tree (no <sequence>/{rig.CALIB_FILE}) nor a KITTI raw tree "
        f"(no <date>/{kitti.CAM_TO_CAM}); see docs/rig.md"
    )


def frame_from_id(layout: str, frame_id: str) -> AnyFrame:
    """A frame object from its id: ``<date>/<drive>_sync/<index>`` (kitti) or ``<sequence>/<frame>`` (rig)."""
    return get_layout(layout).frame_from_id(frame_id)


def read_frame_list(path: str | Path, layout: str) -> list[AnyFrame]:
    """Frames listed in a file: rig, one ``<sequence>/<frame>`` a line; kitti, monodepth2 split lines
    or ``<date>/<drive>_sync/<index>`` ids. '#' comments and blank lines are skipped. A line that
    names no frame of the layout (another form, ``..``, an absolute path) or a file that is not
    UTF-8 text is a one-line ValueError naming the file and the line number."""
    return get_layout(layout).read_frame_list(path)


def lidar_depth_maps(
    frame: AnyFrame,
    calib: AnyCalibration,
    root: str | Path,
    cams: Sequence[int] = (2,),
    convention: str = "z",
) -> dict[int, np.ndarray]:
    """A frame's sparse LiDAR depth in cameras ``cams`` as {cam: (H, W) float32 metres, 0 = none}.

    KITTI: the Velodyne .bin projected through the date's calibration. Rig: the lidar_depth PNG if
    present (camera 2, convention z), else lidar/*.npy projected through ``calib.projection(cam)``.
    A frame without a usable LiDAR source, or whose points all miss the image, is a one-line ValueError.
    """
    return layout_of(frame).lidar_depth_maps(frame, calib, Path(root), tuple(cams), convention)


def lidar_depth(
    frame: AnyFrame, calib: AnyCalibration, root: str | Path, cam: int = 2, convention: str = "z"
) -> np.ndarray:
    """One camera's map of ``lidar_depth_maps``: (H, W) float32 metres, 0 = none."""
    return lidar_depth_maps(frame, calib, root, (cam,), convention)[cam]


__all__ = [
    "LAYOUTS",
    "KittiLayout",
    "Layout",
    "RigLayout",
    "detect_layout",
    "frame_from_id",
    "get_layout",
    "layout_of",
    "lidar_depth",
    "lidar_depth_maps",
    "read_frame_list",
]
