"""The `edgedepth` command line: groups, help on every command, version, errors as one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgedepth import cli

ROOT = Path(__file__).resolve().parents[1]


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += all_commands(command, prefix + (name,))
        else:
            found.append(prefix + (name,))
    return found


def test_top_level_help_shows_the_stage_groups_and_demo():
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1]
    assert {line.split()[0] for line in commands.strip().splitlines()} == {
        "labelgen",
        "data",
        "calib",
        "student",
        "demo",
    }


@pytest.mark.parametrize("path", all_commands(cli.main), ids=lambda p: " ".join(p) or "edgedepth")
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli.main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")


def test_version_matches_the_installed_distribution():
    result = CliRunner().invoke(cli.main, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"edgedepth, version \d+\.\d+\.\d+\S*\n", result.output)


def test_student_summary_prints_the_pinned_numbers():
    result = CliRunner().invoke(cli.main, ["student", "summary", "--variant", "L", "--size", "1056x320"])
    assert result.exit_code == 0, result.output
    row = result.output.strip().splitlines()[-1].split()
    assert row == ["L", "1056x320", "528x160", "0.320", "1.991"]  # the paper's decoder (0.32 M, 2.1 G)
    fast = CliRunner().invoke(cli.main, ["student", "summary", "--variant", "L", "--arch", "fast"])
    assert fast.output.strip().splitlines()[-1].split()[3:] == ["0.338", "1.723"]


def test_summary_with_latency_adds_a_positive_column():
    result = CliRunner().invoke(
        cli.main, ["student", "summary", "--variant", "XS", "--size", "64x64", "--latency", "--repeats", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "latency (ms)" in result.output
    assert float(result.output.strip().splitlines()[-1].split()[-1]) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--size", "1242x375"],
            "Error: input height 375 is not a multiple of 32; nearest valid heights: 352 or 384",
        ),
        (["--size", "big"], "Error: Invalid value for '--size': 'big' is not WIDTHxHEIGHT, e.g. 1056x320"),
    ],
)
def test_bad_input_is_one_error_line_with_status_2(args, message):
    result = CliRunner().invoke(cli.main, ["student", "summary", *args])
    assert result.exit_code == 2
    assert message in result.output
    if "375" in message:
        assert result.output.strip() == message


def test_cuda_request_without_gpu_is_explained(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    result = CliRunner().invoke(cli.main, ["student", "summary", "--latency", "--device", "cuda"])
    assert result.exit_code == 2
    assert "no CUDA device is available" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split-file", "frames.txt"], "--split-file needs --data-root"),
        (["--data-root", "{tmp}/nowhere"], "{tmp}/nowhere: data root folder not found"),
        (["--psmnet-checkpoint", "{tmp}/psmnet.tar"], "{tmp}/psmnet.tar: checkpoint file not found"),
    ],
)
def test_demo_refuses_bad_options_in_one_line(tmp_path, args, message):
    """The demo itself runs end to end in tests/demo/test_demo.py (slow)."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(cli.main, ["demo", "--out", str(tmp_path / "out"), "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error")] == [
        line for line in result.output.splitlines() if message.split(":")[-1].strip() in line
    ]  # one error line (after click's usage lines for a usage error), no traceback
    assert "Traceback" not in result.output


def plan_and_label(tmp_path: Path, drives: dict[str, int], shard_size: int = 64) -> tuple[Path, str]:
    """`labelgen plan` + `labelgen run --stages lidar,sgbm` on a synthetic tree; the run's output."""
    from tests.kitti_tree import make_kitti_tree

    tree, labels = make_kitti_tree(tmp_path / "kitti", drives), tmp_path / "labels"
    plan = [
        "labelgen",
        "plan",
        "--kitti-root",
        str(tree),
        "--out",
        str(labels),
        "--shard-size",
        str(shard_size),
    ]
    result = CliRunner().invoke(cli.main, plan)
    assert result.exit_code == 0 and f"{sum(drives.values())} frames" in result.output, result.output
    run = [
        "labelgen",
        "run",
        str(labels),
        "--stages",
        "lidar,sgbm",
        "--workers",
        "1",
        "--num-disparities",
        "32",
    ]
    result = CliRunner().invoke(cli.main, [*run, "--no-progress"])
    assert result.exit_code == 0, result.output
    return labels, result.output


def test_labelgen_plan_run_inspect(tmp_path):
    labels, output = plan_and_label(tmp_path, {"2011_09_26_drive_0001_sync": 3}, shard_size=2)
    assert output.splitlines()[3].split()[:5] == ["sgbm", "2/2", "3", "0", "0"]
    runner = CliRunner()
    result = runner.invoke(cli.main, ["labelgen", "inspect", str(labels), "--png", str(tmp_path / "png")])
    assert result.exit_code == 0 and "[sgbm]" in result.output and "wrote" in result.output, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["labelgen", "plan", "--kitti-root", "/no/such/root", "--out", "x"],
            "Error: /no/such/root: KITTI root folder not found",
        ),
        (
            ["labelgen", "run", "/no/labels"],
            "Error: /no/labels/plan.json: no plan; run `edgedepth labelgen plan` first",
        ),
        (["labelgen", "inspect", "/no/labels"], "Error: /no/labels/plan.json: no plan"),
        (
            ["labelgen", "run", "/no/labels", "--stages", "psmnet"],
            "Error: stage psmnet needs --psmnet-checkpoint FILE",
        ),
        (
            ["labelgen", "run", "/no/labels", "--stages", "lidar,seg"],
            "Error: stage seg needs --seg-checkpoint FILE",
        ),
        (
            ["labelgen", "weights", "psmnet-kitti2012", "--out", "/tmp"],
            "Error: unknown weights 'psmnet-kitti2012'",
        ),
    ],
)
def test_labelgen_errors_are_one_line(args, message):
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 2 and result.output.startswith(message) and result.output.count("\n") == 1, (
        result.output
    )


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("edgedepth")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0 and "labelgen" in result.stdout


def test_calib_fit_apply_plot(tmp_path):
    labels, _ = plan_and_label(tmp_path, {"2011_09_26_drive_0001_sync": 2, "2011_09_26_drive_0002_sync": 2})
    runner = CliRunner()
    lut = tmp_path / "lut.json"
    fit = ["calib", "fit", str(labels), "--teacher", "sgbm", "--out", str(lut), "--holdout", "0.5"]
    result = runner.invoke(
        cli.main, [*fit, "--min-count", "5", "--png", str(tmp_path / "fit.png"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "teacher sgbm (opencv-sgbm)" in result.output and "fit: 1 drive(s), 2 frames" in result.output
    assert "held-out (2011_09_26_drive_000" in result.output and "RMSE" in result.output
    assert lut.is_file() and (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(cli.main, ["calib", "apply", str(lut), str(labels), "--teacher", "sgbm"])
    assert result.exit_code == 0 and "sgbm_corrected: 2 shards written" in result.output, result.output
    result = runner.invoke(cli.main, ["calib", "plot", str(lut), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 10_000
    result = runner.invoke(cli.main, ["calib", "fit", str(labels), "--teacher", "psmnet", "--out", str(lut)])
    assert result.exit_code == 2 and result.output.startswith("Error: ") and result.output.count("\n") == 1
