"""`pip install edgedepth` occupies one import name: the wheel, installed into a fresh venv, shows
`edgedepth` (and its dist-info) and nothing else; `cli`, `demo`, `labelgen`, `student`, `calib`
and `common` are not importable at the top level; the console script and package data work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OLD_NAMES = ("cli", "demo", "labelgen", "student", "calib", "common")
LEFT_OUT = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "*out"
)

PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys, sysconfig
    from pathlib import Path
    site = Path(sysconfig.get_paths()["purelib"])
    import edgedepth.cli, edgedepth.common, edgedepth.student
    print(json.dumps({
        "entries": sorted(p.name for p in site.iterdir() if p.name not in ("__pycache__", "deps.pth")),
        "old": {n: importlib.util.find_spec(n) is not None for n in sys.argv[1:]},
        "cli": edgedepth.cli.__file__,
        "version": edgedepth.common.__version__,
        "splits": sorted(p.name for p in (Path(edgedepth.student.__path__[0]) / "splits").iterdir()),
    }))
    """
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel of this checkout installed (dependencies seen through a .pth)."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, tmp / "src", ignore=LEFT_OUT)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", tmp / "src"], check=True
    )
    (wheel,) = (tmp / "dist").glob("edgedepth-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"], check=True)
    python = tmp / "venv" / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", wheel], check=True)
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # torch, click, ... from the test's own environment, after the wheel (no edgedepth there: an
    # editable install's finder is a .pth of its own, which a path line does not run)
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return tmp / "venv"


def test_the_wheel_installs_one_import_name(installed):
    out = subprocess.run(
        [installed / "bin" / "python", "-c", PROBE, *OLD_NAMES],
        capture_output=True,
        text=True,
        check=True,
        cwd=installed,  # not the checkout: nothing of it on sys.path
        env={"PATH": "/usr/bin:/bin"},
    )
    seen = json.loads(out.stdout)
    assert [e for e in seen["entries"] if not e.startswith("edgedepth")] == []
    assert {e.split("-")[0] for e in seen["entries"]} == {"edgedepth"}
    assert seen["old"] == dict.fromkeys(OLD_NAMES, False)
    assert Path(seen["cli"]).is_relative_to(installed)
    assert seen["version"] == "0.1.0"
    assert {
        "eigen_test.txt",
        "eigen_benchmark_test.txt",
        "eigen_zhou_train.txt",
        "eigen_zhou_val.txt",
    } <= set(seen["splits"])


def test_the_console_script_runs_from_the_wheel(installed):
    out = subprocess.run(
        [installed / "bin" / "edgedepth", "labelgen", "--help"],
        capture_output=True,
        text=True,
        cwd=installed,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "Usage: edgedepth labelgen" in out.stdout and "plan" in out.stdout
