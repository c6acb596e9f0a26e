"""Timing primitives: wall-clock runs and their latency statistics, and the timed run of each
backend as deployed (an ONNX Runtime session, a serialized TensorRT engine), batch 1.

Latency is the median of the timed runs after untimed warm-up runs; fps = 1000 / median; the spread
is the 10th-90th percentile. ``edgedepth.student.deploy.speed`` builds its rows from these.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def latency_stats(times_ms: Sequence[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile (ms) and fps = 1000 / median."""
    median = statistics.median(times_ms)
    p10, p90 = (float(v) for v in np.percentile(times_ms, [10, 90]))
    return {"latency_ms": median, "p10_ms": p10, "p90_ms": p90, "fps": 1000.0 / median}


def time_runs(
    fn: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], object] | None = None
) -> list[float]:
    """Wall time (ms) of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def ort_session(path: str | Path, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime session as deployed: all graph optimisations, ``threads`` intra-op threads
    (default: every core), sequential execution; CUDA provider first when ``device`` is cuda."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def time_onnx(
    path: str | Path, image: np.ndarray, threads: int | None = None, repeats: int = 50, warmup: int = 10,
    device: str = "cpu",
) -> dict[str, float]:  # fmt: skip
    """``latency_stats`` of one ONNX file on ``image`` (its full input array)."""
    sess = ort_session(path, threads, device)
    name = sess.get_inputs()[0].name
    return latency_stats(time_runs(lambda: sess.run(None, {name: image}), repeats, warmup))


def time_engine(
    trt: Any, engine_path: Path, image: np.ndarray, repeats: int, warmup: int
) -> tuple[dict[str, float], float]:
    """``latency_stats`` of a serialized engine (the host input copied in, outputs left on the GPU)
    and its memory in MiB: activations (``device_memory_size``) plus the I/O buffers. ``trt`` is the
    imported tensorrt module. TensorRT 8.5+ uses the named-tensor API (execute_async_v3), older 8.x
    the bindings (execute_v2)."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    host = torch.from_numpy(image).pin_memory()
    named = hasattr(engine, "num_io_tensors") and hasattr(context, "execute_async_v3")
    if named:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        for name in names:
            if is_input[name] and -1 in tuple(engine.get_tensor_shape(name)):
                context.set_input_shape(name, tuple(image.shape))
        shape_of, dtype_of = context.get_tensor_shape, engine.get_tensor_dtype
    else:
        names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        is_input = {n: engine.binding_is_input(i) for i, n in enumerate(names)}
        for i, name in enumerate(names):
            if is_input[name] and -1 in tuple(engine.get_binding_shape(i)):
                context.set_binding_shape(i, tuple(image.shape))
        shape_of = lambda n: context.get_binding_shape(names.index(n))  # noqa: E731
        dtype_of = lambda n: engine.get_binding_dtype(names.index(n))  # noqa: E731
    buffers, bound = {}, 0
    for name in names:
        dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(dtype_of(name)))).dtype
        buffers[name] = torch.empty(tuple(shape_of(name)), dtype=dtype, device="cuda")
        bound += buffers[name].numel() * buffers[name].element_size()
        if named:
            context.set_tensor_address(name, buffers[name].data_ptr())
    first_input = next(n for n in names if is_input[n])
    pointers = [buffers[n].data_ptr() for n in names]

    def run():
        with torch.cuda.stream(stream):
            buffers[first_input].copy_(host, non_blocking=True)
            if named:
                context.execute_async_v3(stream.cuda_stream)
        if not named:
            stream.synchronize()
            context.execute_v2(pointers)
        stream.synchronize()

    stats = latency_stats(time_runs(run, repeats, warmup))
    activation = int(getattr(engine, "device_memory_size", 0) or 0)
    return stats, (activation + bound) / 2**20


__all__ = ["latency_stats", "ort_session", "time_engine", "time_onnx", "time_runs"]
