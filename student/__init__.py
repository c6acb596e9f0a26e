"""The depth + segmentation student, in wings that follow its life: model, train, evaluate, deploy.

``edgedepth.student.model`` (the network, its configs and checkpoints) stands on the common floor;
``evaluate`` stands on the model, ``train`` on both, ``deploy`` on the model and evaluation, and
``ablate`` on all of them. Each wing's ``__init__`` is its public face; the names most users want
are repeated here::

    build_student, ModelConfig, TrainConfig, load_student      edgedepth.student.model
    LabelDataset, MultiScaleLoss                               edgedepth.student.train
    evaluate_depth, evaluate_checkpoint, predict_images        edgedepth.student.evaluate
    export_onnx, bench_variants                                edgedepth.student.deploy
"""

from __future__ import annotations

from edgedepth.common import lazy_face

_HOMES = {
    "build_student": "edgedepth.student.model",
    "ModelConfig": "edgedepth.student.model",
    "TrainConfig": "edgedepth.student.model",
    "load_student": "edgedepth.student.model",
    "LabelDataset": "edgedepth.student.train",
    "MultiScaleLoss": "edgedepth.student.train",
    "evaluate_depth": "edgedepth.student.evaluate",
    "evaluate_checkpoint": "edgedepth.student.evaluate",
    "predict_images": "edgedepth.student.evaluate",
    "export_onnx": "edgedepth.student.deploy",
    "bench_variants": "edgedepth.student.deploy",
    "labelgen_score": "edgedepth.student.evaluate_commands",
    "student_group": "edgedepth.student.commands",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
