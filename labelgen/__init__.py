"""Teacher label generation from KITTI-style logs: plan, stages, HDF5 shards, dask execution.

The face other wings use: the label folder (``LabelFolder``, ``LabelReader``), the plan and shard
files, the KITTI and rig readers, the importers and the run.

Each public name maps to its home module and is imported on first use (``edgedepth.common.faces``).
"""

from __future__ import annotations

from edgedepth.common import lazy_face

_HOMES = {
    "AZIMUTH_STEP_DEG": "edgedepth.labelgen.simulated_lidar",
    "BEAMS": "edgedepth.labelgen.simulated_lidar",
    "CAM_TO_CAM": "edgedepth.labelgen.kitti",
    "Calibration": "edgedepth.labelgen.kitti",
    "ClusterSpec": "edgedepth.labelgen.client",
    "DEPTH_ATTRS": "edgedepth.labelgen.stage",
    "DatasetSpec": "edgedepth.labelgen.shards",
    "Frame": "edgedepth.labelgen.kitti",
    "IMAGE_SUFFIXES": "edgedepth.labelgen.kitti",
    "LabelFolder": "edgedepth.labelgen.folder",
    "LabelReader": "edgedepth.labelgen.reader",
    "PLAN_FILE": "edgedepth.labelgen.plan",
    "Plan": "edgedepth.labelgen.plan",
    "RigCalibration": "edgedepth.labelgen.rig",
    "RigFrame": "edgedepth.labelgen.rig",
    "RigWriter": "edgedepth.labelgen.importers.writer",
    "STAGES": "edgedepth.labelgen.stages",
    "ShardPlan": "edgedepth.labelgen.plan",
    "ShardWriter": "edgedepth.labelgen.shards",
    "VELO_TO_CAM": "edgedepth.labelgen.kitti",
    "Workers": "edgedepth.labelgen.client",
    "calibration_json": "edgedepth.labelgen.importers.writer",
    "check_shard": "edgedepth.labelgen.shards",
    "cluster_spec": "edgedepth.labelgen.commands",
    "data_group": "edgedepth.labelgen.data_commands",
    "decode": "edgedepth.labelgen.shards",
    "depth_figure": "edgedepth.labelgen.inspect",
    "depth_to_png16": "edgedepth.labelgen.lidar",
    "detect_layout": "edgedepth.labelgen.layout",
    "fetch_weights": "edgedepth.labelgen.teachers.weights",
    "format_reports": "edgedepth.labelgen.report",
    "frame_from_id": "edgedepth.labelgen.layout",
    "get_layout": "edgedepth.labelgen.layout",
    "import_kitti_depth": "edgedepth.labelgen.importers",
    "import_middlebury": "edgedepth.labelgen.importers",
    "inspect_labels": "edgedepth.labelgen.inspect",
    "job_script": "edgedepth.labelgen.cluster",
    "labelgen_group": "edgedepth.labelgen.commands",
    "lidar_depth": "edgedepth.labelgen.layout",
    "load_plan_cached": "edgedepth.labelgen.plan",
    "missing_inputs": "edgedepth.labelgen.plan",
    "open_shard": "edgedepth.labelgen.shards",
    "parse_job_options": "edgedepth.labelgen.cluster",
    "plan_shards": "edgedepth.labelgen.plan",
    "png16_to_depth": "edgedepth.labelgen.lidar",
    "read_calibration": "edgedepth.labelgen.kitti",
    "read_depth_png": "edgedepth.labelgen.rig_arrays",
    "read_frame_list": "edgedepth.labelgen.layout",
    "read_image": "edgedepth.labelgen.kitti",
    "read_rig_calibration": "edgedepth.labelgen.rig",
    "read_rows": "edgedepth.labelgen.shards",
    "read_split_file": "edgedepth.labelgen.kitti",
    "read_velodyne": "edgedepth.labelgen.kitti",
    "remove_stale_tmp": "edgedepth.labelgen.shards",
    "run_stages": "edgedepth.labelgen.run",
    "scanner_transform": "edgedepth.labelgen.simulated_lidar",
    "seg_palette": "edgedepth.labelgen.inspect",
    "shard_path": "edgedepth.labelgen.shards",
    "simulate_scan": "edgedepth.labelgen.simulated_lidar",
    "write_plan": "edgedepth.labelgen.plan",
    "write_previews": "edgedepth.labelgen.inspect",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
