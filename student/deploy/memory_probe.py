"""Peak memory of a model on the CPU, measured in a fresh Python process.

The figure is the growth of the resident set of a *fresh* process, from just before the model /
session is created to the end of ``MEMORY_RUNS`` inference runs (peak resident set, Linux
``VmHWM``, minus the resident set before creation; ``getrusage``'s max RSS is not used on Linux: it
carries the forking parent's peak over). It holds the weights, the runtime's arenas and the
activations; the interpreter and the imported libraries are excluded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

MEMORY_RUNS = 3  # inference runs of the fresh process that measures peak memory
RSS_NOTE = "peak RSS growth of a fresh process: model/session creation + 3 runs"
"""What ``peak_memory_mb`` measures, in the words a bench row gives."""
_ROOT = Path(__file__).resolve().parents[2]  # the repository, put on the probe's PYTHONPATH

_MEMORY_SCRIPT = r"""
import json, resource, sys
import numpy as np
spec = json.loads(sys.argv[1])
def status_mb(key):
    # VmRSS: resident now; VmHWM: peak resident of this process image (reset by exec, unlike
    # getrusage's ru_maxrss, which Linux carries over from the parent that forked us)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)
def rss_mb():
    return status_mb("VmRSS")
def peak_mb():
    try:
        return status_mb("VmHWM")
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
image = np.zeros(spec["shape"], dtype=spec["dtype"])
if spec["kind"] == "onnxruntime":
    import os
    import onnxruntime as ort
    before = rss_mb()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = spec["threads"] or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sess = ort.InferenceSession(spec["path"], options, providers=["CPUExecutionProvider"])
    run = lambda: sess.run(None, {sess.get_inputs()[0].name: image})
elif spec["kind"] == "openvino":
    sys.modules.setdefault("openvino_telemetry", None)  # no usage telemetry (runtimes.no_openvino_telemetry)
    import openvino as ov
    before = rss_mb()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": spec["hint"] or "f32"}
    if spec["threads"]:
        config["INFERENCE_NUM_THREADS"] = spec["threads"]
    request = ov.Core().compile_model(spec["path"], "CPU", config).create_infer_request()
    run = lambda: request.infer({0: image})
elif spec["kind"] == "litert":
    from ai_edge_litert.interpreter import Interpreter
    before = rss_mb()
    interpreter = Interpreter(model_path=spec["path"], num_threads=spec["threads"] or None)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    def run():
        interpreter.set_tensor(index, image)
        interpreter.invoke()
else:
    import torch
    from edgedepth.student.model.config import ModelConfig
    from edgedepth.student.deploy.export import ExportModel
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    data = torch.load(spec["path"], weights_only=True)
    x = torch.from_numpy(image)
    before = rss_mb()
    config = ModelConfig.from_dict(data["config"])
    model = config.build()
    model.load_state_dict(data["state"])
    wrapper = ExportModel(model, config).eval()
    def run():
        with torch.inference_mode():
            wrapper(x)
for _ in range(spec["runs"]):
    run()
print(json.dumps({"peak_mb": max(0.0, peak_mb() - before)}))
"""


def peak_memory_mb(
    kind: str,
    path: str | Path,
    shape: Sequence[int],
    dtype: str,
    threads: int | None = None,
    hint: str | None = None,
) -> float:
    """Peak RSS growth (MiB) of a fresh process that creates the model / session and runs it
    ``MEMORY_RUNS`` times; ``kind`` is "onnxruntime" (``path`` an ONNX file), "openvino" (an IR
    ``.xml``; ``hint`` its inference precision, f32 or bf16), "litert" (a ``.tflite``) or "torch"
    (``path`` a file of ``{"config": ModelConfig dict, "state": state dict}``)."""
    spec = {"kind": kind, "path": str(path), "shape": list(shape), "dtype": dtype, "threads": threads}
    spec["hint"] = hint
    spec["runs"] = MEMORY_RUNS
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, json.dumps(spec)], capture_output=True, text=True, env=env,
        timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe failed: {last}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


__all__ = ["MEMORY_RUNS", "RSS_NOTE", "peak_memory_mb"]
