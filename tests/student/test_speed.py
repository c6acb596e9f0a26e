"""Backend speed rows (edgedepth.student.deploy.speed) on a tiny input, and the FastDepth-class baseline's size."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from edgedepth.student.deploy.export import export_onnx
from edgedepth.student.deploy.speed import bench_variants
from edgedepth.student.deploy.speed_result import BenchResult, BenchRow
from edgedepth.student.deploy.timing import latency_stats
from edgedepth.student.model.checkpoint import load_student, save_checkpoint
from edgedepth.student.model.config import ModelConfig
from edgedepth.student.model.network import count_macs, count_parameters

SIZE = (64, 96)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(variant="L", seg=True, input_size=SIZE)
    model = cfg.build().eval()
    path = tmp_path_factory.mktemp("speed") / "student.pt"
    save_checkpoint(path, {"model_config": cfg.to_dict(), "model": model.state_dict(), "epoch": 0, "step": 0})
    return path


@pytest.fixture(scope="module")
def result(ckpt):
    backends = ("torch", "onnxruntime", "tensorrt")
    return bench_variants(ckpt, ["XS", "S"], SIZE, backends, ("fp32", "int8"), repeats=3, warmup=1,
                          memory=False, target="trt8")  # fmt: skip


def test_rows_for_every_variant_backend_and_precision(ckpt, result):
    assert [(r.variant, r.backend, r.precision) for r in result.rows] == [
        (v, b, p) for v in ("XS", "S") for b in ("torch", "onnxruntime", "tensorrt") for p in ("fp32", "int8")
    ]
    for variant in ("XS", "S"):
        model, _ = load_student(ckpt, variant)
        for backend in ("torch", "onnxruntime"):
            row = result.row(variant, backend, "fp32")
            assert row.status == "ok" and row.fps > 0 and row.latency_ms > 0
            assert row.p10_ms <= row.latency_ms <= row.p90_ms
            assert row.fps == pytest.approx(1000 / row.latency_ms)
            assert row.parameters == count_parameters(model) and row.macs == count_macs(model, SIZE)
            assert row.input_size == SIZE and row.peak_memory_mb is None
    assert result.row("S", "onnxruntime", "fp32").output_size == (8, 12)
    int8 = result.row("XS", "onnxruntime", "int8")
    assert int8.status == "skipped" and "calib_labels" in int8.note
    assert result.row("XS", "torch", "int8").status == "skipped"


def test_peak_memory_of_a_fresh_process_per_cpu_row(ckpt):
    result = bench_variants(ckpt, ["XS"], SIZE, ("torch", "onnxruntime"), repeats=1, warmup=0, target="trt8")
    for row in result.rows:
        assert row.status == "ok" and 0 < row.peak_memory_mb < 2000 and "fresh process" in row.memory


def test_tensorrt_is_listed_as_not_installed_here(result):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        rows = [r for r in result.rows if r.backend == "tensorrt"]
        assert len(rows) == 4 and all(r.status == "not installed" and r.fps is None for r in rows)
    else:
        pytest.skip("tensorrt is installed here")


def test_table_json_and_chart(result, tmp_path):
    lines = result.format_table().splitlines()
    assert lines[0].split()[:7] == ["model", "input", "output", "params", "(M)", "MACs", "(G)"]
    assert "onnxruntime fp32 fps" in lines[0] and "tensorrt int8 fps" in lines[0]
    xs = next(line for line in lines[2:] if line.startswith("XS"))
    assert xs.split()[1:3] == ["96x64", "6x4"] and "not installed" in xs
    result.save_json(tmp_path / "bench.json")
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(data["rows"]) == 12 and data["settings"]["batch"] == 1
    assert data["rows"][0]["spread_ms"] == pytest.approx(
        data["rows"][0]["p90_ms"] - data["rows"][0]["p10_ms"]
    )
    result.plot(tmp_path / "bench.png")
    png = (tmp_path / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_an_export_folder_is_a_source(ckpt, tmp_path):
    export_onnx(ckpt, tmp_path / "onnx", ("XS",), SIZE, "trt8", ("fp32",), progress=False)
    result = bench_variants(
        tmp_path / "onnx", ["XS"], backends=("onnxruntime",), precisions=("fp32", "int8"),
        threads=1, repeats=2, warmup=0, memory=False,
    )  # fmt: skip
    fp32, int8 = result.rows
    assert fp32.status == "ok" and fp32.input_size == SIZE and fp32.peak_memory_mb is None
    assert int8.status == "skipped" and "no int8 file" in int8.note
    assert "export folder" in result.settings["source"] and result.settings["threads"] == 1


def test_onnxruntime_times_onnxruntimes_int8_form(ckpt, tmp_path):
    from tests.student.labelfolder import make_label_folder

    labels = make_label_folder(tmp_path / "labels", {"2011_09_26_drive_0001_sync": 2}, lidar=False, seg=False)
    export_onnx(ckpt, tmp_path / "onnx", ("XS",), SIZE, "trt8", ("fp32", "int8"), calib_labels=labels,
                progress=False)  # fmt: skip
    (int8,) = bench_variants(
        tmp_path / "onnx", ["XS"], backends=("onnxruntime",), precisions=("int8",),
        threads=1, repeats=2, warmup=0, memory=False,
    ).rows  # fmt: skip
    assert int8.status == "ok" and int8.note.startswith("student_XS_trt8_int8_ort.onnx: depth vs FP32")


def test_unknown_backend_is_refused(ckpt):
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        bench_variants(ckpt, ["XS"], SIZE, ("tflite",))


def test_latency_stats_and_a_row_by_hand():
    stats = latency_stats([10.0, 12.0, 11.0, 30.0, 9.0])
    assert stats["latency_ms"] == 11.0 and stats["fps"] == pytest.approx(1000 / 11)
    assert 9.0 <= stats["p10_ms"] < stats["latency_ms"] < stats["p90_ms"] <= 30.0
    row = BenchRow("L", "onnxruntime", "fp32", "ok", (320, 480), (160, 240), 320_000, 1_000_000_000, **stats)
    table = BenchResult([row]).format_table().splitlines()
    assert table[2].split()[:5] == ["L", "480x320", "240x160", "0.320", "1.000"]


def _fastdepth():
    spec = importlib.util.spec_from_file_location("fastdepth", ROOT / "benchmarks" / "fastdepth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_fastdepth()


def test_fastdepth_class_baseline_matches_the_published_size():
    model = _fastdepth()
    assert count_parameters(model) == pytest.approx(3.96e6, rel=0.05)
    assert count_macs(model, (224, 224)) == pytest.approx(0.74e9, rel=0.05)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 64, 96)
