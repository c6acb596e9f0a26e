"""Evaluation on rig-layout data (docs/rig.md): defaults, median scaling, teacher and constant scores,
each against an independent NumPy computation in the test."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgedepth.labelgen.plan import plan_shards, write_plan
from edgedepth.labelgen.run import run_stages
from edgedepth.student.evaluate.evaluation import evaluate_checkpoint, score_constant, score_teacher
from edgedepth.student.evaluate.frames import EvalSet
from edgedepth.student.model.checkpoint import save_checkpoint
from edgedepth.student.model.config import ModelConfig
from tests.rig_tree import DEPTH_RANGE, frame_name, make_rig_tree

SIZE = (64, 160)  # the rig tree's images and the network input
LO, HI = DEPTH_RANGE


def _varied_groundtruth(root: Path, sequence: str, index: int, seed: int) -> np.ndarray:
    """Replace a frame's depth_gt with a varied map (holes, values outside the range); returns metres."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.2, 60.0, SIZE)  # some below 0.5 m and above 50 m: outside the range
    depth[rng.random(SIZE) < 0.2] = 0  # no value
    encoded = np.round(depth * 256).astype(np.uint16)
    cv2.imwrite(str(root / sequence / "depth_gt" / f"{frame_name(index)}.png"), encoded)
    return encoded.astype(np.float64) / 256


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = make_rig_tree(tmp_path_factory.mktemp("rig"), {"seq_a": 2, "seq_b": 1})
    gts = {f"seq_a/{frame_name(i)}": _varied_groundtruth(root, "seq_a", i, i) for i in range(2)}
    gts["seq_b/" + frame_name(0)] = _varied_groundtruth(root, "seq_b", 0, 7)
    return root, gts


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=SIZE, depth_range=(0.5, 50.0))
    model = cfg.build()
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    save_checkpoint(path, {"model_config": cfg.to_dict(), "model": model.state_dict(), "epoch": 0, "step": 0})
    return path, model.eval(), cfg


def _metrics(g: np.ndarray, p: np.ndarray) -> dict[str, float]:
    ratio = np.maximum(g / p, p / g)
    return {
        "abs_rel": np.mean(np.abs(g - p) / g),
        "rmse": math.sqrt(np.mean((g - p) ** 2)),
        "rmse_log": math.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "a1": np.mean(ratio < 1.25),
    }


def _student_depth(model, cfg, image_path: Path) -> np.ndarray:
    rgb = cv2.imread(str(image_path), cv2.IMREAD_COLOR)[:, :, ::-1]
    x = (rgb.astype(np.float32) / 255 - np.float32(cfg.mean)) / np.float32(cfg.std)
    with torch.inference_mode():
        pred = model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]).double()
    return F.interpolate(pred, size=SIZE, mode="bilinear", align_corners=False)[0, 0].numpy()


def test_rig_defaults_depth_gt_no_crop_and_the_calibration_range(rig):
    root, _ = rig
    eval_set = EvalSet(root)
    assert (eval_set.layout, eval_set.gt, eval_set.crop) == ("rig", "depth_gt", "none")
    assert [f.frame_id for f in eval_set.frames] == sorted(rig[1])
    assert {eval_set.depth_range(f) for f in eval_set.frames} == {(LO, HI)}
    line = eval_set.describe()
    assert "3 frames of all (rig layout), gt depth_gt, crop none" in line and "0.5-50 m" in line
    with pytest.raises(ValueError, match="'annotated' is not available for the rig layout"):
        EvalSet(root, gt="annotated")


@pytest.mark.parametrize("median_scaling", [False, True])
def test_student_on_rig_data_matches_an_independent_computation(rig, student, median_scaling):
    root, gts = rig
    path, model, cfg = student
    result = evaluate_checkpoint(path, root, median_scaling=median_scaling, progress=False)
    assert result.frames == 3 and result.provenance["median_scaling"] is median_scaling
    expected = []
    for frame_id, gt in sorted(gts.items()):
        sequence, name = frame_id.split("/")
        pred = _student_depth(model, cfg, root / sequence / "left" / f"{name}.png")
        mask = (gt > LO) & (gt <= HI)
        g, p = gt[mask], pred[mask]
        if median_scaling:
            p = p * np.median(g) / np.median(p)
        expected.append(_metrics(g, np.clip(p, LO, HI)))
    for name in ("abs_rel", "rmse", "rmse_log", "a1"):
        assert result.metrics[name] == pytest.approx(np.mean([e[name] for e in expected]), rel=1e-6), name


def test_frame_list_and_a_frame_without_ground_truth(rig, student, tmp_path):
    root, gts = rig
    path, _, _ = student
    listed = tmp_path / "two.txt"
    listed.write_text(f"# held out\nseq_b/{frame_name(0)}\nseq_a/{frame_name(1)}\n")
    result = evaluate_checkpoint(path, root, split=listed, progress=False)
    assert result.frames == 2 and result.provenance["split"] == "two"
    assert [row["frame_id"] for row in result.per_frame] == [
        f"seq_b/{frame_name(0)}",
        f"seq_a/{frame_name(1)}",
    ]
    missing = tmp_path / "missing.txt"
    missing.write_text(f"seq_a/{frame_name(0)}\nseq_a/frame_999\n")
    with pytest.raises(ValueError, match=r"missing\.txt: 1 of 2 frames not found .*seq_a/frame_999") as info:
        evaluate_checkpoint(path, root, split=missing, progress=False)
    assert "\n" not in str(info.value)


def test_constant_and_per_frame_median(rig):
    root, gts = rig
    eval_set = EvalSet(root)
    plain, scaled = score_constant(eval_set, 7.5), score_constant(eval_set, 7.5, median_scaling=True)
    rows, rows_scaled = [], []
    for _, gt in sorted(gts.items()):
        g = gt[(gt > LO) & (gt <= HI)]
        rows.append(_metrics(g, np.full_like(g, 7.5)))
        rows_scaled.append(_metrics(g, np.clip(np.full_like(g, np.median(g)), LO, HI)))
    assert plain.metrics["abs_rel"] == pytest.approx(np.mean([r["abs_rel"] for r in rows]), rel=1e-9)
    assert scaled.metrics["abs_rel"] == pytest.approx(np.mean([r["abs_rel"] for r in rows_scaled]), rel=1e-9)
    assert plain.provenance["predictor"] == "constant 7.5 m"
    with pytest.raises(ValueError, match="a constant depth must be positive"):
        score_constant(eval_set, 0.0)


def test_teacher_is_scored_on_the_pixels_it_labels(rig, tmp_path):
    root, gts = rig
    labels = tmp_path / "labels"
    write_plan(plan_shards(root), labels)
    run_stages(labels, ["sgbm"], workers=1, progress=False)
    result = score_teacher(labels, "sgbm", progress=False)
    assert result.frames == 3 and result.provenance["stage"] == "sgbm"
    expected, covered, scored = [], 0, 0
    for shard in sorted((labels / "sgbm").glob("shard-*.h5")):
        with h5py.File(shard) as f:
            for frame_id, depth in zip(
                f["frame_id"].asstr()[()], f["depth"][()].astype(np.float64), strict=True
            ):
                gt = gts[frame_id]
                valid = (gt > LO) & (gt <= HI)
                mask = valid & (depth > 0)
                expected.append(_metrics(gt[mask], np.clip(depth[mask], LO, HI)))
                covered, scored = covered + mask.sum(), scored + valid.sum()
    assert result.metrics["abs_rel"] == pytest.approx(np.mean([e["abs_rel"] for e in expected]), rel=1e-6)
    assert result.provenance["coverage"] == pytest.approx(covered / scored)
    assert 0.5 < result.provenance["coverage"] < 1  # SGBM leaves the left border unmatched
    with pytest.raises(ValueError, match="no such label stage to score"):
        score_teacher(labels, "psmnet", progress=False)
