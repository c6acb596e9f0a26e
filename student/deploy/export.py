"""``edgedepth student export``: one checkpoint -> ONNX files for TensorRT 8.2 and 10/11, checked.

Every requested variant (the detachable decoders of one checkpoint) becomes
``DIR/student_<variant>_<target>_<precision>.onnx`` with the weights inside, the normalisation in the
graph and depth in metres out; each file is checked (structure, then ONNX Runtime parity, see
``edgedepth.student.deploy.onnx_checks``) and described in ``DIR/manifest.json``; beside it ``<name>.commands.txt``
holds the trtexec and polygraphy lines for the device. Contract and choices: docs/export.md.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import Tensor, nn

from edgedepth.common import (
    check_choice,
    check_choices,
    check_writable,
    sha256_file,
    write_bytes_atomic,
    write_text_atomic,
)
from edgedepth.student.deploy import onnx_checks as checks
from edgedepth.student.deploy.calibration import calibration_frames, to_export_input
from edgedepth.student.deploy.device_commands import export_commands
from edgedepth.student.deploy.int8 import ORT_QUANTIZER, _to_int8, tensorrt_int8
from edgedepth.student.deploy.onnx_passes import fold_pads_into_convs
from edgedepth.student.model import (
    VARIANTS,
    DepthSegStudent,
    ModelConfig,
    check_input_size,
    load_student,
    read_checkpoint,
)

TARGETS = ("trt8", "trt10")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_INPUT_DTYPE = {"trt8": "float32", "trt10": "uint8"}
"""TensorRT 8.2 takes no UINT8 network input, so trt8 gets float32 0..255; TensorRT 10 does."""
MAX_BATCH = 64  # trt10's dynamic batch range is 1..MAX_BATCH
PARITY_FRAMES = 4  # real frames used for parity when they default to the calibration frames
INT8_RUNTIMES = ("tensorrt", "onnxruntime")
"""int8 gives two Q/DQ files from the same calibration: TensorRT's form (``..._int8.onnx``) and
ONNX Runtime's CPU form (``..._int8_ort.onnx``); see ``_to_int8``."""


class ExportModel(nn.Module):
    """The exported forward: image (N,3,H,W) RGB 0..255, uint8 or float32 -> a tuple
    ``(depth,)`` or ``(depth, classes)``: depth (N,1,h,w) float32 metres, classes (N,h,w) int32."""

    def __init__(self, model: DepthSegStudent, config: ModelConfig, with_seg: bool = False) -> None:
        super().__init__()
        if with_seg and not model.return_classes:
            raise ValueError("with_seg needs a model built with return_classes (and a segmentation head)")
        self.model, self.with_seg = model.eval(), with_seg
        self.register_buffer("offset", torch.tensor(config.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("scale", 1.0 / (torch.tensor(config.std).view(1, 3, 1, 1) * 255.0))

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        x = (image.to(torch.float32) - self.offset) * self.scale
        if not self.with_seg:
            return (self.model.predict(x),)
        depth, classes = self.model.predict(x)
        return depth, classes.to(torch.int32)


@dataclass
class Manifest:
    """What ``export_onnx`` wrote: one entry per ONNX file, plus notes for the user."""

    out_dir: Path
    checkpoint: str
    checkpoint_sha256: str
    files: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def format_table(self) -> str:
        """One row per file: variant, precision, opset / IR, and its parity figures."""
        width = max([34] + [len(e["path"]) for e in self.files])
        lines = [f"{'file':<{width}} {'opset':>5} {'IR':>3}  parity", "-" * (width + 44)]
        for entry in self.files:
            parity = entry.get("parity", {})
            if "max_rel_err" in parity:
                figure = f"max rel err vs PyTorch {parity['max_rel_err']:.2g}"
            else:
                figure = f"vs FP32: Abs Rel {parity.get('abs_rel', float('nan')):.2g}, "
                figure += f"RMSE {parity.get('rmse', float('nan')):.2g} m"
            opset, ir = entry.get("opset", "-"), entry.get("ir_version", "-")
            lines.append(f"{entry['path']:<{width}} {opset:>5} {ir:>3}  {figure}")
        lines += [f"note: {note}" for note in self.notes]
        lines += self._device_lines()
        lines.append(f"manifest: {self.out_dir / 'manifest.json'}")
        return "\n".join(lines)

    def _device_lines(self) -> list[str]:
        """The device lines of one file (TensorRT's INT8 file first, else the first file): every file
        has its own ``<name>.commands.txt``."""
        pick = next(
            (e for e in self.files if e["precision"] == "int8" and e.get("runtime") == "tensorrt"), None
        )
        pick = pick or (self.files[0] if self.files else None)
        path = self.out_dir / pick["commands"] if pick and pick.get("commands") else None
        if path is None or not path.is_file():
            return []
        commands = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
        head = f"on the device ({pick['path']}; every file's lines are in its .commands.txt):"
        return [head, *(f"  {line}" for line in commands)]

    def save(self) -> Path:
        """Write ``out_dir/manifest.json`` atomically."""
        return write_text_atomic(self.out_dir / "manifest.json", json.dumps(self.to_dict(), indent=2) + "\n")

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "files": self.files,
            "notes": self.notes,
            "versions": _versions(),
        }


def export_onnx(
    checkpoint: str | Path,
    out_dir: str | Path,
    variants: tuple[str, ...] = ("L", "M", "S", "XS"),
    size: tuple[int, int] = (320, 480),
    target: str = "trt10",
    precisions: tuple[str, ...] = ("fp32",),
    with_seg: bool = False,
    calib_labels: str | Path | None = None,
    calib_frames: int = 64,
    input_dtype: str | None = None,
    parity_images: list[np.ndarray] | None = None,
    progress: bool = True,
    write_manifest: bool = True,
) -> Manifest:
    """Export, check and describe every variant x precision; raises a one-line ValueError on failure.

    ``size`` is (height, width), multiples of 32. The FP32 file is always written (it is the base of
    the FP16 and INT8 copies). ``trt8`` + ``fp16`` writes no file: FP16 is TensorRT 8's builder flag.
    ``write_manifest`` False leaves manifest.json to the caller (``export_student`` of several targets).
    """
    try:
        check_input_size(*size)
    except ValueError as err:
        raise ValueError(f"--size {size[1]}x{size[0]}: {err}") from None
    check_choice(target, TARGETS, "target")
    check_choices(sorted(precisions), PRECISIONS, "precision")
    for variant in variants:
        check_choice(variant, VARIANTS, "variant", upper=True)
    if "int8" in precisions and calib_labels is None:
        raise ValueError("int8 export needs calibration frames: pass --calib-labels LABELS")
    dtype = input_dtype or DEFAULT_INPUT_DTYPE[target]
    if dtype not in ("uint8", "float32"):
        raise ValueError(f"input dtype must be uint8 or float32, got {dtype!r}")
    out_dir = Path(out_dir)
    check_writable(out_dir / "manifest.json")  # before the work, and without creating folders
    read_checkpoint(checkpoint)  # one-line refusal of a file that is not a student checkpoint
    say = print if progress else (lambda *_: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir, str(checkpoint), sha256_file(checkpoint))

    calib = None
    if "int8" in precisions:
        calib = calibration_frames(calib_labels, calib_frames)
        if calib.note:
            say(calib.note)
            manifest.notes.append(calib.note)
    if parity_images is None:
        parity_images = list(calib.images[:PARITY_FRAMES]) if calib else [_default_parity_image()]
    if "fp16" in precisions and target == "trt8":
        manifest.notes.append(
            "trt8: no FP16 file; FP16 is the TensorRT 8 builder flag: build the fp32 file with --fp16"
        )

    for variant in (v.upper() for v in variants):
        model, config = load_student(checkpoint, variant, return_classes=with_seg)
        if with_seg and not model.return_classes:
            raise ValueError(f"{checkpoint}: --with-seg needs a checkpoint with a segmentation head")
        wrapper = ExportModel(model, config, with_seg).eval()
        real = [to_export_input(image, size, dtype) for image in parity_images]
        base = out_dir / f"student_{variant}_{target}_fp32.onnx"
        say(f"exporting {base.name}")
        fp32 = _export(wrapper, base, target, size, dtype, with_seg)
        entry = _describe(manifest, base, fp32, variant, target, "fp32", config, size, dtype)
        entry["parity"] = checks.checked(
            checks.fp32_parity, base, wrapper, real, size, dtype, target, checkpoint
        )
        manifest.files.append(entry)
        ref = [checks.run(checks.session(base), x)[0] for x in real]
        copies = [p for p in ("fp16", "int8") if p in precisions and not (p == "fp16" and target == "trt8")]
        for precision in copies:
            runtimes = INT8_RUNTIMES if precision == "int8" else ("any",)
            for runtime in runtimes:
                suffix = "_ort" if runtime == "onnxruntime" else ""
                path = out_dir / f"student_{variant}_{target}_{precision}{suffix}.onnx"
                say(f"exporting {path.name}")
                if precision == "fp16":
                    copy = _to_fp16(fp32)
                else:
                    frames = [to_export_input(im, size, dtype) for im in calib.images]
                    if runtime == "tensorrt":
                        copy, quantizer = tensorrt_int8(fp32, frames, target, path.name)
                    else:
                        copy, quantizer = _to_int8(fp32, frames, runtime), ORT_QUANTIZER
                checks.check_structure(copy, target, path.name)
                write_bytes_atomic(path, copy.SerializeToString())
                entry = _describe(
                    manifest, path, copy, variant, target, precision, config, size, dtype, runtime
                )
                entry["parity"] = checks.checked(checks.copy_parity, path, precision, real, ref)
                if precision == "int8":
                    entry["quantizer"] = quantizer
                    entry["calibration"] = {
                        "labels": str(calib_labels),
                        "frame_ids": list(calib.frame_ids),
                        "requested": calib.requested,
                        "note": calib.note,
                    }
                manifest.files.append(entry)

    if write_manifest:
        manifest.save()
        say(f"wrote {len(manifest.files)} ONNX file(s) and {out_dir / 'manifest.json'}")
    return manifest


def _export(
    wrapper: ExportModel, path: Path, target: str, size, dtype: str, with_seg: bool
) -> onnx.ModelProto:
    """Export to a temporary file, check the structure, then write ``path`` atomically."""
    height, width = size
    example = torch.zeros(1, 3, height, width, dtype=getattr(torch, dtype))
    outputs = ["depth", "classes"] if with_seg else ["depth"]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scratch = Path(tmp) / "model.onnx"
        if target == "trt8":
            torch.onnx.export(
                wrapper, (example,), str(scratch), dynamo=False, opset_version=checks.TARGET_OPSET[target],
                do_constant_folding=True, input_names=["image"], output_names=outputs,
            )  # fmt: skip
        else:
            batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
            torch.onnx.export(
                wrapper, (example,), str(scratch), dynamo=True, external_data=False,
                opset_version=checks.TARGET_OPSET[target], input_names=["image"], output_names=outputs,
                dynamic_shapes={"image": {0: batch}}, verbose=False,
            )  # fmt: skip
        leftovers = sorted(p.name for p in Path(tmp).iterdir() if p.name != "model.onnx")
        if leftovers:
            raise ValueError(f"{path.name}: the exporter wrote external data ({', '.join(leftovers)})")
        model = onnx.load(str(scratch))
    model, _ = fold_pads_into_convs(model)  # the Keras encoder style's padding, as Conv pads (trt8)
    checks.check_structure(model, target, path.name)
    write_bytes_atomic(path, model.SerializeToString())
    return model


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 inside the graph, FP32 (and uint8/int32) inputs and outputs kept."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Cast stays FP32 (the uint8 input's cast, the class map's int32 cast); the converter adds casts
        block = [*float16.DEFAULT_OP_BLOCK_LIST, "Cast"]
        return float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)


def _describe(
    manifest, path: Path, model, variant, target, precision, config, size, dtype, runtime: str = "any"
) -> dict:
    """The manifest entry of one file (parity added by the caller), and its commands file."""
    height, width = size
    info = checks.check_structure(model, target, path.name)
    batch = "batch" if target == "trt10" else 1
    lines = export_commands(path.name, target, precision, height, width, dtype, runtime)
    write_text_atomic(path.with_name(path.stem + ".commands.txt"), "\n".join(lines) + "\n")
    return {
        "path": path.name,
        "commands": path.stem + ".commands.txt",
        "variant": variant,
        "target": target,
        "precision": precision,
        "runtime": runtime,
        "input": {"name": "image", "dtype": dtype, "shape": [batch, 3, height, width], "range": [0, 255]},
        "outputs": [o.name for o in model.graph.output],
        "output_size": list(config.with_size(size).output_size),
        **info,
        "checkpoint": manifest.checkpoint,
        "checkpoint_sha256": manifest.checkpoint_sha256,
        "model_config": config.with_size(size).to_dict(),
    }


def _default_parity_image() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.stereo_motorcycle()[0])


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    for name in ("onnxscript", "onnxconverter_common"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions


__all__ = [
    "DEFAULT_INPUT_DTYPE",
    "PRECISIONS",
    "TARGETS",
    "ExportModel",
    "Manifest",
    "export_onnx",
    "tensorrt_int8",
]
