"""Training: overfitting a known scene, the run folder, exact resume, and data-parallel equivalence."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedepth.student.model.checkpoint import load_student, read_checkpoint
from edgedepth.student.model.config import ModelConfig, TrainConfig
from edgedepth.student.train import run_folder as rf
from edgedepth.student.train.data import LabelDataset
from edgedepth.student.train.loop import train
from tests.student.labelfolder import make_label_folder

SIZE = (32, 64)  # training input (h, w): small enough for hundreds of CPU steps
DRIVES = {"2011_09_26_drive_0001_sync": 3, "2011_09_26_drive_0002_sync": 2}


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    return make_label_folder(tmp_path_factory.mktemp("train"), DRIVES)


def config(labels: Path, out: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        labels_dir=str(labels),
        out_dir=str(out),
        teacher="synth",
        epochs=2,
        iters_per_epoch=3,
        batch_size=2,
        workers=0,
        val_drives=("2011_09_26_drive_0002_sync",),
    )
    return replace(base, **changes)


def quiet(_line: str) -> None:
    pass


@pytest.mark.slow
def test_overfitting_a_known_scene(labels, tmp_path):
    """A few hundred CPU steps on 3 frames: loss down >= 5x, RMSE well below the best constant."""
    cfg = config(
        labels,
        tmp_path / "run",
        epochs=1,
        iters_per_epoch=300,
        batch_size=3,
        augment=False,
        val_drives=None,
        val_fraction=0.0,
        lr_decay=1.0,
        lr=0.005,
    )
    result = train(cfg, ModelConfig(input_size=SIZE), progress=False, log=quiet)
    losses = read_checkpoint(tmp_path / "run" / rf.LAST)["step_losses"]
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert first / last >= 5, (first, last)

    model, _ = load_student(tmp_path / "run" / rf.LAST)
    data = LabelDataset(labels, "synth", seg="seg", size=SIZE, full_res=True)
    errors, baseline = [], []
    with torch.inference_mode():
        for i in range(len(data)):
            sample = data[i]
            gt = sample["depth"].numpy()
            pred = torch.nn.functional.interpolate(
                model(sample["image"][None]), size=gt.shape, mode="bilinear", align_corners=False
            )[0, 0].numpy()
            valid = gt > 0
            errors.append(np.mean((pred[valid] - gt[valid]) ** 2))
            baseline.append(gt[valid])
    constant = np.concatenate(baseline)
    baseline_rmse = float(np.sqrt(np.mean((constant - constant.mean()) ** 2)))
    rmse = float(np.sqrt(np.mean(errors)))
    print(
        f"\nloss {first:.2f} -> {last:.3f} ({first / last:.0f}x); RMSE {rmse:.3f} m vs constant {baseline_rmse:.3f} m"
    )
    assert rmse < 0.5 * baseline_rmse, (rmse, baseline_rmse)
    assert result.best_metric == "train/total"


def test_the_run_folder(labels, tmp_path):
    run = tmp_path / "run"
    result = train(config(labels, run), ModelConfig(input_size=SIZE), progress=False, log=quiet)
    assert result.epochs == 2 and result.steps == 6
    for name in (rf.CONFIG_FILE, rf.SPLIT_FILE, rf.METRICS_FILE, rf.CURVES_FILE, rf.LAST, rf.BEST):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / rf.CHECKPOINT_DIR).iterdir()) == ["epoch-0001.pt", "epoch-0002.pt"]
    assert any((run / rf.TENSORBOARD_DIR).iterdir())
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]

    saved = json.loads((run / rf.CONFIG_FILE).read_text())
    assert saved["train"]["lr"] == 0.01 and saved["model"]["variant"] == "L"
    assert saved["provenance"]["plan_id"] and saved["provenance"]["val_drives"] == [
        "2011_09_26_drive_0002_sync"
    ]
    assert set(saved["provenance"]["stages"]) == {"images", "synth", "seg", "lidar"}
    assert saved["effective_batch"] == 2 and saved["world_size"] == 1

    split = json.loads((run / rf.SPLIT_FILE).read_text())
    assert split["val_frames"] and all("drive_0002" in f for f in split["val_frames"])
    assert not any("drive_0002" in f for f in split["train_frames"]), "a validation frame in training"

    with open(run / rf.METRICS_FILE) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["lr"]) == pytest.approx(0.009)  # 0.01 x 0.9 after the first epoch
    for key in ("train/total", "train/depth/4", "train/seg/1", "val_teacher/rmse", "val_lidar/abs_rel"):
        assert math.isfinite(float(rows[0][key])), key

    last = read_checkpoint(run / rf.LAST)
    assert last["epoch"] == 2 and last["step"] == 6
    for key in ("optimizer", "scheduler", "scaler", "rng", "train_config", "model_config"):
        assert key in last
    best = read_checkpoint(run / rf.BEST)
    rmses = [float(r["val_lidar/rmse"]) for r in rows]
    assert best["best"]["metric"] == "val_lidar/rmse" and best["epoch"] == 1 + int(np.argmin(rmses))


def test_resume_equals_an_uninterrupted_run(labels, tmp_path):
    """Bitwise on CPU: 2 epochs in one go == 1 epoch, stop, resume to 2 (also with loader workers)."""
    full = train(config(labels, tmp_path / "full"), ModelConfig(input_size=SIZE), progress=False, log=quiet)
    part = tmp_path / "part"
    train(config(labels, part, epochs=1), ModelConfig(input_size=SIZE), progress=False, log=quiet)
    (part / rf.CHECKPOINT_DIR / "epoch-0001.pt").unlink()  # resume reads last.pt only
    resumed = train(
        config(labels, part, workers=2), ModelConfig(input_size=SIZE), resume=True, progress=False, log=quiet
    )
    a, b = read_checkpoint(tmp_path / "full" / rf.LAST), read_checkpoint(part / rf.LAST)
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["step_losses"] == b["step_losses"]
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])
    timing = {"images_per_s", "seconds"}
    strip = [{k: v for k, v in row.items() if k not in timing} for row in full.history]
    assert strip == [{k: v for k, v in row.items() if k not in timing} for row in resumed.history]


def test_resume_refuses_changed_settings_and_a_fresh_run_refuses_an_old_folder(labels, tmp_path):
    run = tmp_path / "run"
    train(
        config(labels, run, epochs=1, iters_per_epoch=1),
        ModelConfig(input_size=SIZE),
        progress=False,
        log=quiet,
    )
    with pytest.raises(ValueError, match="already holds a training run; pass --resume"):
        train(
            config(labels, run, epochs=1, iters_per_epoch=1),
            ModelConfig(input_size=SIZE),
            progress=False,
            log=quiet,
        )
    with pytest.raises(ValueError, match="started with lr=0.01, now 0.02"):
        train(
            config(labels, run, epochs=2, iters_per_epoch=1, lr=0.02),
            ModelConfig(input_size=SIZE),
            resume=True,
            progress=False,
            log=quiet,
        )


def test_without_seg_labels_the_run_is_depth_only_and_says_so(tmp_path):
    labels = make_label_folder(tmp_path, {"2011_09_26_drive_0001_sync": 2}, seg=False, lidar=False)
    lines: list[str] = []
    train(
        config(labels, tmp_path / "run", epochs=1, iters_per_epoch=1, val_drives=None),
        ModelConfig(input_size=SIZE),
        progress=False,
        log=lines.append,
    )
    assert sum("segmentation loss off" in line for line in lines) == 1
    assert sum("no validation drives" in line for line in lines) == 1
    model, cfg = load_student(tmp_path / "run" / rf.LAST)
    assert cfg.seg is False and model.decoder[-1].seg_head is None


@pytest.mark.parametrize("space", ["linear"])
def test_linear_depth_space_trains_and_predicts_metres(labels, tmp_path, space):
    train(
        config(labels, tmp_path / "run", epochs=1, iters_per_epoch=2),
        ModelConfig(input_size=SIZE, depth_space=space),
        progress=False,
        log=quiet,
    )
    model, cfg = load_student(tmp_path / "run" / rf.LAST)
    assert cfg.depth_space == space and model.depth_space == space
    depth = model(torch.zeros(1, 3, *SIZE))
    assert depth.shape == (1, 1, 16, 32) and bool((depth >= 1e-3).all())


def _torchrun(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--no-python",
        shutil.which("edgedepth") or str(Path(sys.executable).with_name("edgedepth")),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_the_same_global_batch(labels, tmp_path):
    """torchrun, 2 gloo processes of batch 2 vs 1 process of batch 4, end to end through the CLI.

    The gradients are those of the global batch (tests/student/test_distributed.py checks that to
    1e-7 in float64); in float32 their rounding differs, and Adam's first steps turn any sign
    difference of a near-zero gradient into a step of size lr. A small lr bounds that, so equal
    weights within 10 x lr and equal losses show the whole chain (sampler slices, global batch
    norm, all-reduced loss statistics, DDP averaging) runs as one process would.
    """
    lr = 1e-5
    common = [
        "student",
        "train",
        str(labels),
        "--teacher",
        "synth",
        "--size",
        "64x32",
        "--epochs",
        "2",
        "--iters-per-epoch",
        "2",
        "--workers",
        "0",
        "--val-drives",
        "2011_09_26_drive_0002",
        "--no-progress",
        "--lr",
        str(lr),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = _torchrun([*common, "--out", str(tmp_path / "ddp"), "--batch-size", "2"], env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "edgedepth.cli", *common, "--out", str(tmp_path / "one"), "--batch-size", "4"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert "effective batch 4" in ddp.stdout and "2 process(es)" in ddp.stdout
    assert ddp.stdout.count("best.pt by") == 1  # rank 0 reports, rank 1 stays quiet
    a, b = read_checkpoint(tmp_path / "ddp" / rf.LAST), read_checkpoint(tmp_path / "one" / rf.LAST)
    assert a["step"] == b["step"] == 4
    # before any step: equal up to float32 summation order over two half batches (the loss is ~40 in
    # G units over 1-80 m, since the heads start at the range's centre; 6e-6 measured)
    np.testing.assert_allclose(a["step_losses"][0], b["step_losses"][0], rtol=2e-5)
    # later steps: batch norm over half batches in each process (0.2 % seen)
    np.testing.assert_allclose(a["step_losses"], b["step_losses"], rtol=5e-3)
    for key, tensor in b["model"].items():
        if "running" in key:  # batch statistics (of 8 values at stride 32) of slightly different weights
            scale = float(tensor.abs().max())
            assert float((a["model"][key] - tensor).abs().max()) <= 5e-2 * scale + 1e-4, key
        elif tensor.is_floating_point():
            torch.testing.assert_close(a["model"][key], tensor, rtol=0, atol=10 * lr, msg=key)
        else:
            assert torch.equal(a["model"][key], tensor), key
    assert len(list((tmp_path / "ddp" / rf.TENSORBOARD_DIR).iterdir())) == 1  # only rank 0 wrote


def test_mixed_precision_and_encoder_weights(labels, tmp_path):
    """--amp (bf16 autocast on CPU) trains with finite losses; --encoder-weights starts the encoder
    from a torchvision MobileNetV2-0.35 file."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(5)
    encoder = tmp_path / "mobilenet_v2_035.pth"
    torch.save(mobilenet_v2(width_mult=0.35).state_dict(), encoder)
    cfg = config(
        labels,
        tmp_path / "run",
        epochs=1,
        iters_per_epoch=2,
        amp=True,
        encoder_weights=str(encoder),
        lr=1e-12,
    )
    train(cfg, ModelConfig(input_size=SIZE), progress=False, log=quiet)
    state = read_checkpoint(tmp_path / "run" / rf.LAST)
    assert all(math.isfinite(v) for v in state["step_losses"])
    stem = torch.load(encoder, weights_only=True)["features.0.0.weight"]
    torch.testing.assert_close(state["model"]["encoder.features.0.0.weight"], stem, atol=1e-9, rtol=0)
    assert json.loads((tmp_path / "run" / rf.CONFIG_FILE).read_text())["train"]["amp"] is True


# --- frame lists, depth ranges from the data ---------------------------------------------------------


def test_frame_lists_choose_the_training_and_validation_frames(labels, tmp_path):
    from edgedepth.labelgen.plan import load_plan

    frames = load_plan(labels).frame_ids  # 3 frames of drive 1, 2 of drive 2
    (tmp_path / "train.txt").write_text("\n".join(frames[:2]) + "\n")
    (tmp_path / "val.txt").write_text(f"# validation\n{frames[3]}\n")
    run = tmp_path / "run"
    cfg = config(labels, run, epochs=1, iters_per_epoch=1, val_drives=None)
    cfg = replace(cfg, train_frames=str(tmp_path / "train.txt"), val_frames=str(tmp_path / "val.txt"))
    train(cfg, ModelConfig(input_size=SIZE), progress=False, log=quiet)
    split = json.loads((run / rf.SPLIT_FILE).read_text())
    assert split["train_frames"] == frames[:2] and split["val_frames"] == [frames[3]]
    with open(run / rf.METRICS_FILE) as handle:
        assert math.isfinite(float(next(csv.DictReader(handle))["val_teacher/rmse"]))

    (tmp_path / "bad.txt").write_text(f"{frames[0]}\n2011_09_26/2011_09_26_drive_0009_sync/0000000000\n")
    with pytest.raises(ValueError, match=r"bad\.txt: 1 listed frames are not in the plan"):
        train(replace(cfg, out_dir=str(tmp_path / "r2"), train_frames=str(tmp_path / "bad.txt")),
              ModelConfig(input_size=SIZE), progress=False, log=quiet)  # fmt: skip
    (tmp_path / "both.txt").write_text(f"{frames[3]}\n")
    with pytest.raises(ValueError, match=r"train\.txt: 1 frames are also validation frames"):
        (tmp_path / "train.txt").write_text(f"{frames[0]}\n{frames[3]}\n")
        train(replace(cfg, out_dir=str(tmp_path / "r3"), val_frames=str(tmp_path / "both.txt")),
              ModelConfig(input_size=SIZE), progress=False, log=quiet)  # fmt: skip
    with pytest.raises(ValueError, match="validation drives or frame lists"):
        replace(cfg, val_drives=("2011_09_26_drive_0002_sync",))


def test_rig_data_sets_the_label_and_log_depth_ranges(tmp_path):
    """calib.json's depth_range_m becomes the label range and the log space's (m, M)."""
    from edgedepth.labelgen.plan import plan_shards, write_plan
    from edgedepth.labelgen.run import run_stages
    from tests.rig_tree import DEPTH_RANGE, make_rig_tree

    root = make_rig_tree(tmp_path / "rig", {"seq_a": 2, "seq_b": 1})
    labels = tmp_path / "labels"
    write_plan(plan_shards(root), labels)
    run_stages(labels, ["images", "sgbm"], workers=1, progress=False)
    lines: list[str] = []
    cfg = TrainConfig(labels_dir=str(labels), out_dir=str(tmp_path / "run"), teacher="sgbm", epochs=1,
                      iters_per_epoch=1, batch_size=2, workers=0, val_drives=("seq_b",))  # fmt: skip
    train(cfg, ModelConfig(input_size=(64, 160)), progress=False, log=lines.append)
    saved = json.loads((tmp_path / "run" / rf.CONFIG_FILE).read_text())
    assert (saved["train"]["min_depth"], saved["train"]["max_depth"]) == tuple(DEPTH_RANGE)
    assert saved["model"]["depth_range"] == DEPTH_RANGE and saved["model"]["arch"] == "paper"
    assert any(
        "labels 0.5-50 m, log space over 0.5-50 m (the data's depth_range_m)" in line for line in lines
    )
    _, model_config = load_student(tmp_path / "run" / rf.LAST)
    assert model_config.depth_range == tuple(DEPTH_RANGE)
    # the checkpoint records how many frames trained it (seq_a's 2; student predict warns when few);
    # config.json has that count in its split, not among the model settings
    assert model_config.trained_frames == 2 and saved["split"]["train_frames"] == 2
    assert "trained_frames" not in saved["model"]


def test_training_on_windows_feeds_the_network_windows_and_validates_on_the_whole_input(
    tmp_path, monkeypatch
):
    """--window 0.5 at 160x64: every training batch is 64x32 (half of each side, down to the stride),
    validation sees the whole 160x64 input, and the start line and config.json say so."""
    from edgedepth.labelgen.plan import plan_shards, write_plan
    from edgedepth.labelgen.run import run_stages
    from edgedepth.student.model.network import DepthSegStudent
    from tests.rig_tree import make_rig_tree

    root = make_rig_tree(tmp_path / "rig", {"seq_a": 2, "seq_b": 1})
    labels = tmp_path / "labels"
    write_plan(plan_shards(root), labels)
    run_stages(labels, ["images", "sgbm"], workers=1, progress=False)
    shapes: list[tuple[bool, tuple[int, ...]]] = []
    forward = DepthSegStudent.forward

    def spy(self, x, *args, **kwargs):
        shapes.append((self.training, tuple(x.shape[-2:])))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(DepthSegStudent, "forward", spy)
    lines: list[str] = []
    cfg = TrainConfig(labels_dir=str(labels), out_dir=str(tmp_path / "run"), teacher="sgbm", epochs=1,
                      iters_per_epoch=2, batch_size=2, workers=0, val_drives=("seq_b",), window=0.5)  # fmt: skip
    train(cfg, ModelConfig(input_size=(64, 160)), progress=False, log=lines.append)
    assert {shape for training, shape in shapes if training} == {(32, 64)}
    assert {shape for training, shape in shapes if not training} == {(64, 160)}
    assert any("trained on random 64x32 windows" in line for line in lines), lines
    assert json.loads((tmp_path / "run" / rf.CONFIG_FILE).read_text())["train"]["window"] == 0.5


# --- validation at scale: a capped, fixed subset at the training size --------------------------------


def test_validation_is_a_capped_fixed_subset_at_the_training_size_kept_on_resume(tmp_path, monkeypatch):
    """6 held-out frames, --val-max-frames 3: the same 3 frames every epoch and after a resume,
    recorded in split.json and config.json, scored at the training input size (labels and LiDAR)."""
    import edgedepth.student.train.loop as train_module

    held = "2011_09_26_drive_0002_sync"
    labels = make_label_folder(tmp_path, {"2011_09_26_drive_0001_sync": 2, held: 6}, seg=False)
    seen: list[list[str]] = []
    real = train_module.validate

    def spy(model, dataset, *args, **kwargs):
        seen.append(dataset.frame_ids)
        sample = dataset[0]
        assert tuple(sample["depth"].shape) == SIZE and tuple(sample["lidar"].shape) == SIZE
        return real(model, dataset, *args, **kwargs)

    monkeypatch.setattr(train_module, "validate", spy)
    run = tmp_path / "run"
    cfg = config(labels, run, iters_per_epoch=1, val_drives=(held,), val_max_frames=3)
    lines: list[str] = []
    train(cfg, ModelConfig(input_size=SIZE, seg=False), progress=False, log=lines.append)
    assert len(seen) == 2 and seen[0] == seen[1] and len(seen[0]) == 3
    assert all(held in f for f in seen[0])
    assert any("3 of 6 held-out frames validated" in line for line in lines), lines

    split = json.loads((run / rf.SPLIT_FILE).read_text())
    assert split["val_frames"] == seen[0] and split["val_held_out"] == 6 and split["val_max_frames"] == 3
    saved = json.loads((run / rf.CONFIG_FILE).read_text())
    assert saved["train"]["val_max_frames"] == 3
    assert (saved["split"]["val_frames"], saved["split"]["val_held_out"]) == (3, 6)
    with open(run / rf.METRICS_FILE) as handle:
        assert math.isfinite(float(next(csv.DictReader(handle))["val_lidar/rmse"]))

    train(
        replace(cfg, epochs=3),
        ModelConfig(input_size=SIZE, seg=False),
        resume=True,
        progress=False,
        log=quiet,
    )
    assert len(seen) == 3 and seen[2] == seen[0]
    assert json.loads((run / rf.SPLIT_FILE).read_text())["val_frames"] == seen[0]
    with pytest.raises(ValueError, match="started with val_max_frames=3, now 4"):
        train(replace(cfg, epochs=4, val_max_frames=4), ModelConfig(input_size=SIZE, seg=False), resume=True,
              progress=False, log=quiet)  # fmt: skip


def test_a_run_folder_of_an_older_edgedepth_resumes_without_the_new_setting(tmp_path):
    """config.json written before --val-max-frames existed: resumable; any other difference is not."""
    settings = {"train": {"lr": 0.01, "val_max_frames": 200}, "model": {"variant": "L"}}
    rf.write_json(tmp_path / rf.CONFIG_FILE, {"train": {"lr": 0.01}, "model": {"variant": "L"}})
    rf.check_resumable(tmp_path, settings)
    rf.write_json(
        tmp_path / rf.CONFIG_FILE, {"train": {"lr": 0.01, "val_max_frames": 50}, "model": {"variant": "L"}}
    )
    with pytest.raises(ValueError, match="started with val_max_frames=50, now 200"):
        rf.check_resumable(tmp_path, settings)
    rf.write_json(tmp_path / rf.CONFIG_FILE, {"train": {"lr": 0.01}, "model": 3})
    with pytest.raises(
        ValueError, match=r"config\.json: field 'model' is an int, expected the run's model settings"
    ):
        rf.check_resumable(tmp_path, settings)


def test_loader_workers_are_capped_at_the_cores_with_a_note(tmp_path):
    import os

    lines: list[str] = []
    cfg = config(tmp_path, tmp_path / "run", workers=10_000)
    capped = rf.cap_workers(cfg, lines.append)
    assert capped.workers == len(os.sched_getaffinity(0)) < 10_000
    assert lines == [f"note: --workers 10000 capped at the {capped.workers} CPU cores of this machine"]
    assert rf.cap_workers(replace(cfg, workers=1), lines.append).workers == 1 and len(lines) == 1


def test_a_run_from_before_the_trained_range_was_recorded_resumes(tmp_path):
    """config.json of a run made before the model config recorded its labels' range (trained_range)."""
    settings = {"train": {"lr": 0.01}, "model": {"variant": "L", "trained_range": [1.0, 8.0]}}
    rf.write_json(tmp_path / rf.CONFIG_FILE, {"train": {"lr": 0.01}, "model": {"variant": "L"}})
    rf.check_resumable(tmp_path, settings)
    rf.write_json(
        tmp_path / rf.CONFIG_FILE,
        {"train": {"lr": 0.01}, "model": {"variant": "L", "trained_range": [1.0, 80.0]}},
    )
    with pytest.raises(ValueError, match=r"started with trained_range=\[1\.0, 80\.0\], now \[1\.0, 8\.0\]"):
        rf.check_resumable(tmp_path, settings)
