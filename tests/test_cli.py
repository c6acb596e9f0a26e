"""The `edgedepth` command line: groups, help on every command, version, errors as one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import cli

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
    assert row == ["L", "1056x320", "528x160", "0.320", "1.991"]


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


def test_demo_prints_every_variant_at_both_paper_sizes():
    result = CliRunner().invoke(cli.main, ["demo"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line[:3].strip() in {"L", "M", "S", "XS"}]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (v, size, out)
        for v, outs in {
            "L": ("240x160", "528x160"),
            "M": ("120x80", "264x80"),
            "S": ("60x40", "132x40"),
            "XS": ("30x20", "66x20"),
        }.items()
        for size, out in zip(("480x320", "1056x320"), outs, strict=True)
    ]


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("edgedepth")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0 and "labelgen" in result.stdout
