"""The student wing's bad inputs of the red-team pass (issue 19): crafted checkpoints and model
settings, non-finite networks, crafted run folders, unbounded sizes and unwritable outputs.

``STUDENT_REDTEAM_CASES`` is a list of ``tests.reliability.cases.Case`` (family ``student``), wired
into the catalogue by ``cases.py``; docs/reliability.md lists them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edgedepth.common.lock import LOCK_FILE, RECORD_FILE, read_record
from tests.common.lock_holders import hold, holder_record
from tests.reliability.cases import DATE, DRIVE, Case, Setup, nothing_at, tree

CKPT_SIZE = (64, 96)  # (height, width) of the crafted checkpoints' input
FIRST_CONV = "encoder.features.0.0.weight"
FIRST_BN_VAR = "encoder.features.0.1.running_var"


# ---- crafted checkpoints ------------------------------------------------------------------------


def _checkpoint(
    tmp: Path,
    state_edit: Callable[[dict[str, torch.Tensor]], None] | None = None,
    config_edit: Callable[[dict[str, Any]], None] | None = None,
    name: str = "ckpt.pt",
) -> Path:
    """A student checkpoint of a fresh L network, with its weights or settings edited."""
    from edgedepth.student.model.checkpoint import save_checkpoint
    from edgedepth.student.model.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(variant="L", input_size=CKPT_SIZE)
    state = cfg.build().state_dict()
    settings = cfg.to_dict()
    if state_edit is not None:
        state_edit(state)
    if config_edit is not None:
        config_edit(settings)
    path = tmp / name
    save_checkpoint(path, {"model_config": settings, "model": state, "epoch": 0, "step": 0})
    return path


def _fill(key: str, value: float) -> Callable[[dict[str, torch.Tensor]], None]:
    def edit(state: dict[str, torch.Tensor]) -> None:
        state[key].view(-1)[0] = value

    return edit


def _overflowing(state: dict[str, torch.Tensor]) -> None:
    """Finite weights whose products overflow: the decoder's batch-norm scales at 1e30."""
    for key, tensor in state.items():
        if key.startswith("decoder") and key.endswith(".weight") and tensor.ndim == 1:
            tensor.fill_(1e30)


def _setting(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(settings: dict[str, Any]) -> None:
        settings[key] = value

    return edit


def _torchscript(tmp: Path) -> Path:
    path = tmp / "ckpt.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    return path


# ---- commands -----------------------------------------------------------------------------------


def _image(tmp: Path) -> Path:
    import cv2
    from skimage import data

    path = tmp / "in.png"
    cv2.imwrite(str(path), data.astronaut()[..., ::-1])
    return path


def _predict(tmp: Path, checkpoint: Path, *extra: str, out: Path | None = None) -> list[str]:
    out = out or tmp / "out"
    return [
        "student",
        "predict",
        str(checkpoint),
        str(_image(tmp)),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def _predict_case(make: Callable[[Path], Path]) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        checkpoint = make(tmp)
        return Setup(_predict(tmp, checkpoint), str(checkpoint), nothing_at("out"))

    return setup


def _eval(tmp: Path, checkpoint: Path, *extra: str) -> list[str]:
    root = tree(tmp)
    split = tmp / "split.txt"
    split.write_text(f"{DATE}/{DRIVE} 1 l\n")
    return ["student", "eval", str(checkpoint), "--data-root", str(root), "--split", str(split), "--gt", "lidar",
            "--no-progress", *extra]  # fmt: skip


def _under_file(tmp: Path) -> Path:
    """A regular file where the output's folder should be."""
    blocker = tmp / "afile"
    blocker.write_text("x")
    return blocker


def _eval_case(make: Callable[[Path], Path]) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        checkpoint = make(tmp)
        argv = _eval(tmp, checkpoint, "--out", str(tmp / "ev" / "eval.json"))
        return Setup(argv, str(checkpoint), nothing_at("ev"))

    return setup


def _export(tmp: Path, checkpoint: Path, out: Path) -> list[str]:
    return ["student", "export", str(checkpoint), "--out", str(out), "--variants", "XS", "--target", "trt8",
            "--size", "96x64", "--no-progress"]  # fmt: skip


def _no_export(tmp: Path) -> None:
    left = sorted(p.name for p in (tmp / "export").glob("*")) if (tmp / "export").exists() else []
    assert not left, f"an export that failed left {left}"


def _bench(tmp: Path, source: Path, out: Path) -> list[str]:
    return ["student", "bench", str(source), "--variants", "XS", "--backends", "torch", "--size", "96x64",
            "--repeats", "1", "--out", str(out)]  # fmt: skip


def _crafted_manifest(tmp: Path) -> Setup:
    folder = tmp / "export"
    folder.mkdir()
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"files": "abc"}))
    return Setup(_bench(tmp, folder, tmp / "bench.json"), str(manifest), nothing_at("bench.json"))


# ---- training runs ------------------------------------------------------------------------------


def _labels(tmp: Path) -> Path:
    from tests.student.labelfolder import make_label_folder

    return make_label_folder(tmp, {DRIVE: 2}, seg=False, lidar=False)


def _train_argv(tmp: Path, labels: Path, *extra: str) -> list[str]:
    return ["student", "train", str(labels), "--out", str(tmp / "run"), "--teacher", "synth", "--no-seg",
            "--size", "64x32", "--epochs", "1", "--iters-per-epoch", "1", "--batch-size", "1", "--workers", "0",
            "--no-progress", *extra]  # fmt: skip


def _trained(tmp: Path) -> list[str]:
    """A finished one-step run in tmp/run; returns the command line that resumes it."""
    from click.testing import CliRunner

    from edgedepth import cli

    argv = _train_argv(tmp, _labels(tmp))
    result = CliRunner().invoke(cli.main, argv)
    assert result.exit_code == 0, result.output
    return [*argv, "--resume"]


def _unchanged(*paths: Path) -> Callable[[Path], None]:
    """``written_ok``: these files are as the setup left them, and no epoch 2 was written."""
    before = {p: p.read_bytes() for p in paths if p.exists()}

    def check(tmp: Path) -> None:
        for path, data in before.items():
            assert path.read_bytes() == data, f"{path} was rewritten"
        assert not (tmp / "run" / "checkpoints" / "epoch-0002.pt").exists()

    return check


def _edit_last(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], Setup]:
    """A finished run whose last.pt is edited, resumed with --epochs 2."""

    def setup(tmp: Path) -> Setup:
        argv = _trained(tmp)
        last = tmp / "run" / "last.pt"
        data = torch.load(last, weights_only=True)
        change(data)
        torch.save(data, last)
        argv[argv.index("--epochs") + 1] = "2"
        return Setup(argv, str(last), _unchanged(last, tmp / "run" / "config.json"))

    return setup


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


def _bad_rng(data: dict[str, Any]) -> None:
    data["rng"]["torch"] = torch.zeros(7, dtype=torch.uint8)


def _nan_model(data: dict[str, Any]) -> None:
    data["model"][FIRST_CONV].view(-1)[3] = float("nan")


def _reshaped(data: dict[str, Any]) -> None:
    data["model"][FIRST_CONV] = torch.zeros(2, 2)


def _edit_config(text: str) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        argv = _trained(tmp)
        config = tmp / "run" / "config.json"
        config.write_text(text)
        argv[argv.index("--epochs") + 1] = "2"
        return Setup(argv, str(config), _unchanged(config, tmp / "run" / "last.pt"))

    return setup


def _no_last(tmp: Path) -> Setup:
    argv = _trained(tmp)
    last = tmp / "run" / "last.pt"
    last.unlink()
    argv[argv.index("--epochs") + 1] = "2"
    return Setup(argv, str(last), _unchanged(tmp / "run" / "checkpoints" / "epoch-0001.pt"))


def _locked(tmp: Path) -> Setup:
    labels = _labels(tmp)
    run = tmp / "run"
    run.mkdir()
    record = holder_record("student train --out run")
    held = hold(run, record)  # a live training: its OS lock is held (here, by a lock object of its own)

    def kept(tmp_: Path) -> None:
        assert read_record(run) == record, "the holder's record was touched"
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, RECORD_FILE], sorted(run.iterdir())
        held.release()

    return Setup(_train_argv(tmp, labels), str(run), kept)


def _option_case(
    name: str, what: str, option: str, argv: Callable[[Path], list[str]], pattern: str = ""
) -> Case:
    return Case("student", name, what, 2, pattern or option,
                lambda tmp: Setup(argv(tmp), option, nothing_at("run")))  # fmt: skip


STUDENT_REDTEAM_CASES = [
    # a checkpoint's weights and settings, checked at the door (predict loads like eval/export/bench)
    Case("student", "ckpt-nan-weight", "checkpoint with a NaN weight", 2, f"tensor {FIRST_CONV} holds 1 NaN",
         _predict_case(lambda tmp: _checkpoint(tmp, _fill(FIRST_CONV, float("nan"))))),
    Case("student", "ckpt-inf-buffer", "checkpoint with an infinite batch-norm running variance", 2,
         f"tensor {FIRST_BN_VAR} holds 1 NaN or infinite",
         _predict_case(lambda tmp: _checkpoint(tmp, _fill(FIRST_BN_VAR, float("inf"))))),
    Case("student", "ckpt-std-zero", "checkpoint whose normalisation std holds 0", 2, "model setting std",
         _predict_case(lambda tmp: _checkpoint(tmp, config_edit=_setting("std", [0.2, 0.0, 0.2])))),
    Case("student", "ckpt-std-nan", "checkpoint whose normalisation std holds NaN", 2, "model setting std",
         _predict_case(lambda tmp: _checkpoint(tmp, config_edit=_setting("std", [0.2, float("nan"), 0.2])))),
    Case("student", "ckpt-mean-inf", "checkpoint whose normalisation mean holds inf", 2, "model setting mean",
         _predict_case(lambda tmp: _checkpoint(tmp, config_edit=_setting("mean", [float("inf"), 0.4, 0.4])))),
    Case("student", "ckpt-classes-huge", "checkpoint whose config asks for 1e9 classes (96 GB)", 2,
         "model setting num_classes must be a whole number in 1..255",
         _predict_case(lambda tmp: _checkpoint(tmp, config_edit=_setting("num_classes", 10**9)))),
    Case("student", "ckpt-size-huge", "checkpoint whose input width is 10^9 pixels", 2,
         "model setting input_size [64, 1000000000]",
         _predict_case(lambda tmp: _checkpoint(tmp, config_edit=_setting("input_size", [64, 10**9])))),
    Case("student", "ckpt-variant-int", "checkpoint whose variant is stored as the integer 4", 2,
         "unknown model setting variant 4",
         _predict_case(lambda tmp: _checkpoint(tmp, config_edit=_setting("variant", 4)))),
    Case("student", "ckpt-depth-range", "checkpoint whose depth range is (80, 1) m", 2, "model setting depth_range",
         _predict_case(lambda tmp: _checkpoint(tmp, config_edit=_setting("depth_range", [80.0, 1.0])))),
    Case("student", "ckpt-seg-string", "checkpoint whose seg setting is the string 'yes'", 2,
         "model setting seg must be true or false",
         _predict_case(lambda tmp: _checkpoint(tmp, config_edit=_setting("seg", "yes")))),
    Case("student", "ckpt-torchscript", "a TorchScript archive passed as a checkpoint", 2,
         "a TorchScript archive is not a checkpoint", _predict_case(_torchscript)),
    Case("student", "predict-nonfinite", "finite weights whose depth overflows to inf/NaN: no PNG written", 2,
         "predicts NaN or infinite depth", _predict_case(lambda tmp: _checkpoint(tmp, _overflowing))),
    Case("student", "predict-out-under-file", "predict --out under a regular file (found before loading)", 4,
         "Not a directory",
         lambda tmp: Setup(_predict(tmp, _checkpoint(tmp, _fill(FIRST_CONV, float("nan"))),
                                    out=_under_file(tmp) / "out"), str(tmp / "afile"))),
    _option_case("predict-batch-huge", "predict --batch-size 1000000000", "--batch-size",
                 lambda tmp: _predict(tmp, tmp / "none.pt", "--batch-size", "1000000000")),
    # eval: never a NaN figure with exit 0; the output checked before the work
    Case("student", "eval-nan-weight", "eval of a checkpoint with a NaN weight", 2, "holds 1 NaN",
         _eval_case(lambda tmp: _checkpoint(tmp, _fill(FIRST_CONV, float("nan"))))),
    Case("student", "eval-nonfinite", "eval of finite weights whose depth overflows: no NaN metrics", 2,
         "predicts NaN or infinite depth", _eval_case(lambda tmp: _checkpoint(tmp, _overflowing))),
    Case("student", "eval-out-under-file", "eval --out under a regular file (found before the work)", 4,
         "Not a directory",
         lambda tmp: Setup(_eval(tmp, _checkpoint(tmp, _fill(FIRST_CONV, float("nan"))), "--out",
                                 str(_under_file(tmp) / "eval.json")), str(tmp / "afile"))),
    _option_case("eval-batch-huge", "eval --batch-size 1000000000", "--batch-size",
                 lambda tmp: ["student", "eval", str(tmp / "none.pt"), "--data-root", str(tmp),
                              "--batch-size", "1000000000"]),
    # export and bench
    Case("student", "export-nan-weight", "export of a checkpoint with a NaN weight", 2, "holds 1 NaN",
         lambda tmp: Setup(_export(tmp, _checkpoint(tmp, _fill(FIRST_CONV, float("nan"))), tmp / "export"),
                           str(tmp / "ckpt.pt"), _no_export)),
    Case("student", "export-nonfinite", "export whose network outputs inf/NaN: refused, no file left", 2,
         "outputs NaN or infinite depth",
         lambda tmp: Setup(_export(tmp, _checkpoint(tmp, _overflowing), tmp / "export"), str(tmp / "ckpt.pt"),
                           _no_export)),
    Case("student", "export-out-under-file", "export --out under a regular file", 4, "Not a directory",
         lambda tmp: Setup(_export(tmp, _checkpoint(tmp), _under_file(tmp) / "export"), str(tmp / "afile"))),
    Case("student", "export-size-huge", "export --size 1000000x320 (a 1-megapixel-wide input)", 2,
         "input width 1000000 is more than 8192 pixels",
         lambda tmp: Setup([*_export(tmp, _checkpoint(tmp), tmp / "export")[:-3], "--size", "1000000x320"],
                           "--size", _no_export)),
    _option_case("summary-classes-huge", "student summary --num-classes 1000000000 (96 GB of heads)",
                 "--num-classes", lambda tmp: ["student", "summary", "--num-classes", "1000000000"]),
    _option_case("bench-repeats-huge", "student bench --repeats 1000000000", "--repeats",
                 lambda tmp: _bench(tmp, tmp / "none.pt", tmp / "bench.json")[:-2] + ["--repeats", "1000000000"]),
    Case("student", "bench-nan-weight", "bench of a checkpoint with a NaN weight", 2, "holds 1 NaN",
         lambda tmp: Setup(_bench(tmp, _checkpoint(tmp, _fill(FIRST_CONV, float("nan"))), tmp / "bench.json"),
                           str(tmp / "ckpt.pt"), nothing_at("bench.json"))),
    Case("student", "bench-out-under-file", "bench --out under a regular file (found before the work)", 4,
         "Not a directory",
         lambda tmp: Setup(_bench(tmp, _checkpoint(tmp, _fill(FIRST_CONV, float("nan"))),
                                  _under_file(tmp) / "bench.json"), str(tmp / "afile"))),
    Case("student", "bench-manifest", "an export folder whose manifest.json `files` is a string", 2,
         "field 'files' is missing or not a list", _crafted_manifest),
    # training: the run folder's lock and state, sizes at the door
    Case("student", "train-locked", "another live `student train` holds the run folder", 2,
         "in use by student train --out run", _locked),
    _option_case("train-batch-huge", "student train --batch-size 1000000000", "--batch-size",
                 lambda tmp: _train_argv(tmp, tmp / "labels", "--batch-size", "1000000000")),
    _option_case("train-steps-huge", "student train --epochs 10^6 --iters-per-epoch 10^6", "--iters-per-epoch",
                 lambda tmp: _train_argv(tmp, tmp / "labels", "--epochs", "1000000", "--iters-per-epoch",
                                         "1000000"), "at most 10,000,000"),
    _option_case("train-val-max-negative", "student train --val-max-frames -1", "--val-max-frames",
                 lambda tmp: _train_argv(tmp, tmp / "labels", "--val-max-frames", "-1")),
    Case("student", "resume-no-optimizer", "--resume of a last.pt without its optimiser state", 2,
         "no training state 'optimizer'", _edit_last(_drop("optimizer"))),
    Case("student", "resume-bad-rng", "--resume of a last.pt with a malformed RNG state", 2,
         "rng: not a random-number-generator state", _edit_last(_bad_rng)),
    Case("student", "resume-nan-weight", "--resume of a last.pt with a NaN weight", 2, "holds 1 NaN",
         _edit_last(_nan_model)),
    Case("student", "resume-reshaped", "--resume of a last.pt whose weight has another shape", 2,
         f"model tensor {FIRST_CONV} has shape (2, 2)", _edit_last(_reshaped)),
    Case("student", "resume-no-last", "--resume of a run whose last.pt was deleted", 2,
         "missing, so the run cannot be resumed", _no_last),
    Case("student", "resume-config-types", "--resume with a config.json whose `train` is a string", 2,
         "field 'train' is a str", _edit_config(json.dumps({"train": "abc", "model": {}}))),
    Case("student", "resume-config-list", "--resume with a config.json holding a list", 2,
         "not a run's settings", _edit_config("[1, 2]")),
]  # fmt: skip


__all__ = ["STUDENT_REDTEAM_CASES"]
