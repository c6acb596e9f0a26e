"""The catalogue of bad inputs: each case breaks one thing and states what the command must do.

A case's ``setup(tmp)`` writes the broken input under ``tmp`` and returns the command line, the
path the message must name, and an optional ``written_ok(tmp)`` check that nothing readable but
wrong was left behind. ``code`` is the exit status the command must end with (docs/reliability.md
lists the catalogue; ``test_catalogue.py`` runs it and keeps that page in step).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgedepth.common.lock import read_record
from edgedepth.labelgen.plan import PLAN_FILE, load_plan, plan_shards, write_plan
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.shards import shard_path
from tests.common.lock_holders import hold, holder_record
from tests.kitti_tree import make_kitti_tree

DATE, DRIVE = "2011_09_26", "2011_09_26_drive_0001_sync"
SIZE = (64, 160)


@dataclass(frozen=True)
class Setup:
    argv: list[str]
    names: str  # the path (or option) the one-line message must name
    written_ok: Callable[[Path], None] | None = None


@dataclass(frozen=True)
class Case:
    family: str  # plan | run | inspect | calib | student
    name: str
    what: str  # one line for docs/reliability.md
    code: int  # expected exit status
    pattern: str  # substring the message line must contain
    setup: Callable[[Path], Setup]

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


# ---- inputs -------------------------------------------------------------------------------------


def tree(tmp: Path, frames: int = 3) -> Path:
    return make_kitti_tree(tmp / "kitti", {DRIVE: frames}, {DATE: SIZE})


def drive_dir(root: Path) -> Path:
    return root / DATE / DRIVE


def velodyne(root: Path, index: int = 1) -> Path:
    return drive_dir(root) / "velodyne_points" / "data" / f"{index:010d}.bin"


def image(root: Path, cam: int = 2, index: int = 1) -> Path:
    return drive_dir(root) / f"image_0{cam}" / "data" / f"{index:010d}.png"


def planned(tmp: Path, frames: int = 3, shard_size: int = 64) -> tuple[Path, Path]:
    root = tree(tmp, frames)
    labels = tmp / "labels"
    write_plan(plan_shards(root, shard_size=shard_size), labels)
    return root, labels


def labelled(tmp: Path, stages: tuple[str, ...] = ("lidar", "sgbm")) -> tuple[Path, Path]:
    root, labels = planned(tmp)
    run_stages(labels, list(stages), workers=1, progress=False)
    return root, labels


def edit_calibration(root: Path, key: str, transform: Callable[[list[float]], list[float]] | None) -> Path:
    """Rewrite one line of the date's calib_cam_to_cam.txt (``transform=None`` drops it)."""
    path = root / DATE / "calib_cam_to_cam.txt"
    lines = []
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            if transform is None:
                continue
            line = f"{name}: " + " ".join(f"{v:.6e}" for v in transform([float(v) for v in rest.split()]))
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


def flip_byte(path: Path, dataset: str, row: int = 0) -> Path:
    import h5py

    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info_by_coord((row,) + (0,) * (f[dataset].ndim - 1))
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + info.size // 2] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


# ---- what must (not) be on disk afterwards ------------------------------------------------------


def no_plan(tmp: Path) -> None:
    assert not (tmp / "labels" / PLAN_FILE).exists()


def plan_without_date(tmp: Path) -> None:
    """The plan holds no calibration for the broken date (only its reason) and no NaN anywhere."""
    text = (tmp / "labels" / PLAN_FILE).read_text()
    plan = load_plan(tmp / "labels")
    assert DATE not in plan.calibrations and DATE in plan.calibration_errors
    assert "NaN" not in text and "Infinity" not in text


def frame_not_ok(stage: str, index: int = 1) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        reader = LabelReader(tmp / "labels", [stage], verify="full")
        ok = reader.all_ok()
        assert not ok[index] and ok.sum() == len(ok) - 1, ok  # only the broken frame failed
        reader.close()

    return check


def nothing_at(relative: str) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        assert not (tmp / relative).exists(), relative

    return check


def shard_redone_or_flagged(tmp: Path) -> None:
    assert not list((tmp / "labels").rglob(f"*{'.tmp-'}*"))


# ---- the catalogue ------------------------------------------------------------------------------


def _plan_argv(root: Path, tmp: Path, *extra: str) -> list[str]:
    return ["labelgen", "plan", "--kitti-root", str(root), "--out", str(tmp / "labels"), *extra]


def _calibration_case(name: str, what: str, key: str, transform, pattern: str) -> Case:
    def setup(tmp: Path) -> Setup:
        root = tree(tmp)
        path = edit_calibration(root, key, transform)
        return Setup(_plan_argv(root, tmp), str(path), plan_without_date)

    return Case("plan", name, what, 0, pattern, setup)


def _swap_tx(values: list[float]) -> list[float]:
    return [*values[:3], 400.0, *values[4:]]  # camera 3 left of camera 2: negative baseline


PLAN_CASES = [
    Case("plan", "root-missing", "KITTI root does not exist", 2, "KITTI root folder not found",
         lambda tmp: Setup(_plan_argv(tmp / "nowhere", tmp), str(tmp / "nowhere"), no_plan)),
    Case("plan", "split-missing", "split file does not exist", 2, "split file not found",
         lambda tmp: Setup(_plan_argv(tree(tmp), tmp, "--split-file", str(tmp / "none.txt")),
                           str(tmp / "none.txt"), no_plan)),
    Case("plan", "split-malformed", "split file line is not `<date>/<drive> <index> l|r`", 2, ":2: expected",
         lambda tmp: Setup(_plan_argv(tree(tmp), tmp, "--split-file", str(_write(tmp / "s.txt",
                           f"{DATE}/{DRIVE} 0 l\nnot a line at all\n"))), str(tmp / "s.txt"), no_plan)),
    Case("plan", "split-files-absent", "split entries whose files do not exist: warned, counted, named", 0,
         "2 of 3 planned frames lack an input file",
         lambda tmp: Setup(_plan_argv(tree(tmp, 1), tmp, "--split-file", str(_write(tmp / "s.txt",
                           f"{DATE}/{DRIVE} 0 l\n{DATE}/{DRIVE} 7 l\n{DATE}/{DRIVE} 8 l\n"))),
                           f"{DATE}/{DRIVE}/0000000007")),
    _calibration_case("calib-nan", "P_rect_02 starts with nan", "P_rect_02",
                      lambda v: [float("nan"), *v[1:]], "P_rect_02 holds a non-finite number"),
    _calibration_case("calib-inf", "R_rect_00 holds inf", "R_rect_00",
                      lambda v: [float("inf"), *v[1:]], "R_rect_00 holds a non-finite number"),
    _calibration_case("calib-focal", "negative focal length", "P_rect_02",
                      lambda v: [-v[0], *v[1:]], "focal length"),
    _calibration_case("calib-baseline", "P_rect_03 on the wrong side (negative baseline)", "P_rect_03",
                      _swap_tx, "stereo baseline"),
    _calibration_case("calib-rotation", "R_rect_00 is not a rotation", "R_rect_00",
                      lambda v: [2 * x for x in v], "R_rect_00 is not a rotation"),
    _calibration_case("calib-missing-key", "P_rect_03 line missing", "P_rect_03", None, "missing P_rect_03"),
    _calibration_case("calib-short", "P_rect_02 has 11 numbers", "P_rect_02",
                      lambda v: v[:11], "P_rect_02 has 11 numbers, expected 12"),
    _calibration_case("calib-size", "S_rect_02 gives a 0-pixel image", "S_rect_02",
                      lambda v: [0.0, v[1]], "image size"),
    Case("plan", "velo-rotation", "calib_velo_to_cam R is not a rotation", 0, "R is not a rotation",
         lambda tmp: _velo_case(tmp)),
    Case("plan", "shard-size-0", "--shard-size 0", 2, "--shard-size",
         lambda tmp: Setup(_plan_argv(tree(tmp), tmp, "--shard-size", "0"), "--shard-size", no_plan)),
    Case("plan", "out-under-file", "--out is a path under a regular file", 4, "Not a directory",
         lambda tmp: Setup(["labelgen", "plan", "--kitti-root", str(tree(tmp)), "--out",
                            str(_write(tmp / "afile", "x") / "labels")], str(tmp / "afile"))),
    Case("plan", "different-plan", "a different plan exists (no --overwrite)", 2, "a different plan exists",
         lambda tmp: _different_plan(tmp)),
    Case("plan", "drive-absent", "--drives names a drive that is not there", 2, "not found",
         lambda tmp: Setup(_plan_argv(tree(tmp), tmp, "--drives", "2011_09_26_drive_0099"),
                           "2011_09_26_drive_0099", no_plan)),
]  # fmt: skip


def after(prepare: Callable[[Path], object], make: Callable[[Path], Setup]) -> Callable[[Path], Setup]:
    """A setup that first prepares ``tmp`` (a plan, labels), then builds the command line."""

    def setup(tmp: Path) -> Setup:
        prepare(tmp)
        return make(tmp)

    return setup


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _velo_case(tmp: Path) -> Setup:
    root = tree(tmp)
    path = root / DATE / "calib_velo_to_cam.txt"
    text = [ln for ln in path.read_text().splitlines() if not ln.startswith("R:")]
    path.write_text("\n".join([*text, "R: 1 0 0 0 1 0 0 0 5"]) + "\n")
    return Setup(_plan_argv(root, tmp), str(path), plan_without_date)


def _different_plan(tmp: Path) -> Setup:
    root, labels = planned(tmp, shard_size=1)
    before = (labels / PLAN_FILE).read_bytes()

    def unchanged(tmp_: Path) -> None:
        assert (labels / PLAN_FILE).read_bytes() == before

    return Setup(_plan_argv(root, tmp, "--shard-size", "2"), str(labels / PLAN_FILE), unchanged)


def _run_argv(tmp: Path, *extra: str, stages: str = "lidar") -> list[str]:
    return [
        "labelgen",
        "run",
        str(tmp / "labels"),
        "--stages",
        stages,
        "--workers",
        "1",
        "--no-progress",
        *extra,
    ]


def _plan_file(tmp: Path, text: str) -> Setup:
    (tmp / "labels").mkdir(parents=True, exist_ok=True)
    path = _write(tmp / "labels" / PLAN_FILE, text)
    return Setup(_run_argv(tmp), str(path), nothing_at("labels/lidar"))


def _bad_frame(tmp: Path, stage: str, breaks: Callable[[Path], Path]) -> Setup:
    root, _ = planned(tmp)
    path = breaks(root)
    return Setup(_run_argv(tmp, stages=stage), str(path), frame_not_ok(stage))


def _nan_plan(tmp: Path) -> Setup:
    _, labels = planned(tmp)
    data = json.loads((labels / PLAN_FILE).read_text())
    data["calibrations"][DATE]["P_rect_02"][0][0] = float("nan")
    return _plan_file(tmp, json.dumps(data))


def _locked(tmp: Path) -> Setup:
    _, labels = planned(tmp)
    record = holder_record("labelgen run --stages sgbm")
    held = hold(labels, record)  # a live run: its OS lock is held (here, by a lock object of its own)

    def untouched(tmp_: Path) -> None:
        nothing_at("labels/lidar")(tmp_)
        assert read_record(labels) == record, "the holder's record was touched"
        held.release()

    return Setup(_run_argv(tmp), str(labels), untouched)


def _scan(values: np.ndarray | bytes) -> Callable[[Path], Path]:
    def breaks(root: Path) -> Path:
        path = velodyne(root)
        path.write_bytes(values if isinstance(values, bytes) else values.astype(np.float32).tobytes())
        return path

    return breaks


def _corrupt_png(root: Path) -> Path:
    path = image(root)
    path.write_bytes(path.read_bytes()[:60])
    return path


def _missing_right(root: Path) -> Path:
    path = image(root, cam=3)
    path.unlink()
    return path


def _wrong_size(root: Path) -> Path:
    import cv2

    path = image(root)
    cv2.imwrite(str(path), np.zeros((32, 80, 3), np.uint8))
    return path


def _far_scan(root: Path) -> Path:
    path = velodyne(root)
    points = np.tile(np.array([[-30.0, 0.0, 0.0, 0.5]], np.float32), (100, 1))  # all behind the camera
    points.tofile(path)
    return path


def _unsafe_checkpoint(tmp: Path) -> Setup:
    planned(tmp)
    path = tmp / "evil.tar"
    path.write_bytes(pickle.dumps({"state_dict": os.system}))  # a callable: refused by weights_only
    argv = _run_argv(tmp, "--psmnet-checkpoint", str(path), stages="psmnet")
    return Setup(argv, str(path), nothing_at("labels/psmnet"))


RUN_CASES = [
    Case("run", "plan-missing", "no plan.json in the folder", 2, "no plan",
         lambda tmp: Setup(_run_argv(tmp), str(tmp / "labels" / PLAN_FILE))),
    Case("run", "plan-list", "plan.json holds `[]`", 2, "not a plan", lambda tmp: _plan_file(tmp, "[]")),
    Case("run", "plan-json", "plan.json is not JSON", 2, "malformed plan", lambda tmp: _plan_file(tmp, "{oops")),
    Case("run", "plan-keys", "plan.json lacks keys", 2, "malformed plan",
         lambda tmp: _plan_file(tmp, json.dumps({"schema_version": 1}))),
    Case("run", "plan-nan", "plan.json edited to hold a NaN focal length", 2, "non-finite",
         lambda tmp: _nan_plan(tmp)),
    Case("run", "workers-0", "--workers 0", 2, "--workers", lambda tmp: Setup(
        ["labelgen", "run", str(planned(tmp)[1]), "--workers", "0"], "--workers", nothing_at("labels/lidar"))),
    Case("run", "workers-negative", "--workers -2", 2, "--workers", lambda tmp: Setup(
        ["labelgen", "run", str(planned(tmp)[1]), "--workers", "-2"], "--workers", nothing_at("labels/lidar"))),
    Case("run", "batch-0", "--batch-size 0", 2, "--batch-size", lambda tmp: Setup(
        ["labelgen", "run", str(planned(tmp)[1]), "--batch-size", "0"], "--batch-size")),
    Case("run", "disparities", "--num-disparities 8", 2, "--num-disparities", lambda tmp: Setup(
        ["labelgen", "run", str(planned(tmp)[1]), "--num-disparities", "8"], "--num-disparities")),
    Case("run", "stage-unknown", "--stages with a stage that does not exist", 2, "unknown stage", after(planned, lambda tmp: Setup(
        _run_argv(tmp, stages="lidar,teleport"), "teleport"))),
    Case("run", "scan-empty", "empty velodyne .bin", 1, "empty velodyne scan",
         lambda tmp: _bad_frame(tmp, "lidar", _scan(b""))),
    Case("run", "scan-truncated", "velodyne .bin cut mid-point", 1, "not a multiple of 16",
         lambda tmp: _bad_frame(tmp, "lidar", _scan(b"\0" * 20))),
    Case("run", "scan-nan", "every point of the scan is NaN", 1, "no finite points",
         lambda tmp: _bad_frame(tmp, "lidar", _scan(np.full((50, 4), np.nan)))),
    Case("run", "scan-out-of-view", "no point projects into the image", 1, "projects into the image",
         lambda tmp: _bad_frame(tmp, "lidar", _far_scan)),
    Case("run", "image-corrupt", "left PNG truncated", 1, "not a readable image",
         lambda tmp: _bad_frame(tmp, "images", _corrupt_png)),
    Case("run", "image-right-missing", "right image missing (sgbm)", 1, "image file not found",
         lambda tmp: _bad_frame(tmp, "sgbm", _missing_right)),
    Case("run", "image-size", "left image of another size than the calibration says", 1, "size",
         lambda tmp: _bad_frame(tmp, "sgbm", _wrong_size)),
    Case("run", "psmnet-no-checkpoint", "psmnet without --psmnet-checkpoint", 2, "needs --psmnet-checkpoint",
         lambda tmp: Setup(_run_argv(tmp, stages="psmnet"), "--psmnet-checkpoint")),
    Case("run", "psmnet-unsafe", "psmnet checkpoint that pickles a callable", 2, "refused",
         _unsafe_checkpoint),
    Case("run", "locked", "another live run holds the folder", 2, "in use by labelgen run --stages sgbm",
         _locked),
]  # fmt: skip


def _damaged(tmp: Path, stage: str = "sgbm", dataset: str = "depth") -> Path:
    _, labels = labelled(tmp)
    return flip_byte(shard_path(labels, stage, "shard-00000"), dataset)


def _truncated(tmp: Path) -> Path:
    _, labels = labelled(tmp)
    path = shard_path(labels, "sgbm", "shard-00000")
    path.write_bytes(path.read_bytes()[:2000])
    return path


INSPECT_CASES = [
    Case("inspect", "shard-damaged", "a byte flipped inside a depth chunk", 0, "dataset depth row 0 is damaged",
         lambda tmp: Setup(["labelgen", "inspect", str(tmp / "labels")], str(_damaged(tmp).name))),
    Case("inspect", "shard-truncated", "shard file cut short", 0, "unreadable",
         lambda tmp: Setup(["labelgen", "inspect", str(tmp / "labels")], str(_truncated(tmp).name))),
    Case("inspect", "plan-missing", "no plan.json", 2, "no plan",
         lambda tmp: Setup(["labelgen", "inspect", str(tmp)], str(tmp / PLAN_FILE))),
]  # fmt: skip


def _fit_argv(tmp: Path, *extra: str, teacher: str = "sgbm") -> list[str]:
    return ["calib", "fit", str(tmp / "labels"), "--teacher", teacher, "--holdout", "0", "--min-count", "1",
            "--out", str(tmp / "lut.json"), "--no-progress", *extra]  # fmt: skip


def _lut(tmp: Path, text: str) -> Setup:
    labelled(tmp)
    path = _write(tmp / "lut.json", text)
    return Setup(["calib", "apply", str(path), str(tmp / "labels"), "--teacher", "sgbm"], str(path),
                 nothing_at("labels/sgbm_corrected"))  # fmt: skip


def _foreign_lut(tmp: Path) -> Setup:
    from click.testing import CliRunner

    from edgedepth import cli

    labelled(tmp)
    result = CliRunner().invoke(cli.main, _fit_argv(tmp))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp / "lut.json").read_text())
    data["source"]["teacher_stage"] = "psmnet"
    path = _write(tmp / "psmnet_lut.json", json.dumps(data))
    return Setup(["calib", "apply", str(path), str(tmp / "labels"), "--teacher", "sgbm"], str(path),
                 nothing_at("labels/sgbm_corrected"))  # fmt: skip


CALIB_CASES = [
    Case("calib", "teacher-lidar", "calib fit --teacher lidar (the LiDAR against itself)", 2,
         "cannot be fitted against itself",
         lambda tmp: Setup(_fit_argv(tmp, teacher="lidar"), "--teacher lidar", nothing_at("lut.json"))),
    Case("calib", "bin-width-tiny", "--bin-width 1e-6 (1.18 TiB of bins)", 2, "--bin-width",
         lambda tmp: Setup(_fit_argv(tmp, "--bin-width", "1e-6"), "--bin-width", nothing_at("lut.json"))),
    Case("calib", "too-many-bins", "--bin-width 0.001 over 0..80 m (80,000 bins)", 2, "at most 10000",
         after(labelled, lambda tmp: Setup(_fit_argv(tmp, "--bin-width", "0.001", "--min-depth", "0"),
                                           "bin width", nothing_at("lut.json")))),
    Case("calib", "holdout-1", "--holdout 1", 2, "--holdout",
         lambda tmp: Setup(_fit_argv(tmp, "--holdout", "1"), "--holdout", nothing_at("lut.json"))),
    Case("calib", "holdout-nan", "--holdout nan (NaN passes every range comparison)", 2, "not a finite number",
         lambda tmp: Setup(_fit_argv(tmp, "--holdout", "nan"), "--holdout", nothing_at("lut.json"))),
    Case("calib", "min-depth-inf", "--min-depth inf", 2, "not a finite number",
         lambda tmp: Setup(_fit_argv(tmp, "--min-depth", "inf"), "--min-depth", nothing_at("lut.json"))),
    Case("calib", "teacher-absent", "teacher stage never run", 2, "run `edgedepth labelgen run --stages psmnet`",
         after(labelled, lambda tmp: Setup(_fit_argv(tmp, teacher="psmnet"), str(tmp / "labels" / "psmnet"),
                                           nothing_at("lut.json")))),
    Case("calib", "teacher-damaged", "a byte flipped in the teacher's depth", 2, "dataset depth row 0 is damaged",
         lambda tmp: Setup(_fit_argv(tmp), str(_damaged(tmp).name), nothing_at("lut.json"))),
    Case("calib", "out-under-file", "--out under a regular file", 4, "Not a directory",
         after(labelled, lambda tmp: Setup(
             [*_fit_argv(tmp), "--out", str(_write(tmp / "f", "x") / "lut.json")], str(tmp / "f")))),
    Case("calib", "lut-json", "lut.json is not JSON", 2, "lut.json", lambda tmp: _lut(tmp, "{not json")),
    Case("calib", "lut-missing", "lut.json does not exist", 2, "lut.json",
         lambda tmp: Setup(["calib", "apply", str(tmp / "lut.json"), str(labelled(tmp)[1]), "--teacher", "sgbm"],
                           str(tmp / "lut.json"))),
    Case("calib", "lut-foreign", "a table fitted on another teacher stage", 2, "fitted on teacher stage 'psmnet'",
         _foreign_lut),
]  # fmt: skip


def _checkpoint_file(tmp: Path, data: bytes) -> Path:
    return Path(_write_bytes(tmp / "ckpt.pt", data))


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _predict_argv(tmp: Path, checkpoint: Path) -> list[str]:
    import cv2
    from skimage import data

    cv2.imwrite(str(tmp / "in.png"), data.astronaut()[..., ::-1])
    return ["student", "predict", str(checkpoint), str(tmp / "in.png"), "--out", str(tmp / "out")]


def _arch_mismatch_checkpoint(tmp: Path) -> Path:
    from edgedepth.student.model.checkpoint import save_checkpoint
    from edgedepth.student.model.config import ModelConfig

    cfg = ModelConfig(variant="L", input_size=(64, 96), arch="paper")
    model = ModelConfig(variant="L", input_size=(64, 96), arch="fast").build()  # weights of the other decoder
    path = tmp / "old.pt"
    save_checkpoint(path, {"model_config": cfg.to_dict(), "model": model.state_dict(), "epoch": 0, "step": 0})
    return path


def _train_on_damaged(tmp: Path) -> Setup:
    _, labels = labelled(tmp, ("images", "sgbm"))
    damaged = flip_byte(shard_path(labels, "images", "shard-00000"), "image", 2)
    argv = ["student", "train", str(labels), "--teacher", "sgbm", "--out", str(tmp / "run"), "--workers", "1",
            "--epochs", "1", "--iters-per-epoch", "3", "--batch-size", "3", "--size", "160x64", "--no-seg",
            "--no-progress"]  # fmt: skip
    return Setup(argv, str(damaged))


def _train_on_no_valid_label(tmp: Path) -> Setup:
    """Every sgbm label (a few metres) lies outside the depth range asked for: nothing to learn from."""
    _, labels = labelled(tmp, ("images", "sgbm"))
    argv = ["student", "train", str(labels), "--teacher", "sgbm", "--out", str(tmp / "run"), "--workers", "0",
            "--epochs", "1", "--iters-per-epoch", "2", "--batch-size", "2", "--size", "160x64", "--no-seg",
            "--min-depth", "500", "--max-depth", "600", "--no-progress"]  # fmt: skip
    return Setup(argv, str(labels), nothing_at("run/last.pt"))


def _train_on_truncated(tmp: Path) -> Setup:
    _, labels = labelled(tmp, ("images", "sgbm"))
    path = shard_path(labels, "sgbm", "shard-00000")
    path.write_bytes(path.read_bytes()[:3000])
    argv = ["student", "train", str(labels), "--teacher", "sgbm", "--out", str(tmp / "run"), "--size", "160x64",
            "--no-progress"]  # fmt: skip
    return Setup(argv, str(path), nothing_at("run"))


STUDENT_CASES = [
    *(Case("student", f"ckpt-garbage-{seed}", f"checkpoint is 4 KiB of random bytes (seed {seed})", 2, "ckpt.pt",
           lambda tmp, seed=seed: Setup(_predict_argv(tmp, _checkpoint_file(tmp, np.random.default_rng(seed).bytes(4096))),
                                        str(tmp / "ckpt.pt"), nothing_at("out")))
      for seed in range(3)),
    Case("student", "ckpt-unsafe", "checkpoint pickles a callable", 2, "ckpt.pt",
         lambda tmp: Setup(_predict_argv(tmp, _checkpoint_file(tmp, pickle.dumps({"model": os.system}))),
                           str(tmp / "ckpt.pt"), nothing_at("out"))),
    Case("student", "ckpt-foreign", "a plain tensor file that is not a student checkpoint", 2, "ckpt.pt",
         lambda tmp: Setup(_predict_argv(tmp, _torch_file(tmp)), str(tmp / "ckpt.pt"), nothing_at("out"))),
    Case("student", "ckpt-arch-mismatch", "checkpoint whose weights are of another decoder than its config names", 2,
         "old.pt",
         lambda tmp: Setup(_predict_argv(tmp, _arch_mismatch_checkpoint(tmp)), str(tmp / "old.pt"),
                           nothing_at("out"))),
    Case("student", "train-batch-0", "student train --batch-size 0", 2, "--batch-size",
         lambda tmp: Setup(["student", "train", str(tmp), "--out", str(tmp / "run"), "--batch-size", "0"],
                           "--batch-size", nothing_at("run"))),
    Case("student", "train-lr-0", "student train --lr 0", 2, "--lr",
         lambda tmp: Setup(["student", "train", str(tmp), "--out", str(tmp / "run"), "--lr", "0"], "--lr",
                           nothing_at("run"))),
    Case("student", "train-lr-nan", "student train --lr nan", 2, "not a finite number",
         lambda tmp: Setup(["student", "train", str(tmp), "--out", str(tmp / "run"), "--lr", "nan"], "--lr",
                           nothing_at("run"))),
    Case("student", "train-damaged-shard", "student train reads a shard with a damaged image chunk", 2,
         "dataset image row 2 is damaged", _train_on_damaged),
    Case("student", "train-truncated-shard", "student train on a depth shard cut short", 2, "cannot open the shard",
         _train_on_truncated),
    Case("student", "train-no-valid-label", "student train whose every label lies outside the depth range", 2,
         "saw no valid depth label", _train_on_no_valid_label),
    Case("student", "train-no-teacher", "student train on a folder without the teacher stage", 2, "psmnet",
         lambda tmp: Setup(["student", "train", str(labelled(tmp, ("images", "lidar"))[1]), "--out", str(tmp / "run"),
                            "--no-progress"], str(tmp / "labels"), nothing_at("run"))),
]  # fmt: skip


def _torch_file(tmp: Path) -> Path:
    path = tmp / "ckpt.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    return path


CASES: list[Case] = PLAN_CASES + RUN_CASES + INSPECT_CASES + CALIB_CASES + STUDENT_CASES
FAMILIES = ("plan", "run", "inspect", "calib", "student")
