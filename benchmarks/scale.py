"""Label generation, calibration and training at KITTI scale: wall time and memory against N frames.

Builds the data itself: the one real KITTI raw frame (``--kitti-sample``, default
$EDGEDEPTH_KITTI_SAMPLE, else ../shared/data/kitti_raw_sample) replicated into a KITTI raw tree of N
frames in drives of at most ``--drive-frames`` frames, and at least two drives (so that the held-out
drive of ``calib fit`` and ``student train`` exists): one date with its calibration files copied,
``image_02``, ``image_03`` and ``velodyne_points`` each with ``data/`` and ``timestamps.txt`` as KITTI
lays them out. The first drive's frame 0 is a real copy; every other frame is a relative symlink to
it, so every path stays inside the tree. 20 000 frames take about 2 s.

Then, per N, it runs the public command line as subprocesses (never the library's internals):
``labelgen plan --shard-size S``; ``labelgen run --stages images,lidar --workers W`` (first run);
the same again (no-op rerun); ``labelgen inspect`` (its default verification); ``labelgen inspect
--verify full`` with 1 and with 2 workers where ``inspect`` takes ``--workers`` (first full
verification rate; otherwise once, and the 2-worker figure is n/a); for N <= ``--teacher-max``,
``labelgen run --stages sgbm`` and ``calib fit --teacher sgbm`` (its defaults); and at every N a short
``student train`` (``--epochs 1 --iters-per-epoch 2 --no-seg`` on the LiDAR labels, validation
included).

How a command is measured: ``benchmarks/process_meter.py``. A command that fails or times out is a
row with its exit status and the last line it printed; nothing is dropped. Each command's output:
OUT/logs/.

Run: `.venv/bin/python benchmarks/scale.py --sizes 10,1000,5000 --workers 2 --out /tmp/scale`; writes
OUT/scale.md (also printed), OUT/scale.json and OUT/scale.png (wall time against N, log-log);
``--baseline`` an earlier scale.json to compare ``calib fit`` with. To measure another copy of the
code, put it first on PYTHONPATH (the header records which ``cli.py`` ran).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: process_meter
from process_meter import FIRST_STEP, measure  # noqa: E402, F401 (FIRST_STEP: read by the tests)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "kitti_raw_sample"
DATE, SOURCE_DRIVE, SOURCE_FRAME = "2011_09_26", "2011_09_26_drive_0001_sync", "0000000005"
CALIB_FILES = ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt")
STREAMS = (("image_02", ".png"), ("image_03", ".png"), ("velodyne_points", ".bin"))
FIRST_RUN, NOOP, FIT, TRAIN = "run images,lidar", "run images,lidar (no-op)", "calib fit", "student train"
VERIFY = ("inspect --verify full, 1 worker", "inspect --verify full, 2 workers")


def build_tree(sample: Path, root: Path, frames: int, drive_frames: int) -> list[str]:
    """A KITTI raw tree of ``frames`` frames (see the module docstring); returns its drives."""
    source = sample / DATE / SOURCE_DRIVE
    if not (sample / DATE / "calib_cam_to_cam.txt").is_file() or not source.is_dir():
        raise click.UsageError(f"{sample}: KITTI sample not found (--kitti-sample, $EDGEDEPTH_KITTI_SAMPLE)")
    date = root / DATE
    date.mkdir(parents=True)
    for name in CALIB_FILES:
        if (sample / DATE / name).is_file():
            shutil.copy(sample / DATE / name, date / name)
    count = max(math.ceil(frames / drive_frames), min(frames, 2))
    per_drive = math.ceil(frames / count)
    drives = [f"{DATE}_drive_{d + 1:04d}_sync" for d in range(math.ceil(frames / per_drive))]
    for d, drive in enumerate(drives):
        n = min(per_drive, frames - d * per_drive)
        day = DATE.replace("_", "-")
        stamps = "".join(f"{day} 13:{i // 600 % 60:02d}:{i / 10 % 60:012.9f}\n" for i in range(n))
        for stream, suffix in STREAMS:
            data = date / drive / stream / "data"
            data.mkdir(parents=True)
            names = ("timestamps.txt", "timestamps_start.txt", "timestamps_end.txt")
            for name in names if stream == "velodyne_points" else names[:1]:
                (date / drive / stream / name).write_text(stamps)
            real = date / drives[0] / stream / "data" / f"{0:010d}{suffix}"
            if d == 0:
                shutil.copy(source / stream / "data" / f"{SOURCE_FRAME}{suffix}", real)
            target = os.path.relpath(real, data)
            for i in range(1 if d == 0 else 0, n):
                os.symlink(target, data / f"{i:010d}{suffix}")
    return drives


@dataclass
class Row:
    """One command at one N: how it ended and what it cost."""

    n: int
    command: str
    status: str  # ok, failed, timeout, skipped
    exit: int | None = None
    wall_s: float | None = None
    driver_mb: float | None = None
    tree_mb: float | None = None
    proc_mb: float | None = None
    procs: int | None = None
    cpu_s: float | None = None
    load: float | None = None
    first_step_s: float | None = None
    detail: str = ""


def edgedepth() -> list[str]:
    """The ``edgedepth`` console script next to this interpreter (the installed CLI)."""
    script = Path(sys.executable).with_name("edgedepth")
    return (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-P", "-c", "from edgedepth.cli import main; main()"]
    )


def has_option(command: list[str], option: str) -> bool:
    """Whether ``edgedepth <command> --help`` lists ``option``."""
    text = subprocess.run(edgedepth() + command + ["--help"], capture_output=True, text=True).stdout
    return re.search(rf"(^|[\s,]){re.escape(option)}\b", text) is not None


def commands(n: int, folder: Path, opts: dict, inspect_workers: bool) -> list[tuple[str, list[str] | str]]:
    """(name, arguments) of each command at N; a string instead of arguments is why it does not run."""
    labels, w = str(folder / "labels"), str(opts["workers"])
    run = ["labelgen", "run", labels, "--stages", "images,lidar", "--workers", w, "--no-progress"]
    plan = ["labelgen", "plan", "--data-root", str(folder / "kitti"), "--out", labels]
    full = ["labelgen", "inspect", labels, "--verify", "full"]
    out: list[tuple[str, list[str] | str]] = [
        ("plan", plan + ["--shard-size", str(opts["shard_size"])]),
        (FIRST_RUN, run),
        (NOOP, run),
        ("inspect", ["labelgen", "inspect", labels]),
        (VERIFY[0], full + ["--workers", "1"] if inspect_workers else full),
        (
            VERIFY[1],
            full + ["--workers", "2"] if inspect_workers else "n/a: labelgen inspect has no --workers",
        ),
    ]
    big = f"N > --teacher-max {opts['teacher_max']}"
    # the short training reads the LiDAR labels, which every N has, so its scaling is seen at every N
    train = ["student", "train", labels, "--out", str(folder / "run"), "--teacher", "lidar", "--no-seg"]
    train += ["--epochs", "1", "--iters-per-epoch", "2", "--batch-size", str(opts["batch_size"])]
    train += ["--workers", str(opts["train_workers"]), "--progress"]
    train_row = (TRAIN, train if opts["train"] else "--no-train")
    if n > opts["teacher_max"]:
        return out + [("run sgbm", big), (FIT, big), train_row]
    return out + [
        ("run sgbm", ["labelgen", "run", labels, "--stages", "sgbm", "--workers", w, "--no-progress"]),
        (
            FIT,
            ["calib", "fit", labels, "--teacher", "sgbm", "--out", str(folder / "lut.json"), "--no-progress"],
        ),
        train_row,
    ]


def run_size(n: int, opts: dict, inspect_workers: bool) -> list[Row]:
    """Build the tree of N frames, run every command on it, return its rows."""
    folder = Path(opts["out"]) / f"N{n}"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    drives = build_tree(Path(opts["kitti_sample"]), folder / "kitti", n, opts["drive_frames"])
    print(f"N={n}: {len(drives)} drive(s) built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    rows: list[Row] = []
    for name, argv in commands(n, folder, opts, inspect_workers):
        if isinstance(argv, str) or (rows and rows[0].status != "ok"):
            rows.append(Row(n, name, "skipped", detail=argv if isinstance(argv, str) else "plan failed"))
            continue
        log = Path(opts["out"]) / "logs" / f"N{n}_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.log"
        row = Row(n, name, **measure(edgedepth() + argv, log, opts["timeout"], first_step=name == TRAIN))
        if name == FIT and row.status == "ok":
            row.detail = "lut sha256 " + json.loads((folder / "lut.json").read_text())["sha256"][:16]
        if name in VERIFY and row.status == "ok":
            said = VERIFIED.search(log.read_text(errors="replace"))  # inspect's own line: reading only
            row.detail = f"reading {said.group(1)} rows/s, {said.group(2)} s" if said else ""
        rows.append(row)
        print(f"  {name}: {row.status} {row.wall_s} s {row.driver_mb} MB {row.detail}", file=sys.stderr)
    if not opts["keep"]:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def _ok(rows: list[dict], command: str) -> dict[int, dict]:
    return {r["n"]: r for r in rows if r["command"] == command and r["status"] == "ok"}


VERIFIED = re.compile(r"verified \d+ shard file\(s\) in full \(\d+ frame rows, (\d+)/s\) in ([\d.]+) s")
"""``labelgen inspect``'s line on its full reads: the rate of the reading itself (workers started)."""


def _rate(row: dict) -> float | None:
    match = re.match(r"reading (\d+) rows/s", row.get("detail", ""))
    return float(match.group(1)) if match else None


def _check(target: str, figure: str, verdict: bool | str) -> dict[str, str]:
    text = verdict if isinstance(verdict, str) else "PASS" if verdict else "MISS"
    return {"target": target, "figure": figure, "verdict": text}


def targets(rows: list[dict], baseline: dict | None) -> list[dict[str, str]]:
    """Issue 19's scale targets from these rows (and ``baseline``'s rows for calib fit)."""
    out, noop, first = [], _ok(rows, NOOP), _ok(rows, FIRST_RUN)
    goal = "no-op rerun wall, largest N / smallest N <= 2x"
    if len(noop) >= 2:
        (lo, a), (hi, b) = ((n, noop[n]["wall_s"]) for n in (min(noop), max(noop)))
        out.append(_check(goal, f"N={hi}: {b:.1f} s / N={lo}: {a:.1f} s = {b / a:.2f}x", b / a <= 2))
    else:
        out.append(_check(goal, "needs two sizes whose no-op rerun is ok", "n/a"))
    if noop:
        n, wall = max(noop), noop[max(noop)]["wall_s"]
        out.append(_check("no-op rerun wall < 3 s (largest N)", f"N={n}: {wall:.1f} s", wall < 3))
    if first:
        n, mb = max(((n, r["driver_mb"]) for n, r in first.items()), key=lambda x: x[1])
        out.append(
            _check("driver RSS of run --stages images,lidar < 200 MB", f"N={n}: {mb:.0f} MB", mb < 200)
        )
    one, two = _ok(rows, VERIFY[0]), _ok(rows, VERIFY[1])
    goal, both = "first full verify: 2 workers >= 1.7x the rate of 1", sorted(set(one) & set(two))
    if both:  # frames x 2 stages (images, lidar) per second
        n = both[-1]
        r1, r2 = 2 * n / one[n]["wall_s"], 2 * n / two[n]["wall_s"]
        whole = f"whole command {r2 / r1:.2f}x ({two[n]['wall_s']:.1f} s vs {one[n]['wall_s']:.1f} s)"
        read1, read2 = _rate(one[n]), _rate(two[n])
        if read1 and read2:  # the verification's own rate, from inspect's line (after workers start)
            figure = f"N={n}: reading {read2:.0f} vs {read1:.0f} rows/s = {read2 / read1:.2f}x; {whole}"
            out.append(_check(goal, figure, read2 / read1 >= 1.7))
        else:
            out.append(_check(goal, f"N={n}: {whole}", r2 / r1 >= 1.7))
    else:
        why = next(
            (r["detail"] for r in rows if r["command"] == VERIFY[1] and r["status"] != "ok"), "not run"
        )
        if one:
            why += f"; 1 worker: {2 * max(one) / one[max(one)]['wall_s']:.1f} frame-stages/s at N={max(one)}"
        out.append(_check(goal, why, "n/a"))
    fit = _ok(rows, FIT)
    if fit:
        n = 1000 if 1000 in fit else max(fit)
        old, goal = (
            _ok(baseline["rows"], FIT).get(n) if baseline else None,
            f"calib fit wall at N={n} <= 0.5x before",
        )
        if old:
            ratio = fit[n]["wall_s"] / old["wall_s"]
            out.append(
                _check(
                    goal, f"{fit[n]['wall_s']:.1f} s vs {old['wall_s']:.1f} s = {ratio:.2f}x", ratio <= 0.5
                )
            )
            same, figure = fit[n]["detail"] == old["detail"], f"{fit[n]['detail']} vs {old['detail']}"
            out.append(_check(f"calib fit LUT at N={n} = the baseline's", figure, same))
        else:
            why = f"baseline has no calib fit at N={n}" if baseline else "no --baseline"
            out.append(_check(goal, f"{fit[n]['wall_s']:.1f} s ({why})", "n/a"))
    train = sorted((n, r) for n, r in _ok(rows, TRAIN).items() if r["first_step_s"] is not None)
    if train:
        figure = "; ".join(
            f"N={n}: {r['first_step_s']:.1f} s, {max(r['driver_mb'], r['proc_mb'] or 0):.0f} MB"
            for n, r in train
        )
        out.append(_check("student train: first step and largest process flat over N", figure, "record"))
    return out


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(result: dict) -> str:
    """The Markdown report: settings, the N x command table, the targets."""
    m = result["meta"]
    lines = [
        f"Scale benchmark, {m['date']}, code {m['code']}; {m['cpus']} CPUs; labelgen run --workers "
        f"{m['workers']}, --shard-size {m['shard_size']}, drives of <= {m['drive_frames']} frames; sgbm "
        f"and calib fit for N <= {m['teacher_max']}. Load average (1, 5, 15 min): "
        f"{m['load_start']} at the start, {m['load_end']} at the end."
        + "".join(f" {k}={v}." for k, v in m.get("env", {}).items()),
        "",
        "| N | command | status | wall s | driver MB | tree MB | proc MB | procs | cpu s | load | note |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["rows"]:
        note = f"first step at {r['first_step_s']:.1f} s" if r["first_step_s"] is not None else ""
        note = "; ".join(x for x in (note, r["detail"].replace("|", "/")) if x)
        status = r["status"] if r["exit"] in (None, 0) else f"{r['status']} (exit {r['exit']})"
        lines.append(
            f"| {r['n']} | {r['command']} | {status} | {_cell(r['wall_s'])} | {_cell(r['driver_mb'], 0)} | "
            f"{_cell(r['tree_mb'], 0)} | {_cell(r['proc_mb'], 0)} | {r['procs'] or '-'} | "
            f"{_cell(r['cpu_s'])} | {_cell(r['load'], 2)} | {note} |"
        )
    lines += ["", "| target | figure | verdict |", "| --- | --- | --- |"]
    lines += [f"| {t['target']} | {t['figure']} | {t['verdict']} |" for t in result["targets"]]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Wall time against N per command, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for command in dict.fromkeys(r["command"] for r in rows):
        points = sorted((n, r["wall_s"]) for n, r in _ok(rows, command).items())
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=command)
    ax.set(xscale="log", yscale="log", xlabel="frames N", ylabel="wall time (s)", title="edgedepth at scale")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _code() -> str:
    """Where the ``edgedepth.cli`` module that the subprocesses import lives, and its commit when it is a checkout."""
    probe = [
        sys.executable,
        "-P",
        "-c",
        "import edgedepth.cli as cli, pathlib; print(pathlib.Path(cli.__file__).parent)",
    ]
    folder = subprocess.run(probe, capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", folder or ".", "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return f"{folder} ({commit.stdout.strip()})" if commit.returncode == 0 else folder


def _load_baseline(path: Path) -> dict:
    """An earlier scale.json; each row must have the fields and types this script writes."""
    try:
        base = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise click.BadParameter(f"{path}: not readable JSON ({err})", param_hint="--baseline") from err
    rows = base.get("rows") if isinstance(base, dict) else None
    types = {"n": int, "command": str, "status": str, "detail": str, "wall_s": float | int | None}
    if not isinstance(rows, list):
        raise click.BadParameter(f"{path}: no list of rows (not a scale.json)", param_hint="--baseline")
    for i, row in enumerate(rows):
        bad = [k for k, t in types.items() if not isinstance(row, dict) or not isinstance(row.get(k, ...), t)]
        if bad:
            raise click.BadParameter(
                f"{path}: rows[{i}].{bad[0]}: missing or of the wrong type", param_hint="--baseline"
            )
    return base


def _count(name: str, default: int, low: int, text: str):
    return click.option(name, default=default, show_default=True, type=click.IntRange(min=low), help=text)


@click.command()
@click.option("--sizes", default="10,640", show_default=True, help="Comma-separated frame counts N.")
@_count("--workers", 2, 1, "labelgen run --workers.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option(
    "--kitti-sample",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("EDGEDEPTH_KITTI_SAMPLE", str(DEFAULT_SAMPLE)),
    help="The real KITTI sample's root.  [default: $EDGEDEPTH_KITTI_SAMPLE, else ../shared/data/kitti_raw_sample]",
)
@_count("--shard-size", 64, 1, "labelgen plan --shard-size.")
@_count("--drive-frames", 250, 1, "Frames per drive at most.")
@_count("--teacher-max", 1000, 0, "Largest N for sgbm and calib fit.")
@click.option("--train/--no-train", default=True, show_default=True, help="Run the short student train.")
@_count("--batch-size", 2, 1, "student train --batch-size.")
@_count("--train-workers", 2, 0, "student train --workers.")
@click.option(
    "--timeout", default=3600.0, show_default=True, type=click.FloatRange(min=1), help="Seconds per command."
)
@click.option(
    "--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="An earlier scale.json."
)
@click.option(
    "--keep", is_flag=True, help="Keep each N's tree and labels (default: deleted after its commands)."
)
def main(sizes: str, baseline: Path | None, **opts) -> None:
    """Build the symlinked KITTI trees, run the commands, print and save the table."""
    try:
        ns = sorted({int(s) for s in sizes.split(",") if s.strip()})
    except ValueError as err:
        raise click.BadParameter(f"not a list of integers: {sizes}", param_hint="--sizes") from err
    if not ns or ns[0] < 1:
        raise click.BadParameter("give frame counts of at least 1", param_hint="--sizes")
    base = _load_baseline(baseline) if baseline else None
    out = opts["out"]
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "code": _code(), "cpus": os.cpu_count(), "sizes": ns}
    meta.update({k: str(v) for k, v in opts.items()}, load_start=[round(x, 2) for x in os.getloadavg()])
    meta["env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "PYTHONPATH") if k in os.environ}
    inspect_workers = has_option(["labelgen", "inspect"], "--workers")
    rows = [asdict(row) for n in ns for row in run_size(n, opts, inspect_workers)]
    meta["load_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {"meta": meta, "rows": rows, "targets": targets(rows, base)}
    (out / "scale.json").write_text(json.dumps(result, indent=1) + "\n")
    text = render(result)
    (out / "scale.md").write_text(text)
    plot(rows, out / "scale.png")
    print(text, end="")


if __name__ == "__main__":
    main()
