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
    file: str = ""  # the exported file timed ("" for the PyTorch rows)
    abs_rel: float | None = None  # held-out accuracy of this file on its runtime (bench --eval-root)
    rmse: float | None = None  # metres
    delta1: float | None = None  # share of pixels with max(pred/gt, gt/pred) < 1.25
    eval_frames: int | None = None
    flag: str = ""  # why the row is flagged (an INT8 file much worse than its FP32 file)

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
        accuracy = self.has_accuracy()
        head = f"{'model':<10}{'backend':<13}{'prec':<6}{'median ms':>10}{'p10-p90 ms':>14}{'fps':>8}{'peak MB':>9}"
        head += f"{'Abs Rel':>9}{'RMSE m':>8}" if accuracy else ""
        lines += ["", head + "  status"]
        for r in self.rows:
            spread = f"{r.p10_ms:.1f}-{r.p90_ms:.1f}" if r.p10_ms is not None else "-"
            status = r.status + (f": {r.note}" if r.note else "") + (f" FLAGGED: {r.flag}" if r.flag else "")
            line = f"{r.variant:<10}{r.backend:<13}{r.precision:<6}{_num(r.latency_ms, 10, 2)}{spread:>14}"
            line += f"{_num(r.fps, 8, 1)}{_num(r.peak_memory_mb, 9, 1)}"
            line += f"{_num(r.abs_rel, 9, 4)}{_num(r.rmse, 8, 3)}" if accuracy else ""
            lines.append(f"{line}  {status}")
        notes = [f"{k}: {v}" for k, v in self.settings.items()]
        return "\n".join(lines + ([""] + notes if notes else []))

    def has_accuracy(self) -> bool:
        return any(r.abs_rel is not None for r in self.rows)

    def format_markdown(self) -> str:
        """bench.md: one row per file (speed, memory, held-out accuracy, flag), then the settings."""
        lines = [
            "| model | backend | precision | file | fps | median ms | p10-p90 ms | peak MB | Abs Rel | RMSE (m) "
            "| δ<1.25 | status |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in self.rows:
            spread = f"{r.p10_ms:.1f}-{r.p90_ms:.1f}" if r.p10_ms is not None else "-"
            status = r.status + (f": {r.note}" if r.note else "")
            status += f" **FLAGGED: {r.flag}**" if r.flag else ""
            cells = [r.variant, r.backend, r.precision, f"`{r.file}`" if r.file else "-",
                     _md(r.fps, 1), _md(r.latency_ms, 2), spread, _md(r.peak_memory_mb, 0),
                     _md(r.abs_rel, 4), _md(r.rmse, 3), _md(r.delta1, 3), status.replace("|", "/")]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", *(f"- {k}: {v}" for k, v in self.settings.items())]
        return "\n".join(lines) + "\n"

    def save_markdown(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.format_markdown())

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


def pareto_front(rows: Sequence[BenchRow]) -> list[BenchRow]:
    """The rows no other row beats on both fps (higher) and held-out Abs Rel (lower), by fps."""
    scored = [r for r in rows if r.status == "ok" and r.fps is not None and r.abs_rel is not None]
    front = [
        r
        for r in scored
        if not any(
            o.fps >= r.fps and o.abs_rel <= r.abs_rel and (o.fps > r.fps or o.abs_rel < r.abs_rel)
            for o in scored
        )
    ]
    return sorted(front, key=lambda r: r.fps)


def plot_pareto(result: BenchResult, path: str | Path, title: str = "") -> None:
    """Held-out Abs Rel against fps, one marker per file, the Pareto front drawn; rows with speed
    but no accuracy (an untrained baseline) are dashed vertical lines at their fps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"torch": "o", "onnxruntime": "s", "openvino": "D", "litert": "^", "tensorrt": "v"}
    colours = {"fp32": "tab:blue", "fp16": "tab:green", "int8": "tab:red", "bf16": "tab:purple"}
    fig, ax = plt.subplots(figsize=(8, 5))
    ok = [r for r in result.rows if r.status == "ok" and r.fps is not None]
    for r in ok:
        if r.abs_rel is None:
            ax.axvline(r.fps, color="0.5", linestyle="--", linewidth=1)
            ax.annotate(f"{r.variant} {r.backend} {r.precision}: no accuracy", (r.fps, 1.0),
                        xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right", fontsize=7)  # fmt: skip
            continue
        edge = "black" if r.flag else "none"
        ax.scatter(r.fps, r.abs_rel, marker=markers.get(r.backend, "o"), color=colours.get(r.precision, "0.3"),
                   edgecolors=edge, linewidths=1.5, s=50, zorder=3)  # fmt: skip
        ax.annotate(f"{r.variant} {r.backend} {r.precision}", (r.fps, r.abs_rel), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)  # fmt: skip
    front = pareto_front(result.rows)
    if front:
        ax.step([r.fps for r in front], [r.abs_rel for r in front], where="post", color="0.2", linewidth=1,
                label="Pareto front (faster and more accurate)")  # fmt: skip
    for backend, marker in markers.items():
        if any(r.backend == backend and r.abs_rel is not None for r in ok):
            ax.scatter([], [], marker=marker, color="0.4", label=backend)
    for precision, colour in colours.items():
        if any(r.precision == precision and r.abs_rel is not None for r in ok):
            ax.scatter([], [], marker="o", color=colour, label=precision)
    ax.set_xlabel("frames per second, batch 1 (1000 / median ms)")
    ax.set_ylabel("held-out Abs Rel (lower is better)")
    machine = ", ".join(f"{k} {result.settings[k]}" for k in ("device", "threads") if k in result.settings)
    ax.set_title(title or f"speed at accuracy ({machine})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def wxh(size: Sequence[int]) -> str:
    """The (height, width) size as "WxH" text."""
    return f"{size[1]}x{size[0]}"


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def _md(value: float | None, digits: int) -> str:
    return f"{value:.{digits}f}" if value is not None else "-"


def _cell(row: BenchRow) -> str:
    if row.status == "ok" and row.fps is not None:
        return f"{row.fps:.1f} ({row.latency_ms:.1f} ms)"
    return row.status


__all__ = ["BenchResult", "BenchRow", "pareto_front", "plot_pareto", "wxh"]
