"""``edgedepth student export --target ...``: one checkpoint -> every edge runtime's files, checked.

Targets (``EXPORT_TARGETS``):

* ``trt8`` / ``trt10``: ONNX for TensorRT 8.2 (Jetson TX2) and 10/11 (``edgedepth.student.deploy.export``);
* ``openvino``: OpenVINO IR (``.xml`` + ``.bin``) for Intel CPUs, iGPUs and NPUs, converted from the
  trt10 FP32 ONNX file, so its input contract is the same (``edgedepth.student.deploy.openvino_backend``);
* ``litert``: ``.tflite`` for the LiteRT (TensorFlow Lite) interpreter on ARM boards and phones,
  converted from the PyTorch export model (``edgedepth.student.deploy.litert_backend``).

Every file is checked against PyTorch (FP32) or its FP32 file (FP16, INT8) before it is listed in
the one ``manifest.json`` of the folder; a file that fails is removed and the export stops with one
line. OpenVINO and LiteRT are optional installs (``pip install 'edgedepth[openvino]'``,
``'edgedepth[litert]'``): a missing one is refused before any work, with that line.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgedepth.common import check_choices, check_writable, sha256_file, write_text_atomic
from edgedepth.student.deploy.calibration import calibration_frames, to_export_input
from edgedepth.student.deploy.export import (
    DEFAULT_INPUT_DTYPE,
    PARITY_FRAMES,
    PRECISIONS,
    ExportModel,
    Manifest,
    _default_parity_image,
    export_onnx,
)
from edgedepth.student.deploy.runtimes import RuntimeMissing, require
from edgedepth.student.model import VARIANTS, load_student, read_checkpoint

ONNX_TARGETS = ("trt8", "trt10")
EXPORT_TARGETS = ("trt8", "trt10", "openvino", "litert")
RUNTIME_MODULES = {"openvino": ("openvino", "nncf"), "litert": ("litert_torch", "ai_edge_litert")}
"""The modules each non-ONNX target needs (nncf only for int8)."""
TARGET_DTYPE = {**DEFAULT_INPUT_DTYPE, "openvino": "uint8", "litert": "uint8"}
"""Default input dtype per target: every runtime but TensorRT 8 takes the uint8 image as it is."""


def require_runtime(module: str) -> None:
    """``runtimes.require`` of one target's module; LiteRT's through ``require_litert``, which keeps
    the TensorFlow / absl lines its import prints off the console. Raises ``RuntimeMissing``."""
    if module in RUNTIME_MODULES["litert"]:
        from edgedepth.student.deploy.litert_backend import require_litert

        require_litert(module)
    else:
        require(module)


def runtime_ready(module: str) -> bool:
    """Whether ``require_runtime(module)`` passes."""
    try:
        require_runtime(module)
    except RuntimeMissing:
        return False
    return True


def device_lines(target: str, name: str, threads: int = 4) -> list[str]:
    """The lines a user runs on the device to time an OpenVINO or LiteRT file (their own tools)."""
    if target == "openvino":
        return [
            "# OpenVINO's benchmark tool (pip install openvino), latency hint, on the device's CPU:",
            f"benchmark_app -m {name} -d CPU -hint latency -niter 200",
            "# on an Intel iGPU or NPU: -d GPU or -d NPU",
        ]
    return [
        "# LiteRT's benchmark tool (benchmark_model from the LiteRT releases), on the device:",
        f"benchmark_model --graph={name} --num_threads={threads} --num_runs=200",
        "# the same with the XNNPACK delegate made explicit: add --use_xnnpack=true",
    ]


def export_student(
    checkpoint: str | Path,
    out_dir: str | Path,
    targets: Sequence[str] = ("trt10",),
    variants: Sequence[str] = ("L", "M", "S", "XS"),
    size: tuple[int, int] = (320, 480),
    precisions: Sequence[str] = ("fp32",),
    with_seg: bool = False,
    calib_labels: str | Path | None = None,
    calib_frames: int = 64,
    input_dtype: str | None = None,
    parity_images: list[np.ndarray] | None = None,
    progress: bool = True,
) -> Manifest:
    """Export every target x variant x precision into ``out_dir`` with one manifest.json.

    ``size`` is (height, width). ``input_dtype`` None takes each target's default (``TARGET_DTYPE``).
    Raises a one-line ValueError (or ``RuntimeMissing``) before any work when a choice is invalid,
    a runtime is missing or INT8 has no calibration labels.
    """
    targets = [t.lower() for t in targets]
    check_choices(targets, EXPORT_TARGETS, "target")
    check_choices(sorted(precisions), PRECISIONS, "precision")
    variants = [v.upper() for v in variants]
    check_choices(variants, VARIANTS, "variant")
    if "int8" in precisions and calib_labels is None:
        raise ValueError("int8 export needs calibration frames: pass --calib-labels LABELS")
    for target in targets:
        for module in RUNTIME_MODULES.get(target, ()):
            if module != "nncf" or "int8" in precisions:
                require_runtime(module)
    if not targets:
        raise ValueError("choose at least one target: " + ", ".join(EXPORT_TARGETS))
    out_dir = Path(out_dir)
    check_writable(out_dir / "manifest.json")
    read_checkpoint(checkpoint)  # one-line refusal of a file that is not a student checkpoint
    say = print if progress else (lambda *_: None)
    calib = calibration_frames(calib_labels, calib_frames) if "int8" in precisions else None
    if parity_images is None:
        parity_images = list(calib.images[:PARITY_FRAMES]) if calib else [_default_parity_image()]
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir, str(checkpoint), sha256_file(checkpoint))
    for target in [t for t in targets if t in ONNX_TARGETS]:
        part = export_onnx(
            checkpoint, out_dir, tuple(variants), tuple(size), target, tuple(precisions), with_seg,
            calib_labels, calib_frames, input_dtype, parity_images, progress, write_manifest=False,
        )  # fmt: skip
        manifest.files += part.files
        manifest.notes += [n for n in part.notes if n not in manifest.notes]
    others = [t for t in targets if t not in ONNX_TARGETS]
    if others:
        _export_runtimes(
            checkpoint, out_dir, others, variants, size, precisions, with_seg, calib, input_dtype,
            parity_images, manifest, say,
        )  # fmt: skip
    manifest.save()
    say(f"wrote {len(manifest.files)} file(s) and {out_dir / 'manifest.json'}")
    return manifest


def _export_runtimes(
    checkpoint, out_dir: Path, targets, variants, size, precisions, with_seg, calib, input_dtype,
    parity_images, manifest: Manifest, say,
) -> None:  # fmt: skip
    """The OpenVINO and LiteRT files of every variant, appended to ``manifest``."""
    with tempfile.TemporaryDirectory(prefix="edgedepth-export-") as tmp:
        for target in targets:
            dtype = input_dtype or TARGET_DTYPE[target]
            real = [to_export_input(image, size, dtype) for image in parity_images]
            frames = [to_export_input(image, size, dtype) for image in calib.images] if calib else None
            # the ONNX base of OpenVINO: the trt10 FP32 file when it was written with this dtype
            base_dir = out_dir if _has_trt10(manifest, dtype) else Path(tmp) / dtype
            if target == "openvino" and base_dir != out_dir:
                export_onnx(
                    checkpoint, base_dir, tuple(variants), tuple(size), "trt10", ("fp32",), with_seg,
                    input_dtype=dtype, parity_images=parity_images, progress=False, write_manifest=False,
                )  # fmt: skip
            for variant in variants:
                model, config = load_student(checkpoint, variant, return_classes=with_seg)
                if with_seg and not model.return_classes:
                    raise ValueError(f"{checkpoint}: --with-seg needs a checkpoint with a segmentation head")
                wrapper = ExportModel(model, config, with_seg).eval()
                stem = f"student_{variant}_{target}"
                say(f"exporting {stem} ({', '.join(precisions)})")
                if target == "openvino":
                    from edgedepth.student.deploy.openvino_backend import export_openvino

                    onnx_fp32 = base_dir / f"student_{variant}_trt10_fp32.onnx"
                    entries = export_openvino(onnx_fp32, out_dir, stem, precisions, wrapper, real, frames,
                                              progress=False)  # fmt: skip
                else:
                    from edgedepth.student.deploy.litert_backend import export_litert

                    entries = export_litert(wrapper, out_dir, stem, precisions, tuple(size), dtype, real,
                                            frames, progress=False)  # fmt: skip
                for entry in entries:
                    manifest.files.append(
                        _describe(manifest, out_dir, entry, variant, target, config, size, dtype, calib)
                    )


def _has_trt10(manifest: Manifest, dtype: str) -> bool:
    return any(
        e["target"] == "trt10" and e["precision"] == "fp32" and e["input"]["dtype"] == dtype
        for e in manifest.files
    )


def _describe(manifest: Manifest, out_dir: Path, entry: dict, variant, target, config, size, dtype, calib):
    """The manifest entry of an OpenVINO / LiteRT file, and its device commands file."""
    height, width = size
    name = entry["path"]
    commands = Path(name).stem + ".commands.txt"
    write_text_atomic(out_dir / commands, "\n".join(device_lines(target, name)) + "\n")
    described = {
        **entry,
        "commands": commands,
        "variant": variant,
        "target": target,
        "input": {"name": "image", "dtype": dtype, "shape": [1, 3, height, width], "range": [0, 255]},
        "output_size": list(config.with_size(tuple(size)).output_size),
        "checkpoint": manifest.checkpoint,
        "checkpoint_sha256": manifest.checkpoint_sha256,
        "model_config": config.with_size(tuple(size)).to_dict(),
    }
    if entry["precision"] == "int8" and calib is not None:
        described["calibration"] = {"frame_ids": list(calib.frame_ids), "requested": calib.requested}
    return described


__all__ = [
    "EXPORT_TARGETS",
    "ONNX_TARGETS",
    "TARGET_DTYPE",
    "device_lines",
    "export_student",
    "require_runtime",
    "runtime_ready",
]
