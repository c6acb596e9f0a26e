"""benchmarks/scale.py: the symlinked KITTI trees it builds, how it measures, its verdicts, one real run."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "scale.py"
EDGEDEPTH = Path(sys.executable).with_name("edgedepth")


def _scale():
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


scale = _scale()


def test_the_tree_is_a_kitti_raw_tree_of_symlinks_that_the_cli_plans(kitti_sample: Path, tmp_path: Path):
    root = tmp_path / "kitti"
    drives = scale.build_tree(kitti_sample, root, 7, 3)
    assert drives == [f"2011_09_26_drive_{d:04d}_sync" for d in (1, 2, 3)]
    date = root / "2011_09_26"
    assert (date / "calib_cam_to_cam.txt").read_bytes() == (
        kitti_sample / "2011_09_26/calib_cam_to_cam.txt"
    ).read_bytes()
    source = kitti_sample / "2011_09_26/2011_09_26_drive_0001_sync"
    for stream, suffix in scale.STREAMS:
        files = sorted(date.glob(f"*/{stream}/data/*{suffix}"))
        assert len(files) == 7
        real = [f for f in files if not f.is_symlink()]
        assert len(real) == 1, "one real copy per stream, the rest are links"
        original = (source / stream / "data" / f"0000000005{suffix}").read_bytes()
        for f in files:  # every link resolves inside the tree, to the real frame
            assert f.resolve().is_relative_to(root.resolve()) and f.read_bytes() == original
        stamps = (date / drives[2] / stream / "timestamps.txt").read_text().splitlines()
        assert stamps == ["2011-09-26 13:00:00.000000000"]
    assert len((date / drives[0] / "velodyne_points" / "timestamps_end.txt").read_text().splitlines()) == 3
    out = subprocess.run(
        [str(EDGEDEPTH), "labelgen", "plan", "--data-root", str(root), "--out", str(tmp_path / "labels")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads((tmp_path / "labels" / "plan.json").read_text())
    assert sum(len(s["frames"]) for s in plan["shards"]) == 7
    assert {s["drive"] for s in plan["shards"]} == set(drives)


def test_a_small_tree_still_has_two_drives(kitti_sample: Path, tmp_path: Path):
    """calib fit and student train hold a drive out; one drive would make them fail at small N."""
    assert len(scale.build_tree(kitti_sample, tmp_path / "a", 10, 250)) == 2
    assert len(scale.build_tree(kitti_sample, tmp_path / "b", 1001, 250)) == 5


def test_measure_counts_the_whole_process_tree(tmp_path: Path):
    """A small driver whose child holds 200 MB: the tree and the child show it, the driver does not."""
    child = "x = b'x' * (200 << 20); import time; time.sleep(1.0)"
    driver = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    result = scale.measure([sys.executable, "-c", driver], tmp_path / "tree.log", timeout=60)
    assert result["status"] == "ok" and result["exit"] == 0
    assert result["tree_mb"] >= 200 and result["proc_mb"] >= 200 and result["procs"] >= 2
    assert result["driver_mb"] < 100
    assert result["cpu_s"] > 0 and result["wall_s"] >= 1.0


def test_measure_reports_a_failure_and_a_timeout(tmp_path: Path):
    failing = "import sys; print('working'); print('Error: bad.h5: broken'); sys.exit(3)"
    result = scale.measure([sys.executable, "-c", failing], tmp_path / "fail.log", timeout=60)
    assert (result["status"], result["exit"], result["detail"]) == ("failed", 3, "Error: bad.h5: broken")
    result = scale.measure(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "t.log", timeout=1
    )
    assert result["status"] == "timeout" and result["exit"] != 0 and result["wall_s"] < 30


def test_the_first_step_is_read_from_a_real_progress_bar():
    stream = io.StringIO()
    bar = tqdm(total=2, desc="epoch 1/1", unit="step", file=stream, mininterval=0)
    assert not scale.FIRST_STEP.search(stream.getvalue().encode())
    bar.update(1)
    assert scale.FIRST_STEP.search(stream.getvalue().encode())


def _row(n: int, command: str, wall: float, **fields) -> dict:
    row = {"n": n, "command": command, "status": "ok", "exit": 0, "wall_s": wall, "driver_mb": 100.0}
    row.update({"tree_mb": 100.0, "proc_mb": None, "procs": 1, "cpu_s": wall, "load": 1.0})
    return row | {"first_step_s": None, "detail": ""} | fields


def test_the_verdicts_follow_the_figures():
    rows = [
        _row(10, scale.NOOP, 2.0),
        _row(5000, scale.NOOP, 5.0),
        _row(5000, scale.FIRST_RUN, 50.0, driver_mb=180.0),
        _row(1000, scale.VERIFY[0], 100.0),
        _row(1000, scale.VERIFY[1], 50.0),
        _row(1000, scale.FIT, 30.0, detail="lut sha256 ab"),
        _row(1000, scale.TRAIN, 60.0, first_step_s=12.0, proc_mb=900.0),
    ]
    baseline = {"rows": [_row(1000, scale.FIT, 100.0, detail="lut sha256 ab")]}
    verdicts = [(t["target"].split(" ")[0:3], t["verdict"]) for t in scale.targets(rows, baseline)]
    assert [v for _, v in verdicts] == ["MISS", "MISS", "PASS", "PASS", "PASS", "PASS", "record"]
    skipped = {"n": 10, "command": scale.VERIFY[1], "status": "skipped", "detail": "n/a: no --workers"}
    checks = scale.targets(
        [_row(10, scale.FIT, 30.0, detail="lut sha256 cd"), skipped], baseline | {"rows": []}
    )
    assert [c["verdict"] for c in checks] == ["n/a", "n/a", "n/a"]
    assert "no --workers" in checks[1]["figure"]


def test_the_script_measures_every_command_on_the_real_frame(kitti_sample: Path, tmp_path: Path):
    out = tmp_path / "scale"
    argv = [sys.executable, str(SCRIPT), "--sizes", "3", "--workers", "1", "--train-workers", "0"]
    argv += ["--out", str(out), "--kitti-sample", str(kitti_sample)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "scale.json").read_text())
    commands = [
        "plan",
        scale.FIRST_RUN,
        scale.NOOP,
        "inspect",
        *scale.VERIFY,
        "run sgbm",
        scale.FIT,
        scale.TRAIN,
    ]
    assert [(r["n"], r["command"]) for r in result["rows"]] == [(3, c) for c in commands]
    for row in result["rows"]:
        if row["status"] == "skipped":  # only the 2-worker verify, while inspect takes no --workers
            assert row["command"] == scale.VERIFY[1] and row["detail"].startswith("n/a")
            continue
        assert row["status"] == "ok", row
        for key in ("wall_s", "driver_mb", "tree_mb", "cpu_s", "load"):
            assert isinstance(row[key], float) and row[key] >= 0, (key, row)
        assert row["driver_mb"] > 10 and row["tree_mb"] >= row["driver_mb"] * 0.5
    train = result["rows"][-1]
    assert 0 < train["first_step_s"] < train["wall_s"]
    assert result["rows"][-2]["detail"].startswith("lut sha256 ")
    table = (out / "scale.md").read_text()
    assert table == done.stdout
    assert all(f"| 3 | {c} |" in table for c in commands)
    assert (out / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "N3").exists(), "the tree and labels are deleted unless --keep"


def test_a_broken_baseline_is_refused_at_the_door(tmp_path: Path):
    from click.testing import CliRunner

    base = tmp_path / "scale.json"
    base.write_text(
        json.dumps({"rows": [{"n": 1000, "command": "calib fit", "status": "ok", "wall_s": "9"}]})
    )
    result = CliRunner().invoke(scale.main, ["--out", str(tmp_path / "out"), "--baseline", str(base)])
    assert result.exit_code == 2
    assert f"{base}: rows[0].detail: missing or of the wrong type" in result.output
    assert not (tmp_path / "out").exists(), "nothing measured, nothing written"
