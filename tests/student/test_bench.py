"""The variant summary behind `student summary`, the demo and the speed benchmark."""

from __future__ import annotations

from edgedepth.student.deploy.bench import VariantRow, format_table, plot_latency, summarize_variants
from edgedepth.student.model.build import build_student
from edgedepth.student.model.network import count_macs


def test_rows_match_the_model_functions():
    rows = summarize_variants(["XS", "S"], [(64, 96)])
    assert [(r.variant, r.input_size, r.output_size) for r in rows] == [
        ("XS", (64, 96), (4, 6)),
        ("S", (64, 96), (8, 12)),
    ]
    assert rows[0].macs == count_macs(build_student("XS", return_classes=True), (64, 96))
    assert rows[0].parameters == 270_508 and rows[0].latency_ms is None


def test_table_writes_sizes_as_width_x_height_and_adds_latency_only_when_measured():
    row = VariantRow("M", (320, 480), (80, 120), 305_204, 383_282_400)
    plain = format_table([row]).splitlines()
    assert plain[2].split() == ["M", "480x320", "120x80", "0.305", "0.383"]
    timed = format_table([VariantRow("M", (320, 480), (80, 120), 305_204, 383_282_400, 12.34)])
    assert timed.splitlines()[0].split()[-2:] == ["latency", "(ms)"]
    assert timed.splitlines()[2].split()[-1] == "12.3"


def test_latency_chart_is_a_png(tmp_path):
    rows = summarize_variants(["XS"], [(32, 32), (64, 64)], latency=True, repeats=1, warmup=0)
    assert all(r.latency_ms > 0 for r in rows)
    path = tmp_path / "speed.png"
    plot_latency(rows, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_backend_bench_is_reachable_from_bench():
    from edgedepth.student.deploy import bench, speed, speed_result

    assert bench.bench_variants is speed.bench_variants and bench.BenchResult is speed_result.BenchResult
