"""Build a TensorRT engine from the exported student ONNX, on TensorRT 8.x, 10.x or 11.x.

``edgedepth student build-engine MODEL.onnx --out MODEL.engine [--fp16] [--int8 --calib-labels LABELS]``
runs :func:`build_engine`. The three TensorRT generations build differently (docs/tensorrt.md):

* **8.x** (Jetson TX2 = 8.2): explicit-batch network, precision by builder flags (weak typing), INT8
  by an entropy calibrator fed with label-shard frames or by Q/DQ nodes in the file; workspace by
  ``max_workspace_size`` before 8.4, ``set_memory_pool_limit`` from 8.4.
* **10.x** (and 9.x): builder flags as on 8.x, or a strongly typed network when no flag is asked
  for; the calibrator is deprecated but still works.
* **11.x**: strongly typed only; the precision comes from the ONNX file (FP16 AutoCast copy, Q/DQ).

:func:`plan_build` holds the decisions as pure logic (tested without TensorRT); :func:`build_engine`
carries them out against the real Python API. The calibrator's device buffers are torch CUDA
tensors (``tensor.data_ptr()``): torch with CUDA is a dependency of the toolkit anyway, which spares
a second CUDA binding (cuda-python) that would have to match the TensorRT build.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelgen.atomic import atomic_writer
from student.calibration import calibration_frames, to_export_input

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
MAX_PROFILE_BATCH = 8  # the optimisation profile's max for a dynamic batch dimension


class TensorRTUnavailable(RuntimeError):
    """tensorrt does not import, or there is no CUDA GPU: the message is one line with the trtexec way."""


class EngineBuildError(RuntimeError):
    """TensorRT's parser or builder failed; the message is one line."""


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


# ---------------------------------------------------------------------------------------------
# ONNX inspection (the onnx package; no TensorRT needed)


def _load_onnx(path: str | Path) -> Any:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    return onnx.load(str(path), load_external_data=False)


def _all_nodes(graph: Any) -> list[Any]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            if attribute.g is not None and len(attribute.g.node):
                nodes.extend(_all_nodes(attribute.g))
            for sub in attribute.graphs:
                nodes.extend(_all_nodes(sub))
    return nodes


def onnx_has_qdq(path: str | Path) -> bool:
    """True when the ONNX file has QuantizeLinear/DequantizeLinear nodes (explicit quantization)."""
    return any(node.op_type in QDQ_OPS for node in _all_nodes(_load_onnx(path).graph))


def onnx_has_fp16(path: str | Path) -> bool:
    """True when the ONNX file holds FP16 tensors (initializers, I/O, value_info or Cast-to-FP16)."""
    import onnx

    graph = _load_onnx(path).graph
    fp16 = onnx.TensorProto.FLOAT16
    if any(init.data_type == fp16 for init in graph.initializer):
        return True
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    if any(value.type.tensor_type.elem_type == fp16 for value in values):
        return True
    for node in _all_nodes(graph):
        if node.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in node.attribute):
            return True
    return False


def onnx_inputs(path: str | Path) -> dict[str, tuple[tuple[int | None, ...], str]]:
    """The graph inputs (initializers excluded): name -> (shape with None for dynamic dims, dtype)."""
    import onnx

    graph = _load_onnx(path).graph
    initializers = {init.name for init in graph.initializer}
    inputs = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "float32"
        inputs[value.name] = (dims, dtype)
    return inputs


# ---------------------------------------------------------------------------------------------
# INT8 calibration (TensorRT 8.x / 10.x)


def calibration_batches(
    labels_dir: str | Path,
    size: tuple[int, int],
    batch_size: int = 1,
    frames: int = 64,
    dtype: str = "float32",
    seed: int = 0,
) -> list[np.ndarray]:
    """Calibration batches (batch_size, 3, h, w) in the exported input layout, from ``labels_dir``.

    Up to ``frames`` frames are drawn by :func:`student.calibration.calibration_frames`; each is
    :func:`to_export_input` at ``size`` = (h, w). Every batch holds ``batch_size`` frames (TensorRT's
    calibrator has one batch size): a short last batch is filled with frames from the start.
    """
    if batch_size < 1:
        raise ValueError(f"calibration batch size must be at least 1, got {batch_size}")
    drawn = calibration_frames(labels_dir, frames, seed)
    inputs = [to_export_input(image, size, dtype) for image in drawn.images]
    count = -(-len(inputs) // batch_size) * batch_size
    ordered = [inputs[i % len(inputs)] for i in range(count)]
    return [np.concatenate(ordered[i : i + batch_size], axis=0) for i in range(0, count, batch_size)]


def make_calibrator(trt: Any, batches: Sequence[np.ndarray], cache_path: str | Path | None = None) -> Any:
    """An ``EntropyCalibrator`` (a ``trt.IInt8EntropyCalibrator2``) feeding ``batches`` to TensorRT.

    Each batch is copied to a torch CUDA tensor whose ``data_ptr()`` TensorRT reads; the tensor is
    kept alive until the next batch. The calibration cache TensorRT produces is written atomically to
    ``cache_path`` (usable as ``trtexec --calib=``); an existing cache is never read back, so a cache
    of another model cannot leak in.
    """
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        version = getattr(trt, "__version__", "?")
        raise ValueError(
            f"TensorRT {version} has no IInt8EntropyCalibrator2 (removed in 11); use a Q/DQ file"
        )
    if not batches:
        raise ValueError("the calibrator needs at least one batch")
    sizes = {int(batch.shape[0]) for batch in batches}
    if len(sizes) != 1:
        raise ValueError(f"calibration batches must share one batch size, got {sorted(sizes)}")

    import torch

    class EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        """Entropy calibration over label-shard frames; device memory in torch CUDA tensors."""

        def __init__(self) -> None:
            base.__init__(self)
            self.batches = [np.ascontiguousarray(batch) for batch in batches]
            self.batch_size = sizes.pop()
            self.cache_path = Path(cache_path) if cache_path is not None else None
            self.index = 0
            self.device_batch: Any = None

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: Sequence[str], *_: Any) -> list[int] | None:
            if self.index >= len(self.batches):
                return None
            if len(names) != 1:
                raise EngineBuildError(f"the calibrator feeds one input, the network asks for {list(names)}")
            self.device_batch = torch.from_numpy(self.batches[self.index]).to("cuda")
            torch.cuda.synchronize()
            self.index += 1
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self) -> None:
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if self.cache_path is not None:
                with atomic_writer(self.cache_path) as handle:
                    handle.write(cache)

    return EntropyCalibrator()


# ---------------------------------------------------------------------------------------------
# The build


@dataclass(frozen=True)
class EngineReport:
    path: Path
    version: str
    path_description: str
    precision: str
    input_shapes: dict[str, tuple[tuple[int, ...], ...]]  # name -> (shape,) or (min, opt, max)
    seconds: float


def trtexec_command(
    onnx_path: str | Path,
    out_path: str | Path,
    fp16: bool = False,
    int8: bool = False,
    generation: int | None = None,
    workspace_mb: int | None = None,
) -> str:
    """The ``trtexec`` line that builds the same engine on the device.

    ``generation`` None (TensorRT not importable here) gives the 8.x/10.x flags, which most devices
    (TX2: 8.2, Orin JP6: 10.3) take, and no workspace flag (no spelling works on both 8.2 and 10.x);
    11.x has no --fp16/--int8: it builds the file as typed.
    """
    parts = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={out_path}"]
    if generation == 11:
        parts.append("--stronglyTyped")
    else:
        parts += [flag for flag, on in (("--fp16", fp16), ("--int8", int8)) if on]
        if generation == 10 and not (fp16 or int8):
            parts.append("--stronglyTyped")
    if workspace_mb is not None and generation is not None:  # --workspace is 8.x only, --memPoolSize 8.4+
        parts.append(
            f"--workspace={workspace_mb}" if generation == 8 else f"--memPoolSize=workspace:{workspace_mb}"
        )
    return " ".join(parts)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _profile_shapes(
    shape: tuple[int, ...], name: str, size: tuple[int, int] | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(min, opt, max) for a network input with dynamic dims (-1), or None when the shape is fixed."""
    if all(d >= 0 for d in shape):
        return None
    low, opt, high = [], [], []
    for axis, dim in enumerate(shape):
        if dim >= 0:
            low.append(dim), opt.append(dim), high.append(dim)
        elif axis == 0:
            low.append(1), opt.append(1), high.append(MAX_PROFILE_BATCH)
        elif len(shape) == 4 and axis in (2, 3) and size is not None:
            value = size[axis - 2]
            low.append(value), opt.append(value), high.append(value)
        else:
            raise ValueError(
                f"input {name!r} has dynamic dimension {axis} {shape}; pass size=(h, w) for the engine"
            )
    return tuple(low), tuple(opt), tuple(high)


def build_engine(
    onnx_path: str | Path,
    out_path: str | Path,
    fp16: bool = False,
    int8: bool = False,
    calib_labels: str | Path | None = None,
    calib_frames: int = 64,
    workspace_mb: int = 1024,
    log: Callable[[str], Any] = print,
    size: tuple[int, int] | None = None,
) -> EngineReport:
    """Build ``onnx_path`` into a serialized TensorRT engine at ``out_path`` (written atomically).

    The path (builder flags or strongly typed, calibrator or Q/DQ) comes from :func:`plan_build`
    for the installed TensorRT and is logged. A dynamic batch dimension gets the profile
    min 1 / opt 1 / max 8; dynamic height/width take ``size`` = (h, w). Raises
    :class:`TensorRTUnavailable` without tensorrt or a GPU, ValueError for a refused combination,
    :class:`EngineBuildError` when parsing or building fails; every message is one line.
    """
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX file not found")
    try:
        import tensorrt as trt
    except (ImportError, OSError) as error:
        command = trtexec_command(onnx_path, out_path, fp16, int8, None, workspace_mb)
        raise TensorRTUnavailable(
            f"tensorrt is not installed here ({_one_line(error)}); build on the device with: {command}"
        ) from None
    version = str(trt.__version__)
    generation = tensorrt_generation(version)
    command = trtexec_command(onnx_path, out_path, fp16, int8, generation, workspace_mb)

    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable(
            f"TensorRT {version} is installed but no CUDA GPU is visible; build on the device with: {command}"
        )

    plan = plan_build(
        version,
        fp16=fp16,
        int8=int8,
        onnx_is_qdq=onnx_has_qdq(onnx_path),
        has_calibrator=calib_labels is not None,
        onnx_has_fp16=onnx_has_fp16(onnx_path),
    )
    log(plan.description)
    started = time.perf_counter()

    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except TypeError:  # "factory function returned nullptr": CUDA failed to initialise
        builder = None
    if builder is None:
        raise TensorRTUnavailable(f"TensorRT {version} could not create a builder (CUDA); try: {command}")
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        count = int(parser.num_errors)
        first = _one_line(parser.get_error(0)) if count else "no error reported"
        raise EngineBuildError(
            f"{onnx_path}: TensorRT {version} could not parse it ({count} error(s)); first: {first}"
        )

    config = builder.create_builder_config()
    workspace = int(workspace_mb) << 20
    if plan.workspace_api == "set_memory_pool_limit":
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace
    if "FP16" in plan.builder_flags and getattr(builder, "platform_has_fast_fp16", True) is False:
        log("warning: this GPU has no fast FP16; the FP16 flag may not speed the engine up")
    if "INT8" in plan.builder_flags and getattr(builder, "platform_has_fast_int8", True) is False:
        raise ValueError(
            "this GPU has no fast INT8 (e.g. Jetson TX2, Pascal sm_62): build with --fp16 instead of --int8"
        )
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))

    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    profile = None
    for index in range(int(network.num_inputs)):
        tensor = network.get_input(index)
        shape = tuple(int(d) for d in tensor.shape)
        ranges = _profile_shapes(shape, tensor.name, size)
        if ranges is None:
            shapes[tensor.name] = (shape,)
            continue
        if profile is None:
            profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, *ranges)
        shapes[tensor.name] = ranges
    if profile is not None:
        config.add_optimization_profile(profile)

    if plan.uses_calibrator:
        if len(shapes) != 1:
            raise EngineBuildError(f"the calibrator feeds one input; {onnx_path} has {len(shapes)}")
        (name, ranges), (_, dtype) = next(iter(shapes.items())), next(iter(onnx_inputs(onnx_path).values()))
        opt = ranges[1] if len(ranges) == 3 else ranges[0]
        batches = calibration_batches(calib_labels, (opt[2], opt[3]), opt[0], calib_frames, dtype)
        log(f"INT8 calibration on {len(batches)} batch(es) of {opt[0]} from {calib_labels}")
        calibrator = make_calibrator(trt, batches, out_path.with_name(out_path.name + ".calib"))
        config.int8_calibrator = calibrator  # the local keeps it alive through the build
        if profile is not None and hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(profile)

    if hasattr(builder, "build_serialized_network"):
        serialized = builder.build_serialized_network(network, config)
    else:  # very old 8.x bindings
        engine = builder.build_engine(network, config)
        serialized = engine.serialize() if engine is not None else None
    if serialized is None:
        raise EngineBuildError(f"TensorRT {version} could not build {onnx_path} (see the TensorRT log above)")
    with atomic_writer(out_path) as handle:
        handle.write(serialized)
    seconds = time.perf_counter() - started
    log(f"wrote {out_path} ({plan.precision}) in {seconds:.1f} s")
    return EngineReport(
        path=out_path,
        version=version,
        path_description=plan.description,
        precision=plan.precision,
        input_shapes=shapes,
        seconds=seconds,
    )


__all__ = [
    "BuildPlan",
    "EngineBuildError",
    "EngineReport",
    "TensorRTUnavailable",
    "build_engine",
    "calibration_batches",
    "make_calibrator",
    "onnx_has_fp16",
    "onnx_has_qdq",
    "onnx_inputs",
    "plan_build",
    "tensorrt_generation",
    "trtexec_command",
]
