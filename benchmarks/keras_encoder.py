"""What Keras's encoder conventions cost: feature error when ignored, ONNX latency, Pad folding, checks.

Four figures for docs/model.md ("The paper's ImageNet encoder (Keras weights)"):

1. Feature error of Keras weights in a torchvision-style encoder (symmetric padding, epsilon 1e-5)
   against the keras-style encoder that reproduces Keras, and of each convention alone, at
   strides 4, 8, 16, 32 on a photo resized to ``--size``: max |diff|, max |diff| / max |keras|.
   ``--weights FILE.h5`` uses real Keras weights (e.g. the published ImageNet file); without it,
   random weights whose batch-norm statistics come from train-mode passes over scikit-image photos
   (the script says which it used).
2. Latency of the L student (paper decoder, depth only) at ``--size``, keras vs torchvision style,
   same weights, each exported by the legacy exporter at opset 13 (what the trt8 export uses), by
   the dynamo exporter at opset 20 (trt10), and the legacy file after ``onnxscript.optimizer
   .optimize``; ONNX Runtime CPU, every graph optimisation, batch 1. All six files are timed in
   each of ``--rounds`` rounds (10 runs each, after a pause and one untimed run; the order reversed
   every other round) in one process; with ``--threads 1`` also the CPU time of the computing thread;
   the keras / torchvision ratio is taken within each round (so drift of a shared CPU cancels)
   and its median and quartiles over the rounds are printed, with the Pad nodes of each file.
3. Whether ONNX Runtime folds the Pad nodes into the convolutions: the Pad count of the optimised
   graph it writes (``SessionOptions.optimized_model_filepath``) at each optimisation level.
4. ``edgedepth.student.deploy.onnx_checks.check_structure`` for trt8 and trt10 on the keras-style student exported by
   ``edgedepth.student.deploy.export.export_onnx`` (the real export path).

Run: `.venv/bin/python benchmarks/keras_encoder.py [--weights FILE.h5]` (a few minutes on 2 cores).
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import click
import cv2
import numpy as np
import onnx
import onnxruntime as ort
import onnxscript.optimizer
import torch
from edge_speed import SETTLE_S, export_legacy, photos

from edgedepth.student.deploy.export import export_onnx
from edgedepth.student.deploy.timing import ort_session, time_runs
from edgedepth.student.model.build import build_student
from edgedepth.student.model.checkpoint import save_checkpoint
from edgedepth.student.model.config import ModelConfig
from edgedepth.student.model.keras_weights import load_keras_encoder
from edgedepth.student.model.network import KERAS_BN_EPS, STRIDE, MobileNetV2Encoder

STYLES = {  # name -> (encoder style, batch-norm epsilon)
    "keras (Keras's padding, eps 1e-3)": ("keras", KERAS_BN_EPS),
    "torchvision (symmetric padding, eps 1e-5)": ("torchvision", 1e-5),
    "padding only wrong (symmetric, eps 1e-3)": ("torchvision", KERAS_BN_EPS),
    "epsilon only wrong (Keras's padding, eps 1e-5)": ("keras", 1e-5),
}


def _input(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """RGB uint8 photo -> (1, 3, H, W) in Keras's scaling, x / 127.5 - 1."""
    x = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def reference_encoder(weights: Path | None, size: tuple[int, int]) -> tuple[MobileNetV2Encoder, str]:
    """The keras-style encoder with the file's weights, or random weights, statistics from photos."""
    torch.manual_seed(0)
    encoder = MobileNetV2Encoder(style="keras")
    if weights is not None:
        load_keras_encoder(encoder, weights)
        return encoder.eval(), f"Keras weights from {weights}"
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration passes
    encoder.train()
    with torch.no_grad():
        for image in photos()[:-1] * 2:
            encoder(_input(image, (size[0] // 2 // STRIDE * STRIDE, size[1] // 2 // STRIDE * STRIDE)))
    return encoder.eval(), "random weights, batch-norm statistics from scikit-image photos"


def feature_errors(reference: MobileNetV2Encoder, size: tuple[int, int]) -> None:
    x = _input(photos()[-1], size)  # the motorcycle's right view, not among the calibration photos
    variances = torch.cat([m.running_var for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    with torch.no_grad():
        want = reference(x)
        click.echo(
            f"\n1. features at {size[1]}x{size[0]}; batch-norm channels with variance < 1e-3: "
            f"{int((variances < 1e-3).sum())} of {variances.numel()}, < 1e-5: {int((variances < 1e-5).sum())}"
        )
        click.echo("   per stride: max |diff| (max |diff| / max |keras|, mean |diff| / mean |keras|)")
        click.echo(f"   max |keras|: {', '.join(f'{float(w.abs().max()):.3g}' for w in want)}")
        for name, (style, eps) in STYLES.items():
            encoder = MobileNetV2Encoder(style=style)
            encoder.load_state_dict(reference.state_dict())
            for module in encoder.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eps = eps
            got = encoder.eval()(x)
            cells = [
                f"{float((g - w).abs().max()):.3g} ({float((g - w).abs().max() / w.abs().max()):.1%}, "
                f"{float((g - w).abs().mean() / w.abs().mean()):.1%})"
                for g, w in zip(got, want, strict=True)
            ]
            click.echo(
                f"   {name:48s} "
                + "  ".join(f"s{s}: {c}" for s, c in zip((4, 8, 16, 32), cells, strict=True))
            )


def export_dynamo(model: torch.nn.Module, path: Path, size: tuple[int, int]) -> Path:
    """``model`` as ONNX by the dynamo exporter at opset 20 (what the trt10 export uses)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(1, 3, *size),), str(path), dynamo=True, external_data=False, opset_version=20,
            input_names=["image"], output_names=["depth"], verbose=False,
        )  # fmt: skip
    return path


def paired_rounds(files: dict[str, str], image: np.ndarray, threads: int, rounds: int, runs: int = 10):
    """Per model, each round's median wall time and median CPU time of the calling thread (ms).

    With one intra-op thread ONNX Runtime computes on the calling thread, so its CPU time is the
    model's cost even when other processes share the cores (wall time then includes their slices).
    """
    sessions = {name: ort_session(path, threads) for name, path in files.items()}
    wall: dict[str, list[float]] = {name: [] for name in files}
    cpu: dict[str, list[float]] = {name: [] for name in files}
    for sess in sessions.values():
        time_runs(lambda s=sess: s.run(None, {"image": image}), 0, 5)
    for round_index in range(rounds):
        order = list(sessions.items())  # reversed every other round: no model always runs first
        for name, sess in order if round_index % 2 == 0 else order[::-1]:
            time.sleep(SETTLE_S)  # the previous session's intra-op threads spin on after its last run
            sess.run(None, {"image": image})
            walls, cpus = [], []
            for _ in range(runs):
                start_wall, start_cpu = time.perf_counter(), time.thread_time()
                sess.run(None, {"image": image})
                cpus.append((time.thread_time() - start_cpu) * 1000.0)
                walls.append((time.perf_counter() - start_wall) * 1000.0)
            wall[name].append(statistics.median(walls))
            cpu[name].append(statistics.median(cpus))
    return wall, cpu


def latency(reference: MobileNetV2Encoder, size, tmp: Path, threads, rounds: int) -> dict[str, str]:
    """Interleaved ORT latency of L, keras vs torchvision style, same weights, both exporters."""
    torch.manual_seed(1)
    keras_student = build_student("L", seg=False, encoder_style="keras").eval()
    keras_student.encoder.load_state_dict(reference.state_dict())
    tv_student = build_student("L", seg=False).eval()
    tv_student.load_state_dict(keras_student.state_dict())
    files = {}
    for exporter, export in (("legacy", export_legacy), ("dynamo", export_dynamo)):
        for style, model in (("torchvision", tv_student), ("keras", keras_student)):
            files[f"{exporter}, {style}"] = str(export(model, tmp / f"{style}_{exporter}.onnx", size))
    for style in ("torchvision", "keras"):  # the legacy file after onnxscript's constant folding
        folded = onnxscript.optimizer.optimize(onnx.load(files[f"legacy, {style}"]))
        onnx.save(folded, path := str(tmp / f"{style}_legacy_folded.onnx"))
        files[f"legacy+onnxscript, {style}"] = path
    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, *size)).astype(np.float32)
    threads = threads or os.cpu_count()
    click.echo(
        f"\n2. L at {size[1]}x{size[0]}, ONNX Runtime {ort.__version__} CPU, {threads} threads, all graph "
        f"optimisations, {rounds} interleaved rounds of 10 runs (legacy: opset 13, dynamo: opset 20)"
    )
    wall, cpu = paired_rounds(files, image, threads, rounds)
    figures = {"wall": wall, "CPU": cpu} if threads == 1 else {"wall": wall}
    for name, path in files.items():
        pads = sum(n.op_type == "Pad" for n in onnx.load(path).graph.node)
        medians = ", ".join(f"{kind} {statistics.median(t[name]):7.2f} ms" for kind, t in figures.items())
        click.echo(f"   {name:30s} Pad nodes in the file: {pads}; median over rounds: {medians}")
    for exporter in ("legacy", "dynamo", "legacy+onnxscript"):
        for kind, times in figures.items():
            pairs = zip(times[f"{exporter}, keras"], times[f"{exporter}, torchvision"], strict=True)
            ratios = sorted(k / t for k, t in pairs)
            q1, q3 = ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]
            click.echo(
                f"   {exporter:18s} keras / torchvision {kind:4s} time, same round: "
                f"median {statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f})"
            )
    return files


def pad_folding(files: dict[str, str], tmp: Path) -> None:
    click.echo("\n3. Pad nodes left in ONNX Runtime's optimised graph (optimized_model_filepath)")
    for name, path in files.items():
        if "torchvision" in name:
            continue
        counts = []
        for level in ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"):
            options = ort.SessionOptions()
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
            options.optimized_model_filepath = str(tmp / f"optimised_{level}.onnx")
            options.log_severity_level = 3
            ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            graph = onnx.load(options.optimized_model_filepath).graph
            reorders = sum(n.op_type.startswith("Reorder") for n in graph.node)
            counts.append(f"{level.split('_')[-1].lower()} {sum(n.op_type == 'Pad' for n in graph.node)}")
        click.echo(f"   {name:30s} Pads after {', '.join(counts)} (NCHWc reorders at all: {reorders})")


def structure_checks(size, tmp: Path) -> None:
    click.echo(
        "\n4. edgedepth.student.deploy.onnx_checks on the keras-style L exported by edgedepth.student.deploy.export.export_onnx"
    )
    config = ModelConfig(variant="L", input_size=size).with_encoder_style("keras")
    torch.manual_seed(2)
    model = config.build().eval()
    ckpt = save_checkpoint(
        tmp / "keras.pt",
        {"model_config": config.to_dict(), "model": model.state_dict(), "epoch": 0, "step": 0},
    )
    for target in ("trt8", "trt10"):
        try:
            manifest = export_onnx(ckpt, tmp / target, ("L",), size, target, progress=False)
            entry = manifest.files[0]
            click.echo(f"   {target}: passes; ops {', '.join(entry['ops'])}")
        except ValueError as err:
            click.echo(f"   {target}: FAILS: {err}")


@click.command()
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A Keras MobileNetV2 0.35 weights file (default: random weights).")  # fmt: skip
@click.option("--size", default="480x320", show_default=True, help="Input WxH (multiples of 32).")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--rounds", default=30, show_default=True, help="Interleaved timing rounds (10 runs each).")
def main(weights: Path | None, size: str, threads: int | None, rounds: int) -> None:
    width, height = (int(v) for v in size.lower().split("x"))
    hw = (height, width)
    reference, source = reference_encoder(weights, hw)
    click.echo(f"encoder: {source}")
    feature_errors(reference, hw)
    with tempfile.TemporaryDirectory(prefix="keras-encoder-") as tmp:
        files = latency(reference, hw, Path(tmp), threads, rounds)
        pad_folding(files, Path(tmp))
        structure_checks(hw, Path(tmp))


if __name__ == "__main__":
    main()
