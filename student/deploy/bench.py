"""Size, cost and speed of the student variants: the rows behind `edgedepth student summary`,
the demo and `benchmarks/student_speed.py`."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch

from edgedepth.common import save_figure
from edgedepth.student.deploy.speed import bench_variants  # backend timings, re-exported here
from edgedepth.student.deploy.speed_result import BenchResult, BenchRow
from edgedepth.student.deploy.timing import time_runs
from edgedepth.student.model import (
    MAX_NUM_CLASSES,
    VARIANTS,
    build_student,
    check_input_size,
    count_macs,
    count_parameters,
    output_size,
)

DEFAULT_SIZES = ((320, 480), (320, 1056))
"""(height, width) inputs of the paper: Table VI (edge) and the training size."""


@dataclass(frozen=True)
class VariantRow:
    """One variant at one input size; latency only when measured."""

    variant: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    parameters: int
    macs: int
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def measure_latency(
    model: torch.nn.Module, size: tuple[int, int], device: str = "cpu", repeats: int = 20, warmup: int = 3
) -> float:
    """Median wall time in milliseconds of one inference pass (batch 1, eager, after warm-up)."""
    model = model.to(device).eval()
    x = torch.rand(1, 3, *size, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with torch.inference_mode():
        return statistics.median(time_runs(lambda: model(x), repeats, warmup, sync))


def summarize_variants(
    variants: Iterable[str] = VARIANTS,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    num_classes: int = 19,
    seg: bool = True,
    latency: bool = False,
    device: str = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    arch: str = "paper",
) -> list[VariantRow]:
    """Parameters, multiply-adds, output size (and optionally latency) for each variant and size of
    the ``arch`` decoder. Every size and the class count are checked before anything is built."""
    if not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise ValueError(f"--num-classes must be 1..{MAX_NUM_CLASSES}, got {num_classes}")
    for size in sizes:
        check_input_size(*size)
    rows = []
    for variant in variants:
        model = build_student(variant, num_classes=num_classes, seg=seg, return_classes=seg, arch=arch)
        params = count_parameters(model)
        for size in sizes:
            ms = measure_latency(model, size, device, repeats, warmup) if latency else None
            rows.append(
                VariantRow(
                    variant, tuple(size), output_size(variant, *size), params, count_macs(model, size), ms
                )
            )
    return rows


def format_table(rows: Sequence[VariantRow]) -> str:
    """A fixed-width text table; sizes are written W x H as in the paper."""
    with_latency = any(r.latency_ms is not None for r in rows)
    header = f"{'variant':<8}{'input':>11}{'output':>10}{'params (M)':>12}{'MACs (G)':>10}"
    header += f"{'latency (ms)':>14}" if with_latency else ""
    lines = [header, "-" * len(header)]
    for r in rows:
        line = (
            f"{r.variant:<8}{_wxh(r.input_size):>11}{_wxh(r.output_size):>10}"
            f"{r.parameters / 1e6:>12.3f}{r.macs / 1e9:>10.3f}"
        )
        if with_latency:
            line += f"{r.latency_ms:>14.1f}" if r.latency_ms is not None else f"{'-':>14}"
        lines.append(line)
    return "\n".join(lines)


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def plot_latency(rows: Sequence[VariantRow], path: str, title: str = "student latency") -> None:
    """Bar chart of latency per variant and input size, with MACs annotated, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.input_size for r in rows})
    variants = list(dict.fromkeys(r.variant for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(sizes)
    for k, size in enumerate(sizes):
        picked = [next(r for r in rows if r.variant == v and r.input_size == size) for v in variants]
        xs = [i + k * width for i in range(len(variants))]
        bars = ax.bar(xs, [r.latency_ms or 0.0 for r in picked], width, label=f"input {_wxh(size)}")
        for bar, r in zip(bars, picked, strict=True):
            ax.annotate(
                f"{r.macs / 1e9:.2f} G",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks([i + width * (len(sizes) - 1) / 2 for i in range(len(variants))], variants)
    ax.set_xlabel("student variant (labels: multiply-adds)")
    ax.set_ylabel("median latency (ms, batch 1)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


__all__ = [
    "DEFAULT_SIZES",
    "BenchResult",
    "BenchRow",
    "VariantRow",
    "bench_variants",
    "format_table",
    "measure_latency",
    "plot_latency",
    "summarize_variants",
]
