"""Speed at accuracy: `student bench --eval-root` scores each exported file on held-out frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgedepth import cli
from edgedepth.student.deploy.speed import _flag_int8, bench_variants
from edgedepth.student.deploy.speed_result import BenchResult, BenchRow, pareto_front, plot_pareto
from edgedepth.student.evaluate import evaluate_checkpoint
from edgedepth.student.model.checkpoint import save_checkpoint
from edgedepth.student.model.config import ModelConfig
from tests.rig_tree import make_rig_tree

SIZE = (64, 96)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(variant="L", seg=False, input_size=SIZE)
    model = cfg.build().train()
    with torch.no_grad():  # batch-norm statistics from a few passes, so the depth varies over the image
        for _ in range(4):
            model(torch.randn(2, 3, *SIZE))
    path = tmp_path_factory.mktemp("acc") / "student.pt"
    save_checkpoint(
        path, {"model_config": cfg.to_dict(), "model": model.eval().state_dict(), "epoch": 0, "step": 0}
    )
    return path


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    return make_rig_tree(tmp_path_factory.mktemp("rig"), {"seq_a": 2, "seq_b": 1})


@pytest.fixture(scope="module")
def result(ckpt, rig):
    return bench_variants(ckpt, ["XS"], SIZE, ("torch", "onnxruntime"), ("fp32",), repeats=2, warmup=1,
                          memory=False, target="trt8", eval_root=rig)  # fmt: skip


def test_each_row_is_scored_like_student_eval_scores_the_checkpoint(ckpt, rig, result):
    """The file run by ONNX Runtime and the eager model give student eval's figures on the same frames."""
    want = evaluate_checkpoint(ckpt, rig, variant="XS", size=SIZE, progress=False).metrics
    for backend, tolerance in (("torch", 1e-6), ("onnxruntime", 1e-4)):
        row = result.row("XS", backend, "fp32")
        assert row.status == "ok" and row.eval_frames == 3, row
        assert row.abs_rel == pytest.approx(want["abs_rel"], rel=tolerance)
        assert row.rmse == pytest.approx(want["rmse"], rel=tolerance)
        assert row.delta1 == pytest.approx(want["a1"], abs=1e-3)
    assert result.row("XS", "onnxruntime", "fp32").file == "student_XS_trt8_fp32.onnx"
    assert "3 frames" in result.settings["eval"]
    assert result.row("XS", "onnxruntime", "fp32").abs_rel > 0.01  # a random model is not exact


def _row(backend, precision, fps, abs_rel, **kw):
    return BenchRow("L", backend, precision, "ok", (64, 96), (32, 48), 1, 1, latency_ms=1000 / fps, p10_ms=1.0,
                    p90_ms=2.0, fps=fps, abs_rel=abs_rel, rmse=0.3, **kw)  # fmt: skip


def test_int8_much_worse_than_fp32_is_flagged_not_hidden():
    rows = _flag_int8([
        _row("openvino", "fp32", 30, 0.100), _row("openvino", "int8", 60, 0.115),
        _row("onnxruntime", "fp32", 20, 0.100), _row("onnxruntime", "int8", 25, 0.105),
    ])  # fmt: skip
    flagged = {(r.backend, r.precision): r.flag for r in rows}
    assert "+0.015" in flagged[("openvino", "int8")] and flagged[("onnxruntime", "int8")] == ""
    table = BenchResult(rows).format_markdown()
    assert table.count("FLAGGED") == 1 and "| L | openvino | int8 |" in table


def test_pareto_front_keeps_only_rows_nothing_beats_on_both_axes(tmp_path):
    rows = [_row("a", "fp32", 10, 0.10), _row("b", "fp32", 20, 0.12), _row("c", "fp32", 15, 0.13),
            _row("d", "int8", 30, 0.20), _row("e", "fp32", 20, 0.11)]  # fmt: skip
    no_accuracy = BenchRow("FastDepth", "onnxruntime", "fp32", "ok", (64, 96), (64, 96), 1, 1, fps=12.0)
    front = pareto_front([*rows, no_accuracy])
    assert [r.backend for r in front] == ["a", "e", "d"]  # c is beaten by b and e; b by e
    plot_pareto(BenchResult([*rows, no_accuracy], {"device": "cpu", "threads": 2}), tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_the_table_the_markdown_and_the_pareto_chart(ckpt, rig, tmp_path):
    out = tmp_path / "bench.json"
    args = ["student", "bench", str(ckpt), "--variants", "XS", "--size", "96x64", "--backends", "onnxruntime",
            "--repeats", "2", "--eval-root", str(rig), "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert "Abs Rel" in result.output
    row = json.loads(out.read_text())["rows"][0]
    assert row["abs_rel"] > 0 and np.isfinite(row["rmse"]) and row["eval_frames"] == 3
    assert "| XS | onnxruntime | fp32 | `student_XS_trt10_fp32.onnx` |" in out.with_suffix(".md").read_text()
    assert (tmp_path / "bench_pareto.png").is_file() and (tmp_path / "bench.png").is_file()


def test_a_missing_eval_root_is_refused_before_any_work(ckpt, tmp_path):
    args = [
        "student",
        "bench",
        str(ckpt),
        "--eval-root",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "b.json"),
    ]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code != 0 and "nope: data root folder not found" in result.output
    assert not (tmp_path / "b.json").exists()
