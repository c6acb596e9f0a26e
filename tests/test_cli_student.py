"""`edgedepth student train / eval / predict` from the command line: bad input as one line, and the
whole path on the real KITTI frame (labels -> train -> eval against its annotated depth -> predict)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgedepth import cli
from edgedepth.student.evaluate.groundtruth import read_annotated
from edgedepth.student.evaluate.metrics import garg_crop_mask
from edgedepth.student.model.checkpoint import save_checkpoint
from edgedepth.student.model.config import ModelConfig
from tests.student.labelfolder import make_label_folder

SAMPLE_FRAME = "2011_09_26/2011_09_26_drive_0001_sync"


def invoke(*args: str):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    return make_label_folder(tmp_path_factory.mktemp("cli"), {"2011_09_26_drive_0001_sync": 2}, lidar=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    cfg = ModelConfig(variant="M", input_size=(64, 128))
    paths = {"M": folder / "m.pt", "damaged": folder / "damaged.pt", "foreign": folder / "foreign.pt"}
    save_checkpoint(paths["M"], {"model_config": cfg.to_dict(), "model": cfg.build().state_dict()})
    paths["damaged"].write_bytes(paths["M"].read_bytes()[:5000])
    torch.save({"state_dict": {"w": torch.zeros(2)}}, paths["foreign"])
    return paths


def test_train_bad_input(labels, tmp_path):
    base = ["student", "train", labels, "--out", tmp_path / "run", "--epochs", "1", "--iters-per-epoch", "1"]
    line = one_error_line(invoke(*base, "--teacher", "psmnet"))
    assert "psmnet: no such label stage (the depth labels)" in line
    line = one_error_line(invoke(*base, "--teacher", "synth", "--size", "100x64"))
    assert "input width 100 is not a multiple of 32; nearest valid widths: 96 or 128" in line
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "plan.json").write_text((labels / "plan.json").read_text())
    line = one_error_line(invoke("student", "train", bare, "--out", tmp_path / "r2", "--teacher", "synth"))
    assert "bare/images: no such label stage (the student's input images)" in line
    line = one_error_line(invoke(*base, "--teacher", "synth", "--val-drives", "2011_09_26_drive_0007"))
    assert "--val-drives: 2011_09_26_drive_0007_sync is not a drive of the plan" in line


def test_eval_and_predict_bad_input(checkpoints, kitti_sample, tmp_path):
    split = tmp_path / "split.txt"
    split.write_text(f"{SAMPLE_FRAME} 5 l\n")
    image = kitti_sample / SAMPLE_FRAME / "image_02" / "data" / "0000000005.png"
    evaluate = ["student", "eval", "--kitti-root", kitti_sample, "--split", split, "--gt", "annotated"]

    line = one_error_line(invoke(*evaluate[:2], checkpoints["M"], *evaluate[2:], "--variant", "L"))
    assert "m.pt: holds variant M (3 decoder blocks); variant L needs 4" in line
    line = one_error_line(invoke(*evaluate[:2], checkpoints["damaged"], *evaluate[2:]))
    assert "damaged.pt: not a readable PyTorch checkpoint" in line
    line = one_error_line(invoke(*evaluate[:2], checkpoints["foreign"], *evaluate[2:]))
    assert "foreign.pt: not an edgedepth student checkpoint" in line

    missing = tmp_path / "missing.txt"
    missing.write_text(
        f"{SAMPLE_FRAME} 5 l\n{SAMPLE_FRAME} 6 l\n2011_09_26/2011_09_26_drive_0002_sync 69 l\n"
    )
    line = one_error_line(
        invoke("student", "eval", checkpoints["M"], "--kitti-root", kitti_sample, "--split", missing)
    )
    assert "missing.txt: 2 of 3 frames not found under" in line and "drive_0001_sync/0000000006" in line

    line = one_error_line(
        invoke("student", "predict", checkpoints["M"], image, "--out", tmp_path / "p", "--size", "1000x320")
    )
    assert "input width 1000 is not a multiple of 32" in line
    line = one_error_line(
        invoke("student", "predict", checkpoints["foreign"], image, "--out", tmp_path / "p")
    )
    assert "not an edgedepth student checkpoint" in line


@pytest.mark.slow
def test_labels_train_eval_predict_on_the_real_frame(kitti_sample, tmp_path):
    """The issue's "done when": from the CLI, on shards labelgen made from the real frame."""
    labels, run = tmp_path / "labels", tmp_path / "run"
    assert invoke("labelgen", "plan", "--kitti-root", kitti_sample, "--out", labels).exit_code == 0
    result = invoke(
        "labelgen", "run", labels, "--stages", "images,lidar,sgbm", "--workers", "1", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    result = invoke(
        "student",
        "train",
        labels,
        "--out",
        run,
        "--teacher",
        "sgbm",
        "--size",
        "416x128",
        "--epochs",
        "2",
        "--iters-per-epoch",
        "75",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "no validation drives" in result.output and "segmentation loss off" in result.output

    split = tmp_path / "split.txt"
    split.write_text(f"{SAMPLE_FRAME} 5 l\n")
    out_json = tmp_path / "eval.json"
    result = invoke(
        "student",
        "eval",
        run / "best.pt",
        "--kitti-root",
        kitti_sample,
        "--split",
        split,
        "--gt",
        "annotated",
        "--out",
        out_json,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "RMSE" in result.output
    scores = json.loads(out_json.read_text())
    assert scores["frames"] == 1 and scores["no_gt"] == []

    # a constant-depth baseline: the mean of the labels the student was trained on, scored the same way
    gt_path = (
        kitti_sample / "data_depth_annotated/train/2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02"
    )
    gt = read_annotated(gt_path / "0000000005.png")
    mask = (gt > 1e-3) & (gt <= 80) & garg_crop_mask(*gt.shape)
    from edgedepth.labelgen.reader import LabelReader

    teacher = LabelReader(labels, ["sgbm"])[0]["sgbm/depth"]
    constant = float(teacher[(teacher > 1) & (teacher <= 80)].mean())
    baseline_rmse = float(np.sqrt(np.mean((gt[mask] - constant) ** 2)))
    baseline_abs_rel = float(np.mean(np.abs(gt[mask] - constant) / gt[mask]))
    print(
        f"\ntrained: RMSE {scores['rmse']:.3f} Abs Rel {scores['abs_rel']:.3f}; "
        f"constant {constant:.2f} m: RMSE {baseline_rmse:.3f} Abs Rel {baseline_abs_rel:.3f}"
    )
    assert scores["rmse"] < baseline_rmse and scores["abs_rel"] < baseline_abs_rel

    image = kitti_sample / SAMPLE_FRAME / "image_02" / "data" / "0000000005.png"
    result = invoke("student", "predict", run / "best.pt", image, "--out", tmp_path / "pred", "--no-progress")
    assert result.exit_code == 0, result.output
    depth16 = cv2.imread(str(tmp_path / "pred" / "0000000005_depth16.png"), cv2.IMREAD_UNCHANGED)
    assert depth16.dtype == np.uint16 and depth16.shape == gt.shape
    assert (tmp_path / "pred" / "0000000005_depth.png").is_file()
    assert not (tmp_path / "pred" / "0000000005_classes.png").exists()  # depth-only model


def test_build_engine_without_tensorrt_says_so_in_one_line_with_exit_3(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    model = tmp_path / "student.onnx"
    model.write_bytes(b"")
    result = invoke("student", "build-engine", model, "--out", tmp_path / "student.engine", "--fp16")
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: tensorrt is not installed here")
    assert f"trtexec --onnx={model} --saveEngine={tmp_path / 'student.engine'} --fp16" in lines[0]
    missing = invoke("student", "build-engine", tmp_path / "none.onnx", "--out", tmp_path / "x.engine")
    assert "none.onnx: ONNX file not found" in one_error_line(missing)


def test_export_from_the_command_line(checkpoints, tmp_path):
    out = tmp_path / "export"
    result = invoke(
        "student",
        "export",
        checkpoints["M"],
        "--out",
        out,
        "--variants",
        "M,XS",
        "--size",
        "128x64",
        "--target",
        "trt8",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == ["student_M_trt8_fp32.onnx", "student_XS_trt8_fp32.onnx"]
    assert all(f["opset"] == 13 and f["parity"]["max_rel_err"] < 1e-4 for f in manifest["files"])
    assert "student_XS_trt8_fp32.onnx" in result.output
    bench = invoke(
        "student",
        "bench",
        out,
        "--variants",
        "XS",
        "--backends",
        "onnxruntime,tensorrt",
        "--repeats",
        "3",
        "--out",
        tmp_path / "bench.json",
    )
    assert bench.exit_code == 0, bench.output
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert {(r["backend"], r["status"].split(":")[0]) for r in rows} >= {("onnxruntime", "ok")}
    assert any(r["backend"] == "tensorrt" and r["status"].startswith("not installed") for r in rows)
    assert (tmp_path / "bench.png").is_file()
    line = one_error_line(invoke("student", "export", checkpoints["M"], "--out", out, "--variants", "L"))
    assert "m.pt: holds variant M (3 decoder blocks); variant L needs 4" in line
    line = one_error_line(invoke("student", "export", checkpoints["M"], "--out", out, "--precision", "int8"))
    assert "int8" in line and "calib" in line
