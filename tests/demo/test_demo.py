"""`edgedepth demo` end to end, as a new user runs it: the console script on the embedded data, the
figures of a working pipeline in its report, and the report rendered by a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser

from tests.demo.chromium import opened
from tests.demo.test_report import scrolled_inside
from tests.edge_steps import edge_step

EDGEDEPTH = Path(sys.executable).with_name("edgedepth")
ARTIFACTS = os.environ.get("EDGEDEPTH_TEST_ARTIFACTS")  # where to keep the report's screenshot, if set


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    done = subprocess.run(
        [str(EDGEDEPTH), "demo", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=3600,  # minutes alone on 2 cores; far longer when other jobs share them
        cwd=out.parent,  # no weights/ folder here: PSMNet is skipped
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


@pytest.mark.slow
def test_demo_reports_a_working_pipeline(demo_out):
    out, stdout = demo_out
    result = json.loads((out / "demo.json").read_text())
    steps = {s["key"]: s for s in result["steps"]}
    assert [s["key"] for s in result["steps"] if s["status"] == "skipped"] == ["psmnet", "seg"]
    assert "labelgen weights psmnet-kitti2015" in steps["psmnet"]["text"]
    teachers = steps["teachers"]["figures_measured"]
    assert teachers["sgbm_abs_rel"] < 0.05  # SGBM on Motorcycle, with doffs: a working stereo teacher (0.012)
    assert teachers["sgbm_coverage"] > 0.7  # 89 %
    assert steps["calib"]["figures_measured"]["populated_bins"] >= 8  # 2-5 m in 0.25 m bins
    student = steps["eval"]["figures_measured"]
    assert student["a1"] > 0.8, student  # a short run, but a student that learnt the scene (0.93)
    assert student["abs_rel_labelled"] < 0.12, (
        student
    )  # 0.071-0.075 where SGBM gave labels (0.027 without crops)
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert {Path(f["path"]).name for f in manifest["files"]} >= {
        "student_L_trt10_fp32.onnx", "student_L_trt10_int8.onnx", "student_XS_trt10_fp32.onnx",
    }  # fmt: skip
    bench = json.loads((out / "bench.json").read_text())
    assert any(r["backend"] == "onnxruntime" and r["status"] == "ok" for r in bench["rows"])
    for key, step in steps.items():  # every step that ran says how to run it by hand
        if step["status"] == "done" and key not in ("data", "overview"):
            assert step["command"].startswith("edgedepth "), key
    assert "--kitti-root" not in json.dumps(result)  # the data is a rig tree, named with --data-root
    assert f"labelgen plan --data-root {out / 'data'} " in steps["plan"]["command"]
    assert f"student eval {out / 'run' / 'best.pt'} --data-root {out / 'data'} " in steps["eval"]["command"]
    assert steps["teachers"]["command"].startswith(f"edgedepth labelgen score {out / 'labels'} --stage sgbm")
    assert "--min-depth 1.0 --max-depth 8.0" in steps["calib"]["command"]  # calib.json's depth_range_m
    assert "--min-depth" not in steps["train"]["command"]  # training takes it from the data itself
    assert (out / "data" / "motorcycle" / "calib.json").is_file() and (out / "score_sgbm.json").is_file()
    assert json.loads((out / "score_sgbm.json").read_text())["abs_rel"] == teachers["sgbm_abs_rel"]
    assert "calib.json depth_range_m" in json.loads((out / "eval.json").read_text())["protocol"]
    assert re.search(r"^total\s+\d+\.\d$", stdout, flags=re.M), stdout[-2000:]
    assert result["counts"]["plan_reads"] <= 2, result[
        "counts"
    ]  # kept in result.json for this test, not shown to the user


@pytest.mark.slow
def test_report_lists_every_figure_and_both_formats_agree(demo_out):
    out, _ = demo_out
    html, markdown = (out / "report.html").read_text(), (out / "report.md").read_text()
    html_images = re.findall(r'<img src="([^"]+)"', html)
    md_images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert html_images == md_images and len(html_images) >= 8
    for name in html_images:
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 50, name
    for wanted in ("overview.png", "teachers.png", "lut_sgbm.png", "run/curves.png", "bench.png"):
        assert wanted in html_images
    assert "indoor" in html and "not a KITTI" in html
    assert "pre-wrap" in html and "plan.json parsed" not in html and "time(s)" not in html
    curves = cv2.imread(str(out / "run" / "curves.png"))
    assert curves.shape[1] / curves.shape[0] < 3.0  # two panels (3.7 with the empty validation one)
    steps = {s["key"]: s for s in json.loads((out / "demo.json").read_text())["steps"]}
    assert " thread(s), input 384x256 px" in steps["bench"]["figures"][0]["caption"]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo_out, browser: Browser, tmp_path):
    """The report as a reader sees it, in the system Chromium at 1280 px: every figure loads, nothing
    logs an error, and nothing is wider than the window."""
    out, _ = demo_out
    listed = re.findall(r'<img src="([^"]+)"', (out / "report.html").read_text())
    with opened(browser, out / "report.html", width=1280) as loaded:
        assert loaded.page.title() == "edgedepth demo report"
        assert loaded.page.url == (out / "report.html").resolve().as_uri()
        images = loaded.images
        shown = [
            Path(url2pathname(urlparse(i.src).path)).relative_to(out.resolve()).as_posix() for i in images
        ]
        assert shown == listed and len(images) >= 8  # every figure of the report, in order
        assert all(i.complete and i.natural_width > 0 and i.natural_height > 0 for i in images), images
        shot = (Path(ARTIFACTS) if ARTIFACTS else tmp_path) / "demo_report.png"
        loaded.screenshot(shot)
        overflow, hidden = loaded.overflow(), scrolled_inside(loaded.page)
        assert loaded.errors == []
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] == 1280 and image.shape[0] > 2000
    assert overflow.scroll_width <= 1280, overflow.describe()  # no horizontal scrollbar on the page
    assert hidden == [], hidden  # and no caveat behind a scrollbar of its own


@pytest.mark.slow
def test_a_broken_report_is_caught_by_the_browser_check(demo_out, browser: Browser, tmp_path):
    """The render check can fail: a report whose figure is missing shows a broken image and an error."""
    out, _ = demo_out
    broken = tmp_path / "broken"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("labels", "data", "export", "*.onnx"))
    (broken / "teachers.png").unlink()
    with opened(browser, broken / "report.html") as loaded:
        assert [Path(i.src).name for i in loaded.broken_images] == ["teachers.png"]
        assert any("ERR_FILE_NOT_FOUND" in e and "teachers.png" in e for e in loaded.errors), loaded.errors


@pytest.mark.slow
def test_the_demo_student_stays_in_range_and_draws_weaker_border_stripes_on_unseen_images(
    demo_out, real_data, tmp_path
):
    """Issue 22: trained on the one Motorcycle frame, the demo's student drew far stripes at the
    borders of every other image. On the 21 Middlebury scenes (none seen in training) its raw depth,
    without the clamp, stays within the trained range, and the edge step (the outer 1/32 of the
    columns against the next 3/32, in log depth), averaged over both sides and the scenes, is under
    log 1.09. That is a regression bound, not "no stripes": with the demo's random crops seeds 0-2
    gave 0.053, 0.044 and 0.074 (a CI run 0.077); without them 0.093, 0.097 and 0.096, which fail it;
    the truth 0.007 (docs/evaluation.md, "Border stripes"). It says so: predict and the report note
    the one training frame. Several scenes do remove the stripes: tests/test_cli_unseen_scenes.py."""
    import torch

    from edgedepth.student.evaluate.predict import predict_images
    from edgedepth.student.model import load_student, preprocess_image

    out, _ = demo_out
    model, config = load_student(out / "run" / "best.pt")
    model.output_range = None  # the network itself, not the clamp, must stay in range
    lo, hi = config.output_range
    scenes = sorted(p for p in (real_data / "middlebury2006").iterdir() if (p / "view1.png").is_file())
    assert len(scenes) == 21
    steps = []
    for scene in scenes:
        image = cv2.imread(str(scene / "view1.png"), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        with torch.inference_mode():
            x = preprocess_image(image, config.input_size, config.mean, config.std)[None]
            raw = model(x)[0, 0].numpy()
        assert lo <= raw.min() and raw.max() <= hi, (scene.name, raw.min(), raw.max())
        steps.append(edge_step(raw))
    left, right = np.mean(steps, axis=0)
    assert (left + right) / 2 < np.log(1.09), (left, right)
    written = predict_images(out / "run" / "best.pt", [scenes[0] / "view1.png"], tmp_path, progress=False)
    assert lo <= written[0].depth_min and written[0].depth_max <= hi
    # and it says so: predict and the report's prediction step note the one training frame
    assert len(written.notes) == 1 and "was trained on 1 frame(s)" in written.notes[0]
    assert "best.pt was trained on 1 frame(s): on images unlike them" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_rerun_reuses_every_step_and_says_so(demo_out, monkeypatch):
    """The second `make demo`: nothing changed, so every finished step is reused (the training
    untouched), in seconds; runs last in this module, since it rewrites the report in place."""
    from edgedepth.demo.pipeline import run_demo

    out, _ = demo_out
    checkpoint = (out / "run" / "best.pt").stat().st_mtime_ns
    monkeypatch.chdir(out.parent)  # as the first run: no weights/ folder, PSMNet skipped
    lines: list[str] = []
    started = time.perf_counter()
    result = run_demo(out, progress=False, log=lines.append)
    seconds = time.perf_counter() - started
    statuses = {s.key: s.status for s in result.steps}
    assert statuses == {k: "skipped" if k in ("psmnet", "seg") else "reused" for k in statuses}, statuses
    assert len(statuses) == 13 and (out / "run" / "best.pt").stat().st_mtime_ns == checkpoint
    assert any(line.startswith("reused 11 finished step(s)") for line in lines), lines
    assert "student training (short): reused (finished" in "\n".join(lines)
    assert "Reused from an earlier run" in (out / "report.html").read_text()
    assert seconds < 60, seconds  # 3 s alone on 2 cores
