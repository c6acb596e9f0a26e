"""`edgedepth demo`: the pipeline end to end on a small data set, with a readable report.

Data, first found: ``kitti_root`` if given, else ``$EDGEDEPTH_KITTI_SAMPLE`` (the real KITTI frame
that ships beside the repository for development and CI), else a synthetic KITTI-layout tree
generated on the spot (``labelgen.synthetic``), so the demo runs on a fresh machine with no data.
Later stages (teachers, bias table, training, export) join here as they land.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from calib.fit import fit_from_labels, format_lut
from calib.plot import plot_lut
from labelgen.inspect import inspect_labels, write_previews
from labelgen.plan import plan_shards, write_plan
from labelgen.run import format_reports, run_stages
from labelgen.shards import LabelReader
from labelgen.synthetic import make_kitti_tree
from student.bench import DEFAULT_SIZES, format_table, summarize_variants

DEMO_STAGES = ("images", "lidar", "sgbm")


def demo_data(out_dir: Path, kitti_root: str | Path | None = None) -> tuple[Path, str]:
    """The KITTI root the demo uses and a line saying what it is."""
    if kitti_root:
        return Path(kitti_root), f"KITTI raw data at {kitti_root}"
    sample = os.environ.get("EDGEDEPTH_KITTI_SAMPLE")
    if sample and Path(sample).is_dir():
        return Path(sample), f"the real KITTI sample frame at {sample}"
    root = out_dir / "synthetic_kitti"
    if not root.exists():
        make_kitti_tree(root, {"2011_09_26_drive_0001_sync": 4}, {"2011_09_26": (375, 1242)})
    return root, f"a synthetic KITTI-layout tree at {root} (set EDGEDEPTH_KITTI_SAMPLE for real data)"


def sgbm_vs_lidar(labels_dir: Path) -> str:
    """How far the SGBM teacher is from the LiDAR on the pixels both have (what calib will fit)."""
    reader = LabelReader(labels_dir, ["lidar", "sgbm"])
    errors, lidar_all = [], []
    for i in range(len(reader)):
        item = reader[i]
        lidar, sgbm = item["lidar/depth"], item["sgbm/depth"]
        both = (lidar > 0) & (sgbm > 0) & (lidar <= 80)
        errors.append(lidar[both] - sgbm[both])
        lidar_all.append(lidar[both])
    reader.close()
    error, lidar = np.concatenate(errors), np.concatenate(lidar_all)
    if error.size == 0:
        return "SGBM vs LiDAR: no pixel where both have a value"
    abs_rel = float(np.mean(np.abs(error) / lidar))
    return (
        f"SGBM vs LiDAR on {error.size} pixels: Abs Rel {abs_rel:.3f}, "
        f"mean error (LiDAR - SGBM) {float(error.mean()):+.2f} m, RMSE {float(np.sqrt(np.mean(error**2))):.2f} m"
    )


def run_demo(out_dir: str | Path = "demo_out", kitti_root: str | Path | None = None, workers: int = 2) -> str:
    """Plan, label (images, LiDAR, SGBM), inspect with PNG previews, fit the SGBM-vs-LiDAR bias
    table, and size the student."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root, what = demo_data(out_dir, kitti_root)
    labels = out_dir / "labels"
    write_plan(plan_shards(root, shard_size=8), labels, overwrite=True)
    reports = run_stages(labels, list(DEMO_STAGES), workers=workers, progress=False)
    previews = write_previews(labels, out_dir / "previews")
    lut = fit_from_labels(labels, "sgbm", holdout=0.0, min_count=20, progress=False)
    lut_path, lut_png = lut.save(out_dir / "lut_sgbm.json"), plot_lut(lut, out_dir / "lut_sgbm.png")
    sections = [
        f"data: {what}",
        "== label generation (labelgen run) ==\n" + format_reports(reports),
        "== label folder (labelgen inspect) ==\n" + inspect_labels(labels),
        "== teacher vs LiDAR ==\n" + sgbm_vs_lidar(labels),
        "== bias table (calib fit) ==\n"
        + "\n".join(format_lut(lut).splitlines()[:4])
        + f"\ntable: {lut_path}\nplot: {lut_png}",
        "== previews ==\n" + "\n".join(str(p) for p in previews),
        "== student variants (multi-task: depth + 19 Cityscapes classes) ==\n"
        + format_table(summarize_variants(sizes=DEFAULT_SIZES))
        + "\nMACs: multiply-adds of one inference pass (torch.utils.flop_counter, convolutions only).",
    ]
    return "\n\n".join(sections)
