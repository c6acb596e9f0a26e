"""Tests for edgedepth.student.evaluate.evaluation on the real KITTI frame, against an independent computation in the test."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgedepth.common.checkpoints import sha256_file
from edgedepth.labelgen.kitti import Frame, read_calibration, read_split_file, read_velodyne
from edgedepth.student.evaluate.evaluation import (
    CSV_COLUMNS,
    EvalResult,
    evaluate_checkpoint,
    resolve_split,
)
from edgedepth.student.evaluate.frames import EvalSet
from edgedepth.student.evaluate.groundtruth import lidar_groundtruth
from edgedepth.student.evaluate.metrics import METRIC_NAMES
from edgedepth.student.model.checkpoint import save_checkpoint
from edgedepth.student.model.config import ModelConfig

DATE, DRIVE, INDEX = "2011_09_26", "2011_09_26_drive_0001_sync", 5
FRAME_ID = f"{DATE}/{DRIVE}/{INDEX:010d}"
SIZE = (64, 224)  # small: CPU time


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A random-weight student (L) saved as a checkpoint; returns (path, model in eval mode, config)."""
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=(320, 1056))
    model = cfg.build()
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    save_checkpoint(path, {"model_config": cfg.to_dict(), "model": model.state_dict(), "epoch": 0, "step": 0})
    return path, model.eval(), cfg


def _split(folder: Path, *lines: str, name: str = "split.txt") -> Path:
    path = folder / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture()
def one_frame(tmp_path) -> Path:
    return _split(tmp_path, f"{DATE}/{DRIVE} {INDEX} l")


def _expected(
    model, cfg, kitti_sample: Path, gt: str, crop: str, resize_in: str, side: str
) -> dict[str, float]:
    """The seven metrics of the real frame, computed step by step without edgedepth.student.evaluate.metrics / evaluate."""
    cam = 2 if side == "l" else 3
    image_path = kitti_sample / DATE / DRIVE / f"image_0{cam}" / "data" / f"{INDEX:010d}.png"
    rgb = cv2.imread(str(image_path), cv2.IMREAD_COLOR)[:, :, ::-1]
    small = cv2.resize(rgb, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)
    x = (small.astype(np.float32) / 255 - np.float32(cfg.mean)) / np.float32(cfg.std)
    with torch.inference_mode():
        pred = model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])
    assert pred.shape == (1, 1, SIZE[0] // 2, SIZE[1] // 2)  # variant L: half resolution

    if gt == "annotated":
        png = (
            (kitti_sample / "data_depth_annotated" / "train" / DRIVE / "proj_depth" / "groundtruth")
            / f"image_0{cam}"
            / f"{INDEX:010d}.png"
        )
        gt_map = cv2.imread(str(png), cv2.IMREAD_UNCHANGED).astype(np.float64) / 256.0
    else:
        points = read_velodyne(Frame(DATE, DRIVE, INDEX).velodyne_path(kitti_sample))
        gt_map = lidar_groundtruth(points, read_calibration(kitti_sample / DATE), cam=cam).astype(np.float64)
    height, width = gt_map.shape

    source = pred.double()
    if resize_in == "disparity":
        source = 1.0 / source.clamp_min(1e-3)
    up = F.interpolate(source, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    if resize_in == "disparity":
        up = 1.0 / up

    mask = (gt_map > 1e-3) & (gt_map <= 80.0)
    if crop != "none":
        rows, cols = {
            "garg": ((0.40810811, 0.99189189), (0.03594771, 0.96405229)),
            "eigen": ((0.3324324, 0.91351351), (0.0359477, 0.96405229)),
        }[crop]
        window = np.zeros_like(mask)
        window[int(rows[0] * height) : int(rows[1] * height), int(cols[0] * width) : int(cols[1] * width)] = (
            True
        )
        mask &= window
    g, p = gt_map[mask], np.clip(up[mask], 1e-3, 80.0)
    ratio = np.maximum(g / p, p / g)
    return {
        "abs_rel": np.mean(np.abs(g - p) / g),
        "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": math.sqrt(np.mean((g - p) ** 2)),
        "rmse_log": math.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "a1": np.mean(ratio < 1.25),
        "a2": np.mean(ratio < 1.25**2),
        "a3": np.mean(ratio < 1.25**3),
        "gt_pixels": int(mask.sum()),
    }


@pytest.mark.parametrize(
    ("gt", "crop", "resize_in", "side"),
    [
        ("annotated", "garg", "depth", "l"),
        ("lidar", "garg", "depth", "l"),
        ("annotated", "eigen", "disparity", "l"),
        ("lidar", "none", "depth", "l"),
        ("annotated", "garg", "depth", "r"),
        ("lidar", "garg", "depth", "r"),
    ],
)
def test_metrics_match_an_independent_computation(student, kitti_sample, tmp_path, gt, crop, resize_in, side):
    path, model, cfg = student
    split = _split(tmp_path, f"{DATE}/{DRIVE} {INDEX} {side}")
    result = evaluate_checkpoint(
        path, kitti_sample, split=split, gt=gt, crop=crop, size=SIZE, resize_in=resize_in, progress=False
    )
    expected = _expected(model, cfg, kitti_sample, gt, crop, resize_in, side)
    assert result.frames == 1 and result.no_gt == ()
    assert list(result.metrics) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert result.metrics[name] == pytest.approx(expected[name], rel=1e-6, abs=1e-12), name
    (row,) = result.per_frame
    assert (row["frame_id"], row["side"], row["gt_pixels"]) == (FRAME_ID, side, expected["gt_pixels"])
    assert expected["gt_pixels"] > 1000
    prov = result.provenance
    assert (prov["gt"], prov["crop"], prov["resize_in"], prov["input_size"]) == (
        gt,
        crop,
        resize_in,
        list(SIZE),
    )
    assert prov["median_scaling"] is False and prov["image_formats"] == ["png"]


def test_default_size_is_the_checkpoints_and_crop_bools(student, kitti_sample, one_frame):
    path, _, _ = student
    result = evaluate_checkpoint(
        path, kitti_sample, split=one_frame, gt="annotated", crop=True, progress=False
    )
    assert result.provenance["input_size"] == [320, 1056]
    assert result.provenance["crop"] == "garg"
    assert result.provenance["variant"] == "L"


def test_variant_cut_and_progress_bar(student, kitti_sample, one_frame, capsys):
    path, _, _ = student
    result = evaluate_checkpoint(path, kitti_sample, split=one_frame, gt="lidar", variant="m", size=SIZE)
    assert result.provenance["variant"] == "M"
    assert "1/1" in capsys.readouterr().err  # tqdm writes to stderr


def test_table_json_and_csv(student, kitti_sample, one_frame, tmp_path):
    path, _, _ = student
    result = evaluate_checkpoint(
        path, kitti_sample, split=one_frame, gt="annotated", size=SIZE, progress=False
    )
    lines = result.format_table().splitlines()
    labels = ["Abs Rel", "Sq Rel", "RMSE", "RMSE log", "d<1.25", "d<1.25^2", "d<1.25^3"]
    assert [label.strip() for label in lines[0].split("  ") if label.strip()] == labels
    assert lines[1].split() == [f"{result.metrics[name]:.3f}" for name in METRIC_NAMES]
    assert lines[2] == "1 frames, split split, gt annotated, crop garg"
    assert len(lines) == 3

    json_path, csv_path = result.save(tmp_path / "out" / "eval.json")
    assert csv_path == tmp_path / "out" / "eval_frames.csv"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["eval.json", "eval_frames.csv"]
    data = json.loads(json_path.read_text())
    for key in (*METRIC_NAMES, "frames", "no_gt", "checkpoint", "checkpoint_sha256", "variant", "input_size"):
        assert key in data, key
    assert {name: data[name] for name in METRIC_NAMES} == result.metrics
    assert (data["frames"], data["no_gt"], data["per_frame_csv"]) == (1, [], "eval_frames.csv")
    assert data["checkpoint_sha256"] == sha256_file(path)
    assert data["checkpoint"] == str(path.resolve())
    assert (data["split"], data["split_file"], data["gt"], data["crop"]) == (
        "split",
        str(one_frame),
        "annotated",
        "garg",
    )
    assert (data["resize_in"], data["input_size"], data["variant"]) == ("depth", list(SIZE), "L")

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == 1 and rows[0]["frame_id"] == FRAME_ID and rows[0]["side"] == "l"
    for name in METRIC_NAMES:
        assert float(rows[0][name]) == pytest.approx(result.metrics[name], rel=1e-8)
    assert int(rows[0]["gt_pixels"]) == result.per_frame[0]["gt_pixels"]


def test_result_is_frozen():
    result = EvalResult(dict.fromkeys(METRIC_NAMES, 0.0), 1, (), ())
    with pytest.raises(AttributeError):
        result.frames = 2


# --- frames missing or without ground truth --------------------------------------------------------------


def test_missing_frames_are_one_line_error(student, kitti_sample, tmp_path):
    path, _, _ = student
    split = _split(
        tmp_path,
        f"{DATE}/{DRIVE} {INDEX} l",
        f"{DATE}/{DRIVE} 6 l",
        f"{DATE}/2011_09_26_drive_0002_sync 69 l",
        "2011_09_28/2011_09_28_drive_0002_sync 0000000010 l",
        f"{DATE}/{DRIVE} 7 l",
    )
    with pytest.raises(ValueError) as info:
        evaluate_checkpoint(path, kitti_sample, split=split, gt="annotated", size=SIZE, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"{split}: 4 of 5 frames not found under {kitti_sample} (first: {DATE}/{DRIVE}/0000000006, "
        f"{DATE}/2011_09_26_drive_0002_sync/0000000069, 2011_09_28/2011_09_28_drive_0002_sync/0000000010)"
    )


def _fake_root(kitti_sample: Path, tmp_path: Path) -> Path:
    """A KITTI root where frame 6 has the same image as frame 5, an empty scan and no annotated GT."""
    root = tmp_path / "kitti"
    drive = root / DATE / DRIVE
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt"):
        (root / DATE).mkdir(parents=True, exist_ok=True)
        (root / DATE / name).symlink_to(kitti_sample / DATE / name)
    (drive / "image_02" / "data").mkdir(parents=True)
    (drive / "velodyne_points" / "data").mkdir(parents=True)
    for index in (5, 6):
        (drive / "image_02" / "data" / f"{index:010d}.png").symlink_to(
            kitti_sample / DATE / DRIVE / "image_02" / "data" / f"{INDEX:010d}.png"
        )
    (drive / "velodyne_points" / "data" / f"{INDEX:010d}.bin").symlink_to(
        Frame(DATE, DRIVE, INDEX).velodyne_path(kitti_sample)
    )
    (drive / "velodyne_points" / "data" / "0000000006.bin").write_bytes(b"")
    annotated = (
        kitti_sample / "data_depth_annotated" / "train" / DRIVE / "proj_depth" / "groundtruth" / "image_02"
    )
    target = root / DATE / DRIVE / "proj_depth" / "groundtruth" / "image_02"  # monodepth2's layout
    target.mkdir(parents=True)
    (target / f"{INDEX:010d}.png").symlink_to(annotated / f"{INDEX:010d}.png")
    return root


@pytest.mark.parametrize("gt", ["annotated", "lidar"])
def test_frame_without_gt_is_listed(student, kitti_sample, tmp_path, gt):
    path, _, _ = student
    root = _fake_root(kitti_sample, tmp_path)
    split = _split(tmp_path, f"{DATE}/{DRIVE} 6 l", f"{DATE}/{DRIVE} {INDEX} l")
    result = evaluate_checkpoint(path, root, split=split, gt=gt, size=SIZE, progress=False)
    missing_id = f"{DATE}/{DRIVE}/0000000006"
    assert result.frames == 1 and result.no_gt == (missing_id,)
    assert [row["frame_id"] for row in result.per_frame] == [FRAME_ID]
    reference = evaluate_checkpoint(
        path,
        kitti_sample,
        split=_split(tmp_path, f"{DATE}/{DRIVE} {INDEX} l", name="one.txt"),
        gt=gt,
        size=SIZE,
        progress=False,
    )
    assert result.metrics == reference.metrics
    assert (
        result.format_table().splitlines()[-1] == f"1 frames without ground truth (not scored): {missing_id}"
    )
    json_path, _ = result.save(tmp_path / "eval.json")
    assert json.loads(json_path.read_text())["no_gt"] == [missing_id]

    only_missing = _split(tmp_path, f"{DATE}/{DRIVE} 6 l", name="none.txt")
    with pytest.raises(ValueError, match=r"none\.txt: none of the 1 frames has ground truth") as info:
        evaluate_checkpoint(path, root, split=only_missing, gt=gt, size=SIZE, progress=False)
    assert "\n" not in str(info.value)


def test_lidar_needs_scan_and_calibration(student, kitti_sample, tmp_path):
    path, _, _ = student
    root = _fake_root(kitti_sample, tmp_path)
    (root / DATE / DRIVE / "velodyne_points" / "data" / "0000000006.bin").unlink()
    split = _split(tmp_path, f"{DATE}/{DRIVE} 6 l", f"{DATE}/{DRIVE} {INDEX} l")
    with pytest.raises(ValueError, match=r"1 of 2 frames not found .*\(first: 2011_09_26/.*/0000000006\)"):
        evaluate_checkpoint(path, root, split=split, gt="lidar", size=SIZE, progress=False)
    (root / DATE / "calib_velo_to_cam.txt").unlink()
    with pytest.raises(ValueError, match="2 of 2 frames not found"):
        evaluate_checkpoint(path, root, split=split, gt="lidar", size=SIZE, progress=False)


# --- splits -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count", "file"),
    [("eigen", 697, "eigen_test.txt"), ("eigen_benchmark", 652, "eigen_benchmark_test.txt")],
)
def test_packaged_splits(name, count, file, tmp_path):
    resolved, path = resolve_split(name)
    assert resolved == name and path.name == file and path.parent.name == "splits"
    entries = EvalSet(tmp_path, name, gt="annotated", layout="kitti", check_images=False).frames
    assert len(entries) == count == len(read_split_file(path))
    assert {entry.side for entry in entries} == {"l"}
    assert len({entry.frame_id for entry in entries}) == count


def test_split_paths_and_errors(tmp_path):
    split = _split(tmp_path, f"{DATE}/{DRIVE} 5 r", f"{DATE}/{DRIVE} 0000000006", name="mine.txt")
    assert resolve_split(str(split)) == ("mine", split)

    def entries(path):
        return EvalSet(tmp_path, path, gt="annotated", layout="kitti", check_images=False).frames

    assert [(e.frame_id, e.side, e.cam) for e in entries(split)] == [
        (FRAME_ID, "r", 3),
        (f"{DATE}/{DRIVE}/0000000006", "l", 2),
    ]
    with pytest.raises(FileNotFoundError, match=r"nope\.txt: split file not found"):
        resolve_split(str(tmp_path / "nope.txt"))
    bad_side = _split(tmp_path, f"{DATE}/{DRIVE} 5 x", name="side.txt")
    with pytest.raises(ValueError, match=r"side\.txt: line 1: side must be l or r"):
        entries(bad_side)
    with pytest.raises(ValueError, match="lists no frames"):
        entries(_split(tmp_path, name="empty.txt"))


# --- bad input --------------------------------------------------------------------------------------------


def test_bad_arguments_are_one_line_errors(student, kitti_sample, one_frame, tmp_path):
    path, _, _ = student

    def run(**kwargs):
        args = {
            "checkpoint": path,
            "data_root": kitti_sample,
            "split": one_frame,
            "size": SIZE,
            "progress": False,
        }
        return evaluate_checkpoint(**{**args, **kwargs})

    cases = [
        (
            {"gt": "stereo"},
            ValueError,
            "unknown ground truth kind 'stereo'; choose one of lidar, annotated, depth_gt",
        ),
        (
            {"gt": "depth_gt"},
            ValueError,
            "ground truth 'depth_gt' is not available for the kitti layout; choose one of lidar, annotated",
        ),
        ({"crop": "kb"}, ValueError, "unknown crop 'kb'"),
        ({"resize_in": "inverse"}, ValueError, "unknown resize mode 'inverse'"),
        ({"size": (100, 416)}, ValueError, "input height 100 is not a multiple of 32"),
        ({"batch_size": 0}, ValueError, "--batch-size must be 1..1024, got 0"),
        ({"batch_size": 10**9}, ValueError, "--batch-size must be 1..1024, got 1000000000"),
        ({"size": (64, 224, 3)}, ValueError, "size must be (height, width) in pixels, got (64, 224, 3)"),
        ({"data_root": tmp_path / "nokitti"}, FileNotFoundError, "nokitti: data root folder not found"),
        (
            {"annotated_root": tmp_path / "noann"},
            FileNotFoundError,
            "noann: annotated depth folder not found",
        ),
        ({"split": tmp_path / "none.txt"}, FileNotFoundError, "none.txt: split file not found"),
        ({"checkpoint": tmp_path / "no.pt"}, FileNotFoundError, "no.pt: checkpoint file not found"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error) as info:
            run(**kwargs)
        assert message in str(info.value) and "\n" not in str(info.value), kwargs


def test_checkpoint_errors_surface(student, kitti_sample, one_frame, tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match=r"other\.pt: not an edgedepth student checkpoint"):
        evaluate_checkpoint(other, kitti_sample, split=one_frame, size=SIZE, progress=False)
    small_cfg = ModelConfig(variant="S", input_size=(128, 416))
    small = tmp_path / "small.pt"
    save_checkpoint(small, {"model_config": small_cfg.to_dict(), "model": small_cfg.build().state_dict()})
    with pytest.raises(ValueError, match=r"small\.pt: holds variant S .* variant L needs 4") as info:
        evaluate_checkpoint(small, kitti_sample, split=one_frame, variant="L", progress=False)
    assert "\n" not in str(info.value)
    result = evaluate_checkpoint(small, kitti_sample, split=one_frame, gt="annotated", progress=False)
    assert result.provenance["variant"] == "S" and result.provenance["input_size"] == [128, 416]
