"""The rig-layout commands end to end on real Middlebury scenes: import, plan, label, score, eval, and
their one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgedepth import cli
from edgedepth.student.model.checkpoint import save_checkpoint
from edgedepth.student.model.config import ModelConfig


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def labelled(real_data, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("rig")
    root, labels = tmp / "mb", tmp / "labels"
    code, out = run("data", "import", "middlebury", real_data / "middlebury2006", root, "--scenes", "Aloe,Baby1",
                    "--no-progress")  # fmt: skip
    assert code == 0, out
    assert "2 frame(s) in 2 sequence(s)" in out
    assert (root / "splits" / "heldout.txt").read_text().split("\n")[-2] == "Aloe/view1"
    code, out = run("labelgen", "plan", "--data-root", root, "--out", labels)
    assert code == 0 and "2 frames in 2 shards (rig layout)" in out, out
    code, out = run("labelgen", "run", labels, "--stages", "images,sgbm", "--workers", "1", "--no-progress")
    assert code == 0, out
    return root, labels


def test_score_a_teacher_on_real_scenes(labelled, tmp_path):
    root, labels = labelled
    code, out = run(
        "labelgen", "score", labels, "--stage", "sgbm", "--no-progress", "--out", tmp_path / "s.json"
    )
    assert code == 0, out
    assert out.startswith(
        "scored sgbm: 2 frames of all (rig layout), gt depth_gt, crop none, ground truth within 1.3-3 m"
    )
    abs_rel = float(out.splitlines()[2].split()[0])
    assert abs_rel < 0.02  # SGBM with the scenes' doffs: about 0.005 on Aloe and Baby1
    assert (tmp_path / "s.json").is_file() and (tmp_path / "s_frames.csv").is_file()
    code, out = run("labelgen", "score", labels, "--stage", "psmnet", "--no-progress")
    assert code == 2 and re.fullmatch(r"Error: .*psmnet: no such label stage to score\n", out), out


def test_eval_on_rig_data_says_what_it_scored(labelled, tmp_path):
    root, _ = labelled
    cfg = ModelConfig(input_size=(160, 192), depth_range=(1.3, 3.0))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "s.pt", {"model_config": cfg.to_dict(), "model": cfg.build().state_dict()})
    split = tmp_path / "one.txt"
    split.write_text("Baby1/view1\n")
    code, out = run("student", "eval", tmp_path / "s.pt", "--data-root", root, "--split", split, "--median-scaling",
                    "--no-progress")  # fmt: skip
    assert code == 0, out
    assert out.splitlines()[0] == (
        "scored: 1 frames of one (rig layout), gt depth_gt, crop none, ground truth within 1.3-3 m "
        "(calib.json depth_range_m, else 80 m), median-scaled per frame"
    )
    code, out = run("student", "eval", tmp_path / "s.pt", "--data-root", root, "--gt", "annotated")
    assert code == 2 and "'annotated' is not available for the rig layout" in out and out.count("\n") == 1


def test_plan_and_ablate_refuse_bad_options_in_one_line(labelled, tmp_path):
    root, labels = labelled
    cases = [
        (["labelgen", "plan", "--out", tmp_path / "x"], "give the data with --data-root DIR"),
        (["labelgen", "plan", "--data-root", root, "--kitti-root", root, "--out", tmp_path / "x"], "--data-root"),
        (["labelgen", "plan", "--data-root", tmp_path, "--out", tmp_path / "x"], "neither a rig tree"),
        (["student", "ablate", labels, "--eval-root", root, "--out", tmp_path / "e", "--configs", "big"],
         "unknown configuration 'big'"),
        (["data", "import", "middlebury", tmp_path, tmp_path / "o"], str(tmp_path)),
    ]  # fmt: skip
    for args, message in cases:
        code, out = run(*args)
        assert code == 2 and out.startswith("Error: ") and message in out and out.count("\n") == 1, (
            args,
            out,
        )
