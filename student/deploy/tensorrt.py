"""Build a TensorRT engine from the exported student ONNX, on TensorRT 8.x, 10.x or 11.x.

``edgedepth student build-engine MODEL.onnx --out MODEL.engine [--fp16] [--int8 --calib-labels LABELS]``
runs :func:`build_engine`. The three TensorRT generations (8.x, 9.x/10.x, 11.x) build differently
(docs/tensorrt.md): ``edgedepth.student.deploy.tensorrt_plan.plan_build`` decides the path as pure
logic, from the file's contents (``edgedepth.student.deploy.onnx_inspect``); :func:`build_engine`
carries it out against the real Python API, with INT8 calibration when the plan asks for it
(:func:`make_calibrator`). The calibrator's device buffers are torch CUDA tensors
(``tensor.data_ptr()``): torch with CUDA is a dependency of the toolkit anyway, which spares a
second CUDA binding (cuda-python) that would have to match the TensorRT build.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedepth.common import atomic_writer
from edgedepth.student.deploy.calibration import calibration_frames, to_export_input
from edgedepth.student.deploy.device_commands import trtexec_command
from edgedepth.student.deploy.onnx_inspect import onnx_has_fp16, onnx_has_qdq, onnx_inputs
from edgedepth.student.deploy.tensorrt_plan import plan_build, tensorrt_generation

MAX_PROFILE_BATCH = 8  # the optimisation profile's max for a dynamic batch dimension


class TensorRTUnavailable(RuntimeError):
    """tensorrt does not import, or there is no CUDA GPU: the message is one line with the trtexec way."""


class EngineBuildError(RuntimeError):
    """TensorRT's parser or builder failed; the message is one line."""


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

    Up to ``frames`` frames are drawn by :func:`edgedepth.student.deploy.calibration.calibration_frames`; each is
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
    """What ``build_engine`` wrote: the engine, the TensorRT version and path taken, its precision,
    each input's shape (fixed) or profile (min, opt, max), and the build time in seconds."""

    path: Path
    version: str
    path_description: str
    precision: str
    input_shapes: dict[str, tuple[tuple[int, ...], ...]]  # name -> (shape,) or (min, opt, max)
    seconds: float


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
    "EngineBuildError",
    "EngineReport",
    "TensorRTUnavailable",
    "build_engine",
    "calibration_batches",
    "make_calibrator",
]
