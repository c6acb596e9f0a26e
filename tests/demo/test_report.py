"""The demo report's two formats, from a hand-made result, and its layout in Chromium (the real
report: tests/demo/test_demo.py)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser

from edgedepth.demo.report import to_html, to_markdown, write_reports
from edgedepth.demo.result import MOTORCYCLE, DemoResult, Figure, Step, quick_settings
from tests.demo.chromium import opened


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


def test_pre_blocks_wrap_and_the_debug_counts_stay_out_of_the_report(tmp_path):
    page = to_html(result(tmp_path))
    assert "white-space: pre-wrap; overflow-wrap: anywhere" in page.split("pre {", 1)[1].split("}", 1)[0]
    for text in (page, to_markdown(result(tmp_path))):
        assert "plan_reads" not in text and "parsed" not in text and "time(s)" not in text


def test_reused_steps_and_the_quick_path_are_named(tmp_path):
    done = result(tmp_path)
    done.steps[0].status, done.settings = "reused", quick_settings(MOTORCYCLE)
    page, text = to_html(done), to_markdown(done)
    for report in (page, text):
        assert "Reused from an earlier run with the same inputs and settings (1 steps): bias table" in report
        assert "--quick: the short path" in report and "student trained at 192x128 for 2 x 20 steps" in report
    assert "Command (reused, made earlier by):" in page and "Command (reused, made earlier by):" in text
    assert "Reused" not in to_html(result(tmp_path))


@pytest.mark.slow
def test_long_lines_wrap_and_every_figure_loads_at_1280_px(browser: Browser, tmp_path):
    """The report's own CSS in Chromium: a caveat sentence and a command far wider than the window
    wrap (no horizontal scrollbar hides them), and both figures load."""
    for name, width in (("lut.png", 1600), ("overview.png", 2400)):
        cv2.imwrite(str(tmp_path / name), np.full((300, width, 3), 200, np.uint8))
    done = result(tmp_path)
    done.steps[0].text = (
        "caveat: " + "the student learns only where the teacher gives labels " * 40 + "x" * 400
    )
    done.steps[0].command = "edgedepth calib fit " + "/a/very/long/path" * 60
    html_path, _ = write_reports(done)
    with opened(browser, html_path, width=1280) as loaded:
        overflow, hidden = loaded.overflow(), scrolled_inside(loaded.page)
        images = loaded.images
        assert loaded.errors == []
    assert overflow.scroll_width <= 1280, overflow.describe()
    assert hidden == [], hidden  # nothing behind a scrollbar of its own either
    assert len(images) == 2 and all(i.complete and i.natural_width > 0 for i in images), images


def scrolled_inside(page) -> list[str]:
    """The text blocks wider than their box (their end hidden behind their own scrollbar or cut)."""
    return page.evaluate(
        "() => [...document.querySelectorAll('pre, code, td, p')]"
        ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.tagName + ': ' + e.textContent.slice(0, 60))"
    )
