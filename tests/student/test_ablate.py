"""student ablate: end to end on a tiny rig data set, resume, the reference rows against NumPy,
the confidence intervals and the budget."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from edgedepth.labelgen.folder import LabelFolder
from edgedepth.labelgen.plan import plan_shards, write_plan
from edgedepth.labelgen.run import run_stages
from edgedepth.student.ablate import runs as ablate_runs
from edgedepth.student.ablate.report import mean_ci
from edgedepth.student.ablate.study import AblateSettings, available_configs, run_ablation
from edgedepth.student.model.build import build_student
from edgedepth.student.model.network import count_parameters
from tests.rig_tree import DEPTH_RANGE, frame_name, make_rig_tree

LO, HI = DEPTH_RANGE


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A rig tree (two training sequences, one held out, varied held-out ground truth) and its labels."""
    tmp = tmp_path_factory.mktemp("ablate")
    root = make_rig_tree(tmp / "rig", {"train_a": 2, "train_b": 1, "held": 2})
    rng = np.random.default_rng(3)
    for index in range(2):
        depth = rng.uniform(1.0, 20.0, (64, 160))
        depth[:, :20] = 0  # no ground truth in a band
        cv2.imwrite(
            str(root / "held" / "depth_gt" / f"{frame_name(index)}.png"),
            np.round(depth * 256).astype(np.uint16),
        )
    labels = tmp / "labels"
    write_plan(plan_shards(root), labels)
    run_stages(labels, ["images", "lidar", "sgbm"], workers=1, progress=False)
    train = tmp / "train.txt"
    train.write_text(
        "".join(f"{s}/{frame_name(i)}\n" for s, n in (("train_a", 2), ("train_b", 1)) for i in range(n))
    )
    held = tmp / "heldout.txt"
    held.write_text("".join(f"held/{frame_name(i)}\n" for i in range(2)))
    return {"root": root, "labels": labels, "train": train, "held": held, "tmp": tmp}


def settings(data: dict[str, Path], out: Path, **changes) -> AblateSettings:
    values = dict(
        labels_dir=str(data["labels"]), eval_root=str(data["root"]), out_dir=str(out), teacher="sgbm",
        configs=("teacher", "lidar", "depth_only"), seeds=2, size=(64, 160), epochs=1, iters_per_epoch=2,
        batch_size=2, workers=0, train_frames=str(data["train"]), eval_frames=str(data["held"]), fps_size=(64, 160),
    )  # fmt: skip
    values.update(changes)
    return AblateSettings(**values)


def _independent_median(labels: Path, train_ids: set[str]) -> float:
    values = []
    for shard in sorted((labels / "sgbm").glob("shard-*.h5")):
        with h5py.File(shard) as f:
            for frame_id, ok, depth in zip(
                f["frame_id"].asstr()[()], f["ok"][()], f["depth"][()], strict=True
            ):
                if frame_id in train_ids and ok:
                    d = depth.astype(np.float32).ravel()
                    values.append(d[(d > LO) & (d <= HI)])
    return float(np.median(np.concatenate(values)))


@pytest.mark.slow
def test_ablate_end_to_end_resumes_and_its_constant_baseline(data, tmp_path):
    """A tiny budget (1.6 min for 4 runs at 160x64): probed, picked, trained, scored, reported."""
    out = tmp_path / "exp"
    lines: list[str] = []
    results = run_ablation(settings(data, out, budget_minutes=1.6), progress=False, log=lines.append)
    assert any(line.startswith("runs at 160x64, 4 epochs x ") for line in lines)
    assert results["budget"]["epochs"] == 4 and results["budget"]["iters"] >= 1
    assert any("depth_only: left out, the label folder has no seg stage" in line for line in lines)
    for name in ("table.md", "table.csv", "results.json", "ablation.png", "settings.json", "references.json"):
        assert (out / name).is_file(), name
    assert set(results["configs"]) == {"teacher", "lidar"}
    for config in ("teacher", "lidar"):
        row = results["configs"][config]
        assert set(row["seeds"]) == {0, 1} and row["summary"]["abs_rel"]["n"] == 2
        values = [row["seeds"][s]["abs_rel"] for s in (0, 1)]
        assert row["summary"]["abs_rel"]["mean"] == pytest.approx(np.mean(values))
        speed = results["speed"][config]
        assert speed["params"] == count_parameters(build_student("L", seg=False)) and speed["fps"] > 0
    assert results["configs"]["teacher"]["seeds"][0] != results["configs"]["teacher"]["seeds"][1]

    # The constant row: the training labels' median, scored on the held-out ground truth.
    train_ids = set(data["train"].read_text().split())
    median = _independent_median(data["labels"], train_ids)
    constant = results["references"]["constant"]
    assert constant["value_m"] == pytest.approx(median, rel=1e-6)
    expected = []
    for index in range(2):
        gt = cv2.imread(
            str(data["root"] / "held" / "depth_gt" / f"{frame_name(index)}.png"), cv2.IMREAD_UNCHANGED
        )
        g = gt.astype(np.float64)[gt > 0] / 256
        g = g[(g > LO) & (g <= HI)]
        expected.append(np.mean(np.abs(g - median) / g))
    assert constant["plain"]["abs_rel"] == pytest.approx(np.mean(expected), rel=1e-6)
    assert (
        "teacher" in results["references"]
        and results["checks"]["constant_abs_rel"] == constant["plain"]["abs_rel"]
    )
    table = (out / "table.md").read_text()
    assert "| **teacher**: teacher labels (the base) |" in table and "± " in table
    assert "constant depth: the training labels' median" in table

    # A rerun reuses every finished run (nothing retrained) and gives the same table.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/last.pt")}
    lines.clear()
    again = run_ablation(settings(data, out, budget_minutes=1.6), progress=False, log=lines.append)
    assert any("4 of 4 runs already finished: reused" in line for line in lines)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["configs"]["teacher"]["summary"] == json.loads(
        json.dumps(results["configs"]["teacher"]["summary"])
    )

    assert again["budget"] == results["budget"]  # the saved pick, not a new probe
    with pytest.raises(ValueError, match="the experiment was started with seeds=2, now 3"):
        run_ablation(settings(data, out, seeds=3, budget_minutes=1.6), progress=False, log=lines.append)


def test_held_out_frames_may_not_train(data, tmp_path):
    leaky = tmp_path / "leaky.txt"
    leaky.write_text(data["train"].read_text() + f"held/{frame_name(0)}\n")
    with pytest.raises(
        ValueError, match=r"1 held-out frame\(s\) also in the training frames \(first: held/frame_000\)"
    ):
        run_ablation(settings(data, tmp_path / "exp", train_frames=str(leaky)), progress=False)
    with pytest.raises(ValueError, match="unknown configuration 'big'"):
        settings(data, tmp_path / "e", configs=("big",))
    run, notes = available_configs(settings(data, tmp_path / "e"), LabelFolder(data["labels"]))
    assert run == ["teacher", "lidar"] and notes == [
        "depth_only: left out, the label folder has no seg stage"
    ]


def test_the_bias_table_is_a_median_over_training_frames_only(data, tmp_path):
    """teacher_lut's table: per-bin median of lidar - teacher over the training frames, against NumPy."""
    from edgedepth.calib.lut import load_lut

    train_ids = set(data["train"].read_text().split())
    out = tmp_path / "lut.json"
    ablate_runs.fit_training_lut(LabelFolder(data["labels"]), "sgbm", sorted(train_ids), str(out), False)
    lut = load_lut(out)
    assert lut.settings["stat"] == "median"
    teacher, lidar = [], []
    for stage, into in (("sgbm", teacher), ("lidar", lidar)):
        for shard in sorted((data["labels"] / stage).glob("shard-*.h5")):
            with h5py.File(shard) as f:
                for frame_id, depth in zip(f["frame_id"].asstr()[()], f["depth"][()], strict=True):
                    if frame_id in train_ids:
                        into.append(depth.astype(np.float32).ravel())
    t, lid = np.concatenate(teacher), np.concatenate(lidar)
    keep = (t >= LO) & (t < HI) & (lid > 0)
    err = (lid[keep] - t[keep]).astype(np.float32)
    bins = np.clip(((t[keep] - LO) / ((HI - LO) / 16)).astype(int), 0, 15)
    assert lut.count.tolist() == np.bincount(bins, minlength=16).tolist()
    for b in np.flatnonzero(lut.count):
        assert lut.value[b] == pytest.approx(float(np.median(err[bins == b])), abs=1e-6)


def test_mean_ci_is_students_t():
    values = [0.20, 0.22, 0.27]
    summary = mean_ci(values)
    sd = math.sqrt(sum((v - np.mean(values)) ** 2 for v in values) / 2)
    assert summary["mean"] == pytest.approx(0.23) and summary["sd"] == pytest.approx(sd)
    assert summary["ci95"] == pytest.approx(4.302652729911275 * sd / math.sqrt(3))  # t(0.975, 2)
    assert math.isnan(mean_ci([0.3])["ci95"]) and mean_ci([0.3])["mean"] == 0.3


def test_budget_picks_the_largest_size_that_allows_enough_steps(data, tmp_path, monkeypatch):
    seconds = {160: 0.9, 128: 0.2}  # per step, by input width (none wider than the 160 px images is tried)

    def fake(settings, size, seg):
        return seconds.get(size[1], 2.0)

    monkeypatch.setattr(ablate_runs, "step_seconds", fake)
    folder = LabelFolder(data["labels"])
    lines: list[str] = []
    # 4 runs in 40 min: 600 s each, less 20 s overhead -> 580 s; 600 steps need <= 0.97 s per step
    budget = ablate_runs.pick_budget(
        settings(data, tmp_path, size=None, budget_minutes=40), folder, 4, lines.append
    )
    assert budget.size == (64, 160)  # the images' aspect, 0.4: 64 px high (a multiple of 32)
    assert budget.epochs == ablate_runs.EPOCHS and budget.iters == int(580 / 0.9) // ablate_runs.EPOCHS
    assert lines == ["budget probe: 160x64 takes 0.90 s per step of batch 2"]
    tight = ablate_runs.pick_budget(settings(data, tmp_path, size=None, budget_minutes=2), folder, 4, None)
    assert tight.size == (64, 128) and "fewer than" in tight.reason  # 128: the smallest width
    with pytest.raises(ValueError, match="leaves no time for 4 runs"):
        ablate_runs.pick_budget(settings(data, tmp_path, size=None, budget_minutes=1), folder, 4, None)


@pytest.mark.slow
def test_ablate_under_torchrun(data, tmp_path):
    """Two gloo processes: every run trains data-parallel, rank 0 scores and writes the report."""
    from tests.student.test_train import _torchrun

    out = tmp_path / "exp"
    args = ["student", "ablate", str(data["labels"]), "--eval-root", str(data["root"]), "--out", str(out),
            "--configs", "teacher", "--seeds", "1", "--teacher", "sgbm", "--size", "160x64", "--epochs", "1",
            "--iters-per-epoch", "2", "--batch-size", "2", "--workers", "0", "--fps-size", "160x64",
            "--train-frames", str(data["train"]), "--eval-frames", str(data["held"]), "--no-progress"]  # fmt: skip
    done = _torchrun(args, {**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 reports, rank 1 stays quiet
    config = json.loads((out / "runs" / "teacher" / "seed0" / "config.json").read_text())
    assert config["world_size"] == 2 and config["effective_batch"] == 4
    results = json.loads((out / "results.json").read_text())
    assert results["configs"]["teacher"]["summary"]["abs_rel"]["n"] == 1
