"""The result of a backend speed sweep: one row per model x backend x precision, as a table,
JSON (bench.json) and a grouped fps chart (``edgedepth.student.deploy.speed.bench_variants``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgedepth.common import save_figure, write_text_atomic


@dataclass(frozen=True)
class BenchRow:
    """One model x backend x precision. Timings are None unless ``status`` is "ok"."""

    variant: str
    backend: str
    precision: str
    status: str  # "ok", "not installed", "skipped", "failed"
    input_size: tuple[int, int]  # (height, width)
    output_size: tuple[int, int]
    parameters: int
    macs: int
    latency_ms: float | None = None  # median
    p10_ms: float | None = None
    p90_ms: float | None = None
    fps: float | None = None  # 1000 / median latency, batch 1
    peak_memory_mb: float | None = None
    memory: str = ""  # what peak_memory_mb measures
    note: str = ""

    @property
    def spread_ms(self) -> float | None:
        return None if self.p10_ms is None or self.p90_ms is None else self.p90_ms - self.p10_ms

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "spread_ms": self.spread_ms}


@dataclass
class BenchResult:
    """The rows of one sweep and its settings (batch, device, threads, repeats, versions, source)."""

    rows: list[BenchRow]
    settings: dict[str, object] = field(default_factory=dict)

    def row(self, variant: str, backend: str, precision: str) -> BenchRow | None:
        return next(
            (r for r in self.rows if (r.variant, r.backend, r.precision) == (variant, backend, precision)),
            None,
        )

    def columns(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((r.backend, r.precision) for r in self.rows))

    def format_table(self) -> str:
        """Table VI's shape (model, output, fps per backend / precision, params, MACs), then one line per
        row with latency, spread, memory and status."""
        cols = self.columns()
        models = list(dict.fromkeys(r.variant for r in self.rows))
        heads = [f"{b} {p} fps" for b, p in cols]
        widths = [max(len(h), 15) + 2 for h in heads]
        header = f"{'model':<10}{'input':>9}{'output':>9}{'params (M)':>12}{'MACs (G)':>10}"
        header += "".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True))
        lines = [header, "-" * len(header)]
        for model in models:
            first = next(r for r in self.rows if r.variant == model)
            line = (
                f"{model:<10}{wxh(first.input_size):>9}{wxh(first.output_size):>9}"
                f"{first.parameters / 1e6:>12.3f}{first.macs / 1e9:>10.3f}"
            )
            for (backend, precision), width in zip(cols, widths, strict=True):
                row = self.row(model, backend, precision)
                cell = "-" if row is None else _cell(row)
                line += f"{cell:>{width}}"
            lines.append(line)
        lines += ["", f"{'model':<10}{'backend':<13}{'prec':<6}{'median ms':>10}{'p10-p90 ms':>14}"
                      f"{'fps':>8}{'peak MB':>9}  status"]  # fmt: skip
        for r in self.rows:
            spread = f"{r.p10_ms:.1f}-{r.p90_ms:.1f}" if r.p10_ms is not None else "-"
            status = r.status + (f": {r.note}" if r.note else "")
            lines.append(
                f"{r.variant:<10}{r.backend:<13}{r.precision:<6}{_num(r.latency_ms, 10, 2)}{spread:>14}"
                f"{_num(r.fps, 8, 1)}{_num(r.peak_memory_mb, 9, 1)}  {status}"
            )
        notes = [f"{k}: {v}" for k, v in self.settings.items()]
        return "\n".join(lines + ([""] + notes if notes else []))

    def to_dict(self) -> dict[str, object]:
        return {"settings": self.settings, "rows": [r.as_dict() for r in self.rows]}

    def save_json(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def plot(self, path: str | Path, title: str = "frames per second, batch 1") -> None:
        """Grouped bar chart of fps per model, one bar per backend / precision, written as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = self.columns()
        models = list(dict.fromkeys(r.variant for r in self.rows))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(models) + 2), 4))
        width = 0.8 / max(len(cols), 1)
        for k, (backend, precision) in enumerate(cols):
            picked = [self.row(m, backend, precision) for m in models]
            values = [r.fps if r is not None and r.fps is not None else 0.0 for r in picked]
            missing = all(r is None or r.status != "ok" for r in picked)
            label = f"{backend} {precision}" + (" (not run)" if missing else "")
            bars = ax.bar([i + k * width for i in range(len(models))], values, width, label=label)
            for bar, r in zip(bars, picked, strict=True):
                if r is not None and r.fps is not None:
                    ax.annotate(
                        f"{r.fps:.0f}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        ax.set_xticks([i + width * (len(cols) - 1) / 2 for i in range(len(models))], models)
        ax.set_ylabel("frames per second (1000 / median ms)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, path, dpi=120)
        plt.close(fig)


def wxh(size: Sequence[int]) -> str:
    """The (height, width) size as "WxH" text."""
    return f"{size[1]}x{size[0]}"


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def _cell(row: BenchRow) -> str:
    if row.status == "ok" and row.fps is not None:
        return f"{row.fps:.1f} ({row.latency_ms:.1f} ms)"
    return row.status


__all__ = ["BenchResult", "BenchRow"]
