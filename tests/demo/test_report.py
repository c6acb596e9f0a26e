"""The demo report's two formats, from a hand-made result (the real one: tests/demo/test_demo.py)."""

from __future__ import annotations

import re
from pathlib import Path

from edgedepth.demo.report import to_html, to_markdown, write_reports
from edgedepth.demo.result import MOTORCYCLE, DemoResult, Figure, Step


def result(out: Path) -> DemoResult:
    steps = [
        Step(
            "calib",
            "bias table",
            "edgedepth calib fit L --out 'a b.json'",
            seconds=1.25,
            text="x < y & z",
            figures=[Figure("lut.png", "the <table>", "edgedepth calib fit L")],
        ),  # fmt: skip
        Step("psmnet", "PSMNet teacher", "", status="skipped", text="no checkpoint: run `labelgen weights`"),
        Step(
            "overview",
            "overview figure",
            "(demo only)",
            seconds=0.5,
            figures=[Figure("overview.png", "input | truth", "(demo only)")],
        ),  # fmt: skip
    ]
    return DemoResult(out, "an indoor scene", MOTORCYCLE, steps, {"plan_reads": 1, "status_checks": 6})


def test_html_escapes_text_and_lists_each_figure_once_with_its_command(tmp_path):
    page = to_html(result(tmp_path))
    assert "x &lt; y &amp; z" in page and "the &lt;table&gt;" in page
    assert re.findall(r'<img src="([^"]+)"', page) == ["overview.png", "lut.png"]  # overview first
    assert "edgedepth calib fit L --out &#x27;a b.json&#x27;" in page
    assert "Skipped: no checkpoint" in page
    assert "<script" not in page and "http" not in page  # static: nothing to fetch, nothing to run
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]*)</td><td class=\"num\">([^<]+)</td></tr>", page)
    assert rows == [("bias table", "done", "1.2"), ("PSMNet teacher", "skipped", "0.0"),
                    ("overview figure", "done", "0.5"), ("total", "", "1.8")]  # fmt: skip


def test_markdown_has_the_same_figures_and_timings(tmp_path):
    text = to_markdown(result(tmp_path))
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text) == ["overview.png", "lut.png"]
    assert "| total |  | 1.8 |" in text
    assert "```\nx < y & z\n```" in text


def test_write_reports_writes_both_files(tmp_path):
    html_path, md_path = write_reports(result(tmp_path))
    assert html_path == tmp_path / "report.html" and md_path == tmp_path / "report.md"
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob("*.tmp*"))
