"""The `edgedepth data import` commands: public stereo sets into the rig layout (docs/rig.md)."""

from __future__ import annotations

from pathlib import Path

import click

from edgedepth.common import POSITIVE_METRES, InputError, friendly_errors


@click.group("data", short_help="Bring public data sets into the rig layout.")
def data_group() -> None:
    """Data sets: convert public stereo sets into the rig layout (docs/rig.md)."""


@data_group.group("import")
def data_import() -> None:
    """Import a public data set into a rig-layout root: ROOT/<sequence>/{calib.json,left,right,...}."""


@data_import.command("middlebury")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--scenes", help="Comma-separated scene folders (default: every scene under SRC).")
@click.option(
    "--dmin",
    "dmin_px_full",
    default=200.0,
    show_default=True,
    type=POSITIVE_METRES,
    help="Disparity offset at full size (px) where a scene has no dmin.txt.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@friendly_errors
def data_import_middlebury(src, out, scenes, dmin_px_full, progress) -> None:
    """Middlebury 2005/2006 scenes (third size: view1/view5/disp1.png) -> rig layout, with depth_gt and a
    simulated LiDAR scan; writes OUT/splits/train.txt and heldout.txt for the fixed public split."""
    from edgedepth.labelgen.importers import import_middlebury

    names = [n.strip() for n in scenes.split(",") if n.strip()] if scenes else None
    report = import_middlebury(src, out, scenes=names, dmin_px_full=dmin_px_full, progress=progress)
    click.echo(report.format())


@data_import.command("kitti-depth")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--drives", multiple=True, help="Drive folders to import (default: all).")
@click.option("--annotated-root", type=click.Path(path_type=Path), help="Where data_depth_annotated is.")
@click.option(
    "--depth-range",
    default="1,80",
    show_default=True,
    metavar="MIN,MAX",
    help="Metres written as the sequences' depth_range_m.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@friendly_errors
def data_import_kitti_depth(src, out, drives, annotated_root, depth_range, progress) -> None:
    """A KITTI raw tree (Velodyne scans or projected depth, annotated ground truth) -> rig layout."""
    from edgedepth.labelgen.importers import import_kitti_depth

    try:
        lo, hi = (float(v) for v in depth_range.split(","))
    except ValueError:
        raise InputError(f"--depth-range {depth_range!r} is not MIN,MAX in metres, e.g. 1,80") from None
    report = import_kitti_depth(
        src,
        out,
        drives=drives or None,
        annotated_root=annotated_root,
        depth_range_m=(lo, hi),
        progress=progress,
    )
    click.echo(report.format())


__all__ = ["data_group", "data_import", "data_import_kitti_depth", "data_import_middlebury"]
