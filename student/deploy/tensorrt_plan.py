"""Which build path each TensorRT generation takes, as pure logic (tested without TensorRT).

* **8.x** (Jetson TX2 = 8.2): explicit-batch network, precision by builder flags (weak typing), INT8
  by an entropy calibrator fed with label-shard frames or by Q/DQ nodes in the file; workspace by
  ``max_workspace_size`` before 8.4, ``set_memory_pool_limit`` from 8.4.
* **10.x** (and 9.x): builder flags as on 8.x, or a strongly typed network when no flag is asked
  for; the calibrator is deprecated but still works.
* **11.x**: strongly typed only; the precision comes from the ONNX file (FP16 AutoCast copy, Q/DQ).

:func:`plan_build` decides; ``edgedepth.student.deploy.tensorrt.build_engine`` carries the plan out
against the real Python API (docs/tensorrt.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def _version_parts(version: str) -> tuple[int, int]:
    match = re.match(r"^\s*(\d+)(?:\.(\d+))?", str(version))
    if match is None:
        raise ValueError(f"not a TensorRT version: {version!r} (expected e.g. '8.2.1' or '10.3.0')")
    return int(match.group(1)), int(match.group(2) or 0)


def tensorrt_generation(version: str) -> int:
    """The build-API generation of TensorRT ``version``: 8, 10 or 11.

    9.x (a short-lived release line) is treated as 10: it has ``set_memory_pool_limit`` and the
    strongly typed network flag; :func:`plan_build` still sets EXPLICIT_BATCH there, since implicit
    batch only went away in 10.0.
    """
    major, _ = _version_parts(version)
    if major == 8:
        return 8
    if major in (9, 10):
        return 10
    if major == 11:
        return 11
    raise ValueError(f"TensorRT {version} is not supported: this builder knows 8.x, 9.x/10.x and 11.x")


@dataclass(frozen=True)
class BuildPlan:
    """Which build path a TensorRT version takes for the asked precision (names as the API spells them).

    ``builder_flags`` are ``trt.BuilderFlag`` members, ``network_flags`` are
    ``trt.NetworkDefinitionCreationFlag`` members; ``workspace_api`` is ``"set_memory_pool_limit"``
    (with ``trt.MemoryPoolType.WORKSPACE``) or ``"max_workspace_size"``; ``int8_source`` is
    ``"calibrator"``, ``"qdq"`` or ``None``.
    """

    version: str
    generation: int
    builder_flags: tuple[str, ...]
    network_flags: tuple[str, ...]
    workspace_api: str
    int8_source: str | None
    precision: str
    description: str

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags

    @property
    def explicit_batch(self) -> bool:
        return "EXPLICIT_BATCH" in self.network_flags

    @property
    def uses_calibrator(self) -> bool:
        return self.int8_source == "calibrator"


def plan_build(
    version: str,
    fp16: bool,
    int8: bool,
    onnx_is_qdq: bool,
    has_calibrator: bool,
    onnx_has_fp16: bool = False,
) -> BuildPlan:
    """The build path for TensorRT ``version``; refusals are one-line ValueErrors.

    ``onnx_is_qdq``: the file carries QuantizeLinear/DequantizeLinear (explicit INT8);
    ``has_calibrator``: calibration frames were given; ``onnx_has_fp16``: the file already holds FP16
    tensors (an AutoCast copy), which is what TensorRT 11 needs for an FP16 engine.
    """
    generation = tensorrt_generation(version)
    major, minor = _version_parts(version)
    label = f"TensorRT {version.strip()}"
    if generation == 11:
        return _plan_11(version, label, fp16, int8, onnx_is_qdq, has_calibrator, onnx_has_fp16)

    network_flags: tuple[str, ...] = ("EXPLICIT_BATCH",) if major < 10 else ()
    workspace_api = "max_workspace_size" if (major, minor) < (8, 4) else "set_memory_pool_limit"
    int8_source: str | None = None
    notes: list[str] = []
    if int8:
        if onnx_is_qdq:
            int8_source = "qdq"
            if has_calibrator:
                notes.append("calibration frames not used (the Q/DQ nodes carry the scales)")
        elif has_calibrator:
            int8_source = "calibrator"
            if generation == 10:
                notes.append("implicit INT8 calibration is deprecated since 10.1")
        else:
            raise ValueError(
                f"--int8 needs calibration frames (--calib-labels LABELS) or an ONNX file with "
                f"QuantizeLinear/DequantizeLinear nodes; this file has neither ({label})"
            )
    if generation == 10 and not fp16 and not int8:
        # Nothing asked for: build as the file says, the way 11.x always does.
        return BuildPlan(
            version=version,
            generation=generation,
            builder_flags=(),
            network_flags=network_flags + ("STRONGLY_TYPED",),
            workspace_api=workspace_api,
            int8_source="qdq" if onnx_is_qdq else None,
            precision=_file_precision(onnx_is_qdq, onnx_has_fp16),
            description=f"{label}: strongly typed network; precision from the ONNX file",
        )

    if onnx_is_qdq and int8_source is None:  # a weakly typed network only honours Q/DQ with the INT8 flag
        int8_source = "qdq"
        notes.append("INT8 flag set because the file has Q/DQ nodes")
    builder_flags = tuple(name for name, on in (("FP16", fp16), ("INT8", int8_source is not None)) if on)
    precision = "+".join(name.lower() for name in reversed(builder_flags)) or "fp32"
    parts = [f"{label}: builder flags {' + '.join(builder_flags) or 'none (FP32)'}"]
    if "EXPLICIT_BATCH" in network_flags:
        parts.append("explicit-batch network")
    if int8_source == "calibrator":
        parts.append("INT8 scales from the entropy calibrator (label-shard frames)")
    elif int8_source == "qdq":
        parts.append("INT8 scales from the file's Q/DQ nodes")
    parts.append(f"workspace via {workspace_api}")
    return BuildPlan(
        version=version,
        generation=generation,
        builder_flags=builder_flags,
        network_flags=network_flags,
        workspace_api=workspace_api,
        int8_source=int8_source,
        precision=precision,
        description="; ".join(parts + notes),
    )


def _file_precision(onnx_is_qdq: bool, onnx_has_fp16: bool) -> str:
    kinds = [name for name, on in (("int8", onnx_is_qdq), ("fp16", onnx_has_fp16)) if on]
    return "+".join(kinds) + " (from the ONNX file)" if kinds else "fp32 (from the ONNX file)"


def _plan_11(
    version: str,
    label: str,
    fp16: bool,
    int8: bool,
    onnx_is_qdq: bool,
    has_calibrator: bool,
    onnx_has_fp16: bool,
) -> BuildPlan:
    if has_calibrator:
        raise ValueError(
            f"{label} removed implicit INT8 calibration (IInt8EntropyCalibrator2): drop --calib-labels and "
            f"build an ONNX file with Q/DQ nodes (ModelOpt PTQ, calibrated on CPU), see docs/tensorrt.md"
        )
    if int8 and not onnx_is_qdq:
        raise ValueError(
            f"--int8 on {label} needs an ONNX file with QuantizeLinear/DequantizeLinear nodes "
            f"(ModelOpt PTQ); this file has none"
        )
    if fp16 and not onnx_has_fp16:
        raise ValueError(
            f"--fp16 on {label}: the FP16 builder flag is gone and this ONNX file is FP32; export the FP16 "
            f"(AutoCast, trt10/trt11 fp16) copy of the model and build that, or drop --fp16 for FP32"
        )
    unused = [flag for flag, on in (("FP16", fp16), ("INT8", int8)) if on]
    description = f"{label}: strongly typed network; precision from the ONNX file"
    if unused:
        description += f" ({' and '.join(unused)} flag{'s' if len(unused) > 1 else ''} not used)"
    return BuildPlan(
        version=version,
        generation=11,
        builder_flags=(),
        network_flags=("STRONGLY_TYPED",),
        workspace_api="set_memory_pool_limit",
        int8_source="qdq" if onnx_is_qdq else None,
        precision=_file_precision(onnx_is_qdq, onnx_has_fp16),
        description=description,
    )


__all__ = ["BuildPlan", "plan_build", "tensorrt_generation"]
