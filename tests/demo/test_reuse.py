"""The demo's reuse of finished steps (edgedepth.demo.reuse), its --quick settings and the speed
chart's machine line and busy-machine warning; the real rerun: tests/demo/test_demo.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from click.testing import CliRunner

from edgedepth.demo.result import MOTORCYCLE, Figure, Step, contention_warning, machine_line, quick_settings
from edgedepth.demo.reuse import STAMPS, StepStamps, step_from_stamp, tree_stat


def finish(
    stamps: StepStamps, key: str, settings: dict, after: tuple[str, ...] = (), out: Path | None = None
):
    """Run one step the way the demo does: reuse it when possible, else 'make' it and stamp it."""
    stamps.fingerprint(key, settings, after)
    if out is not None and stamps.reusable(key, out) is not None:
        return "reused"
    stamps.save(Step(key, key.title(), f"edgedepth {key}", seconds=2.5, text="made"), {"n": 1})
    return "made"


def chain(out: Path, train: dict, fresh: bool = False) -> list[str]:
    stamps = StepStamps(out, fresh)
    return [
        finish(stamps, "labels", {"stages": ["sgbm"]}, (), out),
        finish(stamps, "train", train, ("labels",), out),
        finish(stamps, "export", {"size": [256, 384]}, ("train",), out),
    ]


def test_a_rerun_with_nothing_changed_reuses_every_step(tmp_path):
    assert chain(tmp_path, {"epochs": 4}) == ["made", "made", "made"]
    assert chain(tmp_path, {"epochs": 4}) == ["reused", "reused", "reused"]
    stamp = json.loads((tmp_path / STAMPS / "train.json").read_text())
    assert stamp["settings"] == {"epochs": 4} and stamp["state"] == {"n": 1}
    step = step_from_stamp(stamp)
    assert (step.status, step.seconds, step.text, step.command) == ("reused", 0.0, "made", "edgedepth train")


def test_a_changed_setting_redoes_its_step_and_every_later_one_never_an_earlier_one(tmp_path):
    chain(tmp_path, {"epochs": 4})
    assert chain(tmp_path, {"epochs": 2}) == ["reused", "made", "made"]  # --quick after a full run
    assert chain(tmp_path, {"epochs": 4}) == ["reused", "made", "made"]  # and back: the stamp holds the last
    assert chain(tmp_path, {"epochs": 4}) == ["reused", "reused", "reused"]


def test_a_step_redone_with_the_same_settings_still_invalidates_the_later_ones(tmp_path):
    chain(tmp_path, {"epochs": 4})
    (tmp_path / STAMPS / "train.json").unlink()  # e.g. its checkpoint was deleted, or it was interrupted
    assert chain(tmp_path, {"epochs": 4}) == ["reused", "made", "made"]


def test_fresh_and_missing_outputs_and_broken_stamps_redo_the_step(tmp_path):
    chain(tmp_path, {"epochs": 4})
    assert chain(tmp_path, {"epochs": 4}, fresh=True) == ["made", "made", "made"]
    (tmp_path / STAMPS / "labels.json").write_text("{not json")
    assert chain(tmp_path, {"epochs": 4}) == ["made", "made", "made"]
    stamps = StepStamps(tmp_path)
    stamps.fingerprint("labels", {"stages": ["sgbm"]}, ())
    assert stamps.reusable("labels", tmp_path, [tmp_path / "gone.json"]) is None
    assert not (tmp_path / STAMPS / "labels.json").exists()  # removed before the step is redone
    stamps.fingerprint("labels", {"stages": ["sgbm"]}, ())
    step = Step("labels", "labels", "", figures=[Figure("missing.png", "a figure", "")])
    stamps.save(step)
    assert stamps.reusable("labels", tmp_path) is None  # a figure of the report is gone


def test_tree_stat_sees_a_changed_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    before = tree_stat(tmp_path)
    assert tree_stat(tmp_path) == before
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.html").write_text("x")  # the demo's output inside the tree is left out
    assert tree_stat(tmp_path, skip=tmp_path / "out") == before != tree_stat(tmp_path)
    (tmp_path / "a" / "x.png").write_bytes(b"22")
    assert tree_stat(tmp_path, skip=tmp_path / "out") != before


def test_quick_settings_are_smaller_and_say_so():
    quick = quick_settings(MOTORCYCLE)
    assert quick.quick and not MOTORCYCLE.quick
    assert quick.train_size == (128, 192) and quick.export_size == (128, 192)
    assert quick.epochs * quick.iters_per_epoch * 4 <= MOTORCYCLE.epochs * MOTORCYCLE.iters_per_epoch
    assert quick.variants == ("L",) and quick.bench_repeats < MOTORCYCLE.bench_repeats
    assert (quick.bin_width, quick.min_count, quick.scene) == (MOTORCYCLE.bin_width, 20, MOTORCYCLE.scene)


def row(p10: float, p90: float, variant: str = "L") -> SimpleNamespace:
    return SimpleNamespace(p10_ms=p10, p90_ms=p90, variant=variant, backend="onnxruntime", precision="fp32")


def test_the_speed_chart_names_the_machine_and_warns_on_a_busy_one():
    line = machine_line((256, 384), 2)
    assert line.endswith(", 2 thread(s), input 384x256 px") and len(line) > len(
        ", 2 thread(s), input 384x256 px"
    )
    assert contention_warning([row(10, 12), row(5, 9)]) == ""
    warning = contention_warning(
        [row(10, 12), row(799, 7228, "XS"), SimpleNamespace(p10_ms=None, p90_ms=None)]
    )
    assert (
        warning.startswith("warning: the machine looks busy")
        and "799-7228 ms (XS onnxruntime fp32)" in warning
    )


def test_the_cli_passes_quick_and_fresh(monkeypatch, tmp_path):
    from edgedepth.cli import main

    seen = {}

    def fake_run_demo(out_dir, **kwargs):
        seen.update(kwargs, out_dir=out_dir)
        return SimpleNamespace(steps=[Step("train", "training", "", status="reused")], seconds=0.0)

    monkeypatch.setattr("edgedepth.demo.pipeline.run_demo", fake_run_demo)
    done = CliRunner().invoke(main, ["demo", "--quick", "--fresh", "--out", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert seen["quick"] is True and seen["fresh"] is True and seen["out_dir"] == tmp_path
    assert "reused" in done.output
    done = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert seen["quick"] is False and seen["fresh"] is False
