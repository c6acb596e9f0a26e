"""Bad-input cases of the bias table (issue 19, red-team faults 5, 9 and 10): crafted ``lut.json`` files
whose SHA-256 is recomputed after the edit, so only the checks at load stand between them and a
corrected shard set, a training run or a plot. ``CALIB_REDTEAM_CASES`` joins ``cases.CASES``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgedepth.calib.lut import MAX_BINS, fit_lut
from tests.reliability.cases import Case, Setup, _fit_argv, labelled, nothing_at

Edit = Callable[[dict, int], None]


def _rehashed(data: dict, path: Path) -> Path:
    """Write ``data`` with its sha256 recomputed as docs/lut.md defines it (what a hostile edit does)."""
    body = json.dumps({"lut_version": data["lut_version"], "bins": data["bins"]}, sort_keys=True)
    data["sha256"] = hashlib.sha256(body.encode()).hexdigest()
    path.write_text(json.dumps(data))
    return path


def _populated_bin(data: dict) -> int:
    return data["bins"]["filled"].index(False)


def _edited(source: Path, target: Path, edit: Edit) -> Path:
    data = json.loads(source.read_text())
    edit(data, _populated_bin(data))
    return _rehashed(data, target)


def _synthetic_table(tmp: Path) -> Path:
    """A table written by the fitter (``fit_lut``: the same code as ``calib fit``) from arrays."""
    rng = np.random.default_rng(0)
    d = rng.uniform(2, 60, 200_000)
    teacher = (d * 1.03 + rng.normal(0, 0.2, d.size)).astype(np.float32)
    lidar = np.where(rng.random(d.size) < 0.3, d, 0).astype(np.float32)
    return fit_lut([(teacher, lidar)], min_count=50, n_bootstrap=50).save(tmp / "lut.json")


def _fitted_table(tmp: Path) -> Path:
    """``calib fit`` on a labelled folder (lidar, sgbm): the table a user has."""
    from click.testing import CliRunner

    from edgedepth import cli

    result = CliRunner().invoke(cli.main, _fit_argv(tmp))
    assert result.exit_code == 0, result.output
    return tmp / "lut.json"


def _plot(edit: Edit) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        path = _edited(_synthetic_table(tmp), tmp / "bad_lut.json", edit)
        return Setup(
            ["calib", "plot", str(path), "--out", str(tmp / "lut.png")], str(path), nothing_at("lut.png")
        )

    return setup


def _apply(edit: Edit) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        labelled(tmp)
        path = _edited(_fitted_table(tmp), tmp / "bad_lut.json", edit)
        argv = ["calib", "apply", str(path), str(tmp / "labels"), "--teacher", "sgbm"]
        return Setup(argv, str(path), nothing_at("labels/sgbm_corrected"))

    return setup


def _train(edit: Edit) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        labelled(tmp, ("images", "lidar", "sgbm"))
        path = _edited(_fitted_table(tmp), tmp / "bad_lut.json", edit)
        argv = ["student", "train", str(tmp / "labels"), "--teacher", "sgbm", "--lut", str(path), "--out",
                str(tmp / "run"), "--epochs", "1", "--iters-per-epoch", "2", "--batch-size", "2", "--size", "160x64",
                "--no-seg", "--workers", "0", "--no-progress"]  # fmt: skip
        return Setup(argv, str(path), nothing_at("run"))

    return setup


def _set(key: str, value: object) -> Edit:
    def edit(data: dict, b: int) -> None:
        data["bins"][key][b] = value

    return edit


def _descending(data: dict, b: int) -> None:
    """Edges and centres reversed together, so the table is self-consistent but for its order."""
    for key in ("edges", "centres"):
        data["bins"][key].reverse()


def _huge_count(data: dict, b: int) -> None:
    data["bins"]["count"][b] = 10**30


def _text_setting(data: dict, b: int) -> None:
    data["settings"]["min_count"] = "abc"


def _two_million_bins(data: dict, b: int) -> None:
    n = 2_000_000
    data["bins"].update(edges=list(range(n + 1)), centres=[k + 0.5 for k in range(n)],
                        **{k: [0] * n for k in ("value", "correction", "count", "std", "ci_low", "ci_high")},
                        filled=[False] * n)  # fmt: skip
    data["settings"].update(bin_width=1.0, min_depth=0.0, max_depth=float(n))


CALIB_REDTEAM_CASES = [
    Case("calib", "lut-correction-nan", "calib apply: a table whose correction holds NaN (sha256 recomputed)", 2,
         "bins.correction[", _apply(_set("correction", None))),
    Case("calib", "lut-correction-minus-500", "calib apply: a -500 m correction (sha256 recomputed)", 2,
         "lies in [-80, 1000] m", _apply(_set("correction", -500.0))),
    Case("calib", "lut-correction-list", "calib apply: a list where a correction belongs", 2,
         "not a finite number", _apply(_set("correction", [1.0, 2.0]))),
    Case("calib", "lut-correction-1e30", "calib plot: a 1e30 m correction (sha256 recomputed)", 2,
         "lies in [-80, 1000] m", _plot(_set("correction", 1e30))),
    Case("calib", "lut-edges-descending", "calib plot: bin edges in descending order", 2, "bin edges must ascend",
         _plot(_descending)),
    Case("calib", "lut-count-huge", "calib plot: a bin count of 1e30 pixels", 2, "whole number in [0, 2^53]",
         _plot(_huge_count)),
    Case("calib", "lut-setting-text", "calib plot: text where settings.min_count belongs", 2,
         "settings.min_count must be a whole number", _plot(_text_setting)),
    Case("calib", "lut-bins-2m", "calib plot: a 2 M-bin table (it hung for > 150 s)", 2, f"at most {MAX_BINS} bins",
         _plot(_two_million_bins)),
    Case("student", "train-lut-nan", "student train --lut: a table whose correction holds NaN", 2,
         "bins.correction[", _train(_set("correction", None))),
]  # fmt: skip
