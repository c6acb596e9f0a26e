"""The student network and what travels with it: variants, configs, depth code, checkpoints.

Stands on ``edgedepth.common`` only; every other student wing stands on it.

Each public name maps to its home module and is imported on first use (``edgedepth.common.faces``).
"""

from __future__ import annotations

from edgedepth.common import lazy_face

_HOMES = {
    "DepthSegStudent": "edgedepth.student.model.network",
    "MAX_BATCH_SIZE": "edgedepth.student.model.config",
    "MAX_LOG_DEPTH": "edgedepth.student.model.depth_code",
    "MAX_NUM_CLASSES": "edgedepth.student.model.network",
    "MIN_LOG_DEPTH": "edgedepth.student.model.depth_code",
    "ModelConfig": "edgedepth.student.model.config",
    "STRIDE": "edgedepth.student.model.network",
    "TrainConfig": "edgedepth.student.model.config",
    "VARIANTS": "edgedepth.student.model.network",
    "build_student": "edgedepth.student.model.build",
    "check_input_size": "edgedepth.student.model.network",
    "count_macs": "edgedepth.student.model.network",
    "count_parameters": "edgedepth.student.model.network",
    "g_transform": "edgedepth.student.model.depth_code",
    "is_keras_weights_file": "edgedepth.student.model.keras_weights",
    "load_encoder_weights": "edgedepth.student.model.encoder_weights",
    "load_student": "edgedepth.student.model.checkpoint",
    "load_student_weights": "edgedepth.student.model.network",
    "normalise": "edgedepth.student.model.preprocess",
    "output_size": "edgedepth.student.model.network",
    "preprocess_image": "edgedepth.student.model.preprocess",
    "read_checkpoint": "edgedepth.student.model.checkpoint",
    "save_checkpoint": "edgedepth.student.model.checkpoint",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
