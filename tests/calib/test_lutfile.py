"""``lut.json`` checked at the door: every table the fitter writes loads; every crafted one (with its
SHA-256 recomputed, so the hash is no defence) is one ValueError naming the file and the field."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgedepth.calib.lut import (
    MAX_BINS,
    Evaluation,
    FitSettings,
    Lut,
    apply_lut,
    fit_lut,
    load_lut,
    pair_mask,
)
from edgedepth.calib.lutfile import MAX_LUT_BYTES


def frames(seed: int, count: int = 3, size: int = 60_000, far: float = 0.0):
    """Teacher 3 % too far, sparse LiDAR, a handful of pixels at 60-70 m (filled bins there)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        d = np.concatenate([rng.uniform(3, 50, size), rng.uniform(60, 70, 5)])
        teacher = (d * 1.03 + rng.normal(0, 0.2, d.size)).astype(np.float32)
        lidar = np.where(rng.random(d.size) < 0.3, d + far, 0).astype(np.float32)
        yield teacher, lidar


@pytest.fixture(scope="module")
def fitted() -> Lut:
    """A fitted table with filled, empty and one-pixel bins, a source and held-out figures."""
    lut = fit_lut(frames(0), min_count=50, n_bootstrap=50)
    evaluation = Evaluation(lut)
    for teacher, lidar in frames(1, count=1):
        evaluation.add(teacher, lidar)
    source = {"teacher_stage": "sgbm", "teacher": ["opencv-sgbm"], "checkpoint_sha256": [""], "holdout": 0.1,
              "frame_list": False, "shards": ["shard-00000"], "drives": ["d"], "frames": 3, "pixels": 1}  # fmt: skip
    return replace(
        lut, source=source, heldout={"drives": ["h"], "shards": ["shard-00001"], **evaluation.to_dict()}
    )


def test_the_fixture_has_every_kind_of_bin(fitted):
    assert (fitted.count == 0).any() and (fitted.count == 1).any()  # value null; std null
    assert (fitted.filled & (fitted.count > 1)).any() and (~fitted.filled).sum() > 30


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"stat": "median", "reservoir_size": 64},
        {"min_count": 1, "min_depth": 0.0, "max_depth": 200.0, "bin_width": 0.5},
        {"bin_width": (80 - 1) / MAX_BINS, "min_count": 1, "reservoir_size": 8},  # the largest table
    ],
)
def test_every_table_the_fitter_writes_loads_unchanged(options, fitted, tmp_path):
    lut = fit_lut(frames(2, count=2), **{"min_count": 50, "n_bootstrap": 20, **options})
    for table in (lut, fitted):
        path = table.save(tmp_path / "lut.json")
        loaded = load_lut(path)
        assert loaded.to_dict() == table.to_dict()
        assert loaded.save(tmp_path / "again.json").read_text() == path.read_text()
    if options.get("bin_width", 1) < 0.01:
        assert len(lut.count) == MAX_BINS


def test_a_table_fitted_on_a_label_folder_with_held_out_drives_loads_unchanged(tmp_path):
    from edgedepth.calib.fit import fit_from_labels, format_lut
    from edgedepth.labelgen.plan import plan_shards, write_plan
    from edgedepth.labelgen.run import run_stages
    from tests.kitti_tree import make_kitti_tree

    drives = {"2011_09_26_drive_0001_sync": 2, "2011_09_26_drive_0002_sync": 2}
    tree, labels = make_kitti_tree(tmp_path / "kitti", drives, {"2011_09_26": (64, 160)}), tmp_path / "labels"
    write_plan(plan_shards(tree, shard_size=2), labels)
    run_stages(labels, ["lidar", "sgbm"], workers=1, progress=False)
    lut = fit_from_labels(labels, "sgbm", holdout=0.5, min_count=5, n_bootstrap=20, progress=False)
    assert lut.heldout["pixels"] > 0 and lut.source["frames"] == 2
    loaded = load_lut(lut.save(tmp_path / "lut.json"))
    assert loaded.to_dict() == lut.to_dict() and format_lut(loaded) == format_lut(lut)


def test_the_most_negative_errors_a_fit_can_give_load(tmp_path):
    """LiDAR depths of 1e-30 m under teacher depths just below each bin's top edge: the bound
    ``value >= -(top edge)`` holds exactly, in float32 and float64, for the mean and the median."""
    teacher = np.repeat(np.nextafter(np.arange(2, 12, dtype=np.float32), 0), 50)
    lidar = np.full_like(teacher, 1e-30)
    for stat in ("mean", "median"):
        lut = fit_lut([(teacher, lidar)], min_depth=1, max_depth=11, stat=stat, min_count=10, n_bootstrap=20)
        np.testing.assert_allclose(lut.value, -lut.edges[1:], rtol=1e-6)
        assert load_lut(lut.save(tmp_path / "lut.json")).to_dict() == lut.to_dict()


def craft(lut: Lut, tmp_path: Path, edit, name: str = "lut.json") -> Path:
    """``lut.json`` edited by ``edit(data)``, its sha256 recomputed as docs/lut.md defines it."""
    data = json.loads(json.dumps(lut.to_dict()))
    edit(data)
    if isinstance(data, dict) and isinstance(data.get("bins"), dict):
        body = json.dumps({"lut_version": 1, "bins": data["bins"]}, sort_keys=True)
        data["sha256"] = hashlib.sha256(body.encode()).hexdigest()
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def setter(*keys, value):
    def edit(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value(target[keys[-1]]) if callable(value) else value

    return edit


def populated(lut: Lut) -> int:
    return int(np.flatnonzero(~lut.filled)[5])


BAD = [  # (id, edit(data, b) with b a populated bin, the field the line must name, what it must say)
    ("correction-null", lambda d, b: setter("bins", "correction", b, value=None)(d), "bins.correction[{b}]", "is null"),
    ("correction-1e30", lambda d, b: setter("bins", "correction", b, value=1e30)(d), "bins.correction[{b}]", "lies in"),
    ("correction-minus-500", lambda d, b: setter("bins", "correction", b, value=-500.0)(d), "bins.correction[{b}]",
     "lies in [-80"),
    ("value-and-correction-minus-500", lambda d, b: [setter("bins", k, b, value=-500.0)(d) for k in ("value", "correction")],
     "bins.value[{b}]", "lies in [-80"),
    ("value-below-its-bin", lambda d, b: [setter("bins", k, b, value=-d["bins"]["edges"][b + 1] - 0.5)(d)
                                         for k in ("value", "correction")], "bins.value[{b}]", "no LiDAR depth"),
    ("correction-off-value", lambda d, b: setter("bins", "correction", b, value=lambda v: v + 0.5)(d),
     "bins.correction[{b}]", "not the bin's value"),
    ("value-null-with-pixels", lambda d, b: setter("bins", "value", b, value=None)(d), "bins.value[{b}]",
     "a number is needed"),
    ("edges-descending", lambda d, b: [d["bins"][k].reverse() for k in ("edges", "centres")], "bins.edges[1]",
     "ascend"),
    ("edges-shifted", lambda d, b: d["bins"].update({k: [e + 0.5 for e in d["bins"][k]] for k in ("edges", "centres")}),
     "bins.edges[0]", "the settings give"),
    ("edge-text", lambda d, b: setter("bins", "edges", 3, value="abc")(d), "bins.edges[3]", "not a finite number"),
    ("edge-null", lambda d, b: setter("bins", "edges", 3, value=None)(d), "bins.edges[3]", "is null"),
    ("count-huge", lambda d, b: setter("bins", "count", b, value=10**30)(d), "bins.count[{b}]", "whole number"),
    ("count-negative", lambda d, b: setter("bins", "count", b, value=-1)(d), "bins.count[{b}]", "whole number"),
    ("count-fraction", lambda d, b: setter("bins", "count", b, value=1.5)(d), "bins.count[{b}]", "whole number"),
    ("count-list", lambda d, b: setter("bins", "count", b, value=[1, 2])(d), "bins.count[{b}]", "whole number"),
    ("count-total", lambda d, b: d["bins"].update(count=[2**52] * len(d["bins"]["count"])), "bins.count", "2^53"),
    ("count-vs-filled", lambda d, b: setter("bins", "count", b, value=1)(d), "bins.filled[{b}]", "count < min_count"),
    ("filled-int", lambda d, b: setter("bins", "filled", b, value=0)(d), "bins.filled[{b}]", "true or false"),
    ("std-negative", lambda d, b: setter("bins", "std", b, value=-1.0)(d), "bins.std[{b}]", ">= 0"),
    ("std-null", lambda d, b: setter("bins", "std", b, value=None)(d), "bins.std[{b}]", "a number is needed"),
    ("ci-swapped", lambda d, b: [setter("bins", "ci_low", b, value=9.0)(d), setter("bins", "ci_high", b, value=1.0)(d)],
     "bins.ci_high[{b}]", "below ci_low"),
    ("ci-null", lambda d, b: setter("bins", "ci_low", b, value=None)(d), "bins.ci_low[{b}]", "a number is needed"),
    ("centre-moved", lambda d, b: setter("bins", "centres", b, value=lambda v: v + 0.1)(d), "bins.centres[{b}]",
     "middle"),
    ("value-short", lambda d, b: d["bins"]["value"].pop(), "bins.value", "entries"),
    ("bins-2m", lambda d, b: d["bins"].update(edges=list(range(2_000_001))), "bins.edges", f"1 to {MAX_BINS} bins"),
    ("bins-missing-key", lambda d, b: d["bins"].pop("std"), "bins.std", "is missing"),
    ("bins-extra-key", lambda d, b: d["bins"].update(extra=[]), "bins.extra", "not a field"),
    ("bins-list", lambda d, b: d.update(bins=[]), "bins", "JSON object"),
    ("bin-width-text", lambda d, b: setter("settings", "bin_width", value="abc")(d), "settings.bin_width",
     "finite number"),
    ("bin-width-negative", lambda d, b: setter("settings", "bin_width", value=-1.0)(d), "settings:", "bin width"),
    ("min-max-swapped", lambda d, b: setter("settings", "max_depth", value=0.5)(d), "settings:", "max depth"),
    ("stat-unknown", lambda d, b: setter("settings", "stat", value="mode")(d), "settings:", "stat must be one of"),
    ("min-count-negative", lambda d, b: setter("settings", "min_count", value=-1)(d), "settings:", "min count"),
    ("min-count-float", lambda d, b: setter("settings", "min_count", value=1e30)(d), "settings.min_count",
     "whole number"),
    ("seed-null", lambda d, b: setter("settings", "seed", value=None)(d), "settings.seed", "whole number"),
    ("reservoir-huge", lambda d, b: setter("settings", "reservoir_size", value=10**12)(d), "settings:",
     "reservoir size"),
    ("settings-unknown", lambda d, b: setter("settings", "extra", value=1)(d), "settings.extra", "not a field"),
    ("stage-number", lambda d, b: setter("source", "teacher_stage", value=5)(d), "source.teacher_stage", "text"),
    ("checkpoints-nested", lambda d, b: setter("source", "checkpoint_sha256", value=[[1]])(d),
     "source.checkpoint_sha256", "list of text"),
    ("holdout-2", lambda d, b: setter("source", "holdout", value=2)(d), "source.holdout", "[0, 1)"),
    ("rmse-text", lambda d, b: setter("heldout", "rmse_before", value="x")(d), "heldout.rmse_before", ">= 0"),
    ("residual-count-huge", lambda d, b: setter("heldout", "residual_count", 0, value=10**30)(d),
     "heldout.residual_count[0]", "whole number"),
    ("residual-short", lambda d, b: d["heldout"]["residual_mean"].pop(), "heldout.residual_mean", "list of"),
    ("heldout-pixels", lambda d, b: setter("heldout", "pixels", value=5)(d), "heldout.pixels", "adds up to"),
    ("version-true", lambda d, b: setter("lut_version", value=True)(d), "lut_version", "version"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "field", "says"), [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_a_crafted_table_is_one_line_naming_the_file_and_the_field(edit, field, says, fitted, tmp_path):
    b = populated(fitted)
    path = craft(fitted, tmp_path, lambda data: edit(data, b))
    with pytest.raises(ValueError) as err:
        load_lut(path)
    line = str(err.value)
    assert type(err.value) is ValueError and "\n" not in line
    assert line.startswith(f"{path}: {field.format(b=b)}") and says in line, line


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"bins": NaN}', "lut_version"),
        ("[" * 100_000 + "]" * 100_000, "malformed"),  # RecursionError in the parser
        ('{"lut_version": ' + "9" * 5000 + "}", "malformed"),  # beyond int's 4300 digits
        ("[]", "not a lut table"),
    ],
)
def test_malformed_json_is_one_line(text, says, tmp_path):
    path = tmp_path / "lut.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=says) as err:
        load_lut(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_nan_literals_and_non_utf8_are_refused(fitted, tmp_path):
    b = populated(fitted)
    path = craft(fitted, tmp_path, setter("bins", "correction", b, value=float("nan")))
    with pytest.raises(ValueError, match=rf"bins.correction\[{b}\] is nan, not a finite number"):
        load_lut(path)
    path.write_bytes(b'{"lut_version": 1, "bins": "\xff"}')
    with pytest.raises(ValueError, match="malformed lut file .UnicodeDecodeError"):
        load_lut(path)


def test_a_file_too_large_for_any_table_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "lut.json"
    with path.open("wb") as f:
        f.truncate(MAX_LUT_BYTES + 1)  # sparse: costs no disk; parsing it would fail slowly
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"at most {MAX_BINS} bins") as err:
        load_lut(path)
    assert str(err.value).startswith(str(path)) and time.perf_counter() - start < 5  # at once; room for load


def test_a_2m_bin_table_is_refused_at_load_so_plot_never_starts(fitted, tmp_path):
    """The red-team table: 2 M bins, every list of that length, sha256 recomputed (fault 10)."""
    n = 2_000_000

    def edit(data):
        data["bins"].update(edges=list(range(n + 1)), centres=[k + 0.5 for k in range(n)],
                            **{k: [0] * n for k in ("value", "correction", "count", "std", "ci_low", "ci_high")},
                            filled=[False] * n)  # fmt: skip

    path = craft(fitted, tmp_path, edit)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"at most {MAX_BINS} bins|1 to {MAX_BINS} bins"):
        load_lut(path)
    assert time.perf_counter() - start < 30  # parse and refuse; the plot took > 150 s


def test_the_fitter_refuses_a_table_it_could_not_read_back(tmp_path):
    with pytest.raises(ValueError, match=r"implausible .*bins.value\[\d+\] .* lies in \[-80, 1000\] m"):
        fit_lut(frames(4, count=1, far=5000.0), min_count=20, n_bootstrap=20)  # LiDAR 5 km too far
    lut = fit_lut(frames(4, count=1), min_count=20, n_bootstrap=20)
    bad = replace(lut, correction=np.where(lut.filled, lut.correction, np.nan))
    with pytest.raises(ValueError, match=r"lut.json: not written: bins.correction\[\d+\] .* is null"):
        bad.save(tmp_path / "lut.json")
    assert not list(tmp_path.iterdir())


def test_a_loaded_table_corrects_as_the_fitted_one(fitted, tmp_path):
    depth = np.linspace(0, 90, 2001, dtype=np.float32)
    loaded = load_lut(fitted.save(tmp_path / "lut.json"))
    np.testing.assert_array_equal(apply_lut(depth, loaded), apply_lut(depth, fitted))
    assert np.isfinite(loaded.correction).all() and (apply_lut(depth, loaded)[depth > 2] > 0).all()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"bin_width": "abc"}, "bin width must be a finite number, got 'abc'"),
        ({"min_depth": None}, "min depth must be a finite number"),
        ({"max_depth": float("inf")}, "max depth must be a finite number"),
        ({"min_count": 2.5}, "min count must be a whole number"),
        ({"min_count": 10**400}, "min count must be a finite number"),  # no OverflowError
        ({"seed": -1}, "seed must be in"),
        ({"stat": ["mean"]}, "stat must be one of"),
        ({"max_depth": 1e308, "bin_width": 1e-300}, f"at most {MAX_BINS}"),  # no OverflowError
        ({"reservoir_size": 10**9}, "reservoir size"),
        ({"n_bootstrap": 10**6}, "bootstrap resamples"),
    ],
)
def test_fit_settings_name_the_field_and_never_raise_a_bare_error(kwargs, says):
    with pytest.raises(ValueError, match=None) as err:
        FitSettings(**kwargs)
    assert type(err.value) is ValueError and says in str(err.value) and "\n" not in str(err.value)


def test_a_pair_of_different_shapes_states_both():
    with pytest.raises(ValueError) as err:
        pair_mask(np.ones((100, 200)), np.ones((375, 1242)), 1, 80)
    assert str(err.value) == (
        "teacher depth 100x200 and lidar depth 375x1242 (H x W) differ in shape: a pair must be of one size"
    )
    with pytest.raises(
        ValueError, match="teacher depth 64x160 and lidar depth 160x64"
    ):  # same size, transposed
        pair_mask(np.ones((64, 160)), np.ones((160, 64)), 1, 80)
