"""What the demo records: its settings per kind of data, and the steps, figures and times the report
shows (also written as OUT/demo.json)."""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoSettings:
    """What the demo does with one kind of data. Sizes are (height, width); depths in metres.

    ``min_depth`` / ``max_depth`` None: the data's range (rig: calib.json's ``depth_range_m``; none
    declared: 1-80 m, what training falls back to); ``bin_width`` None: a round width giving at least 30 bins.
    ``resolved`` fills them in.
    """

    scene: str
    bin_width: float | None
    min_depth: float | None
    max_depth: float | None
    min_count: int
    train_size: tuple[int, int]
    epochs: int
    iters_per_epoch: int
    batch_size: int
    export_size: tuple[int, int]
    bench_repeats: int = 20
    depth_source: str = ""  # where the depth range came from (set by ``resolved``)
    variants: tuple[str, ...] = ("L", "XS")  # exported and timed
    precisions: tuple[str, ...] = ("fp32", "int8")
    quick: bool = False  # ``quick_settings``: the short path of ``edgedepth demo --quick``
    # One frame teaches the network where its content sits (docs/evaluation.md, "Border stripes"):
    # random crops of up to 1/crop_zoom of each side move it, every step.
    crop_zoom: float = 1.5

    def resolved(self, data_range: tuple[float, float] | None) -> DemoSettings:
        """The settings with the depth range and bin width filled in from the data's declared range."""
        if self.min_depth is not None and self.max_depth is not None:
            lo, hi, source = self.min_depth, self.max_depth, self.depth_source or "the demo's settings"
        elif data_range is not None:
            (lo, hi), source = data_range, "calib.json depth_range_m"
        else:
            lo, hi, source = 1.0, 80.0, "no depth_range_m declared: 1-80 m"
        width = self.bin_width if self.bin_width is not None else nice_bin_width(hi - lo)
        return replace(self, min_depth=float(lo), max_depth=float(hi), bin_width=width, depth_source=source)


def nice_bin_width(span_m: float, bins: int = 30) -> float:
    """The widest round bin width (1, 2, 2.5 or 5 x 10^k m) giving at least ``bins`` bins over ``span_m``."""
    if not span_m > 0:
        raise ValueError(f"need a positive depth span, got {span_m} m")
    raw = span_m / bins
    scale = 10.0 ** math.floor(math.log10(raw))
    return round(max(step * scale for step in (1, 2, 2.5, 5) if step * scale <= raw * (1 + 1e-9)), 12)


MOTORCYCLE = DemoSettings(
    scene="Middlebury 2014 'Motorcycle' (shipped by scikit-image): an indoor stereo pair 2-5 m deep, "
    "not a KITTI road scene; one frame, so the student is trained and scored on the same image",
    bin_width=0.25, min_depth=None, max_depth=None, min_count=20,
    train_size=(256, 384), epochs=4, iters_per_epoch=40, batch_size=4, export_size=(256, 384),
)  # fmt: skip
KITTI = DemoSettings(
    scene="KITTI raw frames given with --data-root",
    bin_width=1.0, min_depth=1.0, max_depth=80.0, min_count=100,
    train_size=(192, 640), epochs=4, iters_per_epoch=40, batch_size=4, export_size=(192, 640),
    depth_source="KITTI's 1-80 m",
)  # fmt: skip
RIG = DemoSettings(
    scene="rig-layout stereo sequences given with --data-root",
    bin_width=None, min_depth=None, max_depth=None, min_count=100,
    train_size=(256, 384), epochs=4, iters_per_epoch=40, batch_size=4, export_size=(256, 384),
)  # fmt: skip


def quick_settings(settings: DemoSettings) -> DemoSettings:
    """``edgedepth demo --quick``: a quarter of the training steps at half the size (each side),
    batch 2, only the L model exported (FP32 and INT8) and 5 timed runs per file."""
    h, w = settings.train_size
    eh, ew = settings.export_size
    return replace(
        settings, train_size=(h // 2 // 32 * 32, w // 2 // 32 * 32), epochs=2, iters_per_epoch=20, batch_size=2,
        export_size=(eh // 2 // 32 * 32, ew // 2 // 32 * 32), bench_repeats=5, variants=("L",), quick=True,
    )  # fmt: skip


def machine_line(size: tuple[int, int], threads: object) -> str:
    """The machine a speed was measured on: CPU model, thread count and input size (height, width)."""
    import platform

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return f"{model}, {threads or '?'} thread(s), input {size[1]}x{size[0]} px"


def contention_warning(rows: object, ratio: float = 2.0) -> str:
    """A warning when a timed row's p90 is over ``ratio`` times its p10: other work shared the
    cores, so the medians are unreliable; "" when every spread is tight."""
    wide = [r for r in rows if r.p10_ms and r.p90_ms and r.p90_ms > ratio * r.p10_ms]  # type: ignore[attr-defined]
    if not wide:
        return ""
    worst = max(wide, key=lambda r: r.p90_ms / r.p10_ms)
    return (f"warning: the machine looks busy: p10-p90 spread up to {worst.p10_ms:.0f}-{worst.p90_ms:.0f} ms "
            f"({worst.variant} {worst.backend} {worst.precision}); other work shared the cores, so these "
            "speeds are not this machine's best; run the bench command again when it is idle")  # fmt: skip


@dataclass(frozen=True)
class Figure:
    """A PNG of the report: path relative to the output folder, what it shows, what made it."""

    path: str
    caption: str
    command: str


@dataclass
class Step:
    """One stage of the demo as the report shows it."""

    key: str
    title: str
    command: str
    status: str = "done"  # done | reused (finished by an earlier run, settings unchanged) | skipped
    seconds: float = 0.0
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    figures_measured: dict[str, float] = field(default_factory=dict)


@dataclass
class DemoResult:
    """Everything the report needs; also written as OUT/demo.json."""

    out_dir: Path
    data: str
    settings: DemoSettings
    steps: list[Step] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    layout: str = "rig"

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data


def command(*parts: object) -> str:
    """``edgedepth`` and its arguments, each quoted for a shell where needed."""
    return "edgedepth " + " ".join(shlex.quote(str(p)) for p in parts)


class StepTimer:
    """Times one step, logs its start, appends it to the result when done; ``done`` is called with
    the step when it succeeded (the demo stamps it for reuse)."""

    def __init__(
        self,
        result: DemoResult,
        step: Step,
        log: Log,
        number: int,
        total: int,
        done: Callable[[Step], None] | None = None,
    ) -> None:
        self.result, self.step, self.log, self.number, self.total = result, step, log, number, total
        self.done = done

    def __enter__(self) -> Step:
        self.log(f"[{self.number}/{self.total}] {self.step.title}: {self.step.command}")
        self.started = time.perf_counter()
        return self.step

    def __exit__(self, kind: object, *exc: object) -> None:
        self.step.seconds = time.perf_counter() - self.started
        self.result.steps.append(self.step)
        if kind is None and self.done is not None:
            self.done(self.step)


__all__ = [
    "KITTI",
    "MOTORCYCLE",
    "RIG",
    "DemoResult",
    "DemoSettings",
    "Figure",
    "Log",
    "Step",
    "StepTimer",
    "command",
    "contention_warning",
    "machine_line",
    "nice_bin_width",
    "quick_settings",
]
