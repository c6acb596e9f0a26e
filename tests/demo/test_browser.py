"""The headless-Chromium harness against small real pages: images, errors, screenshot, clean exit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.demo import browser as harness
from tests.demo.browser import ChromiumUnavailable, HeadlessChromium, PageReport, ensure_chromium

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def chromium() -> str:
    """The chromium binary; skip without one unless we are root, who can (and must) install it."""
    try:
        return ensure_chromium()
    except ChromiumUnavailable as exc:
        if os.geteuid() != 0:
            pytest.skip(str(exc))
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser(chromium: str):
    """One browser for the module; its teardown checks that chromium and its helpers are gone."""
    with HeadlessChromium(chromium) as running:
        yield running
    assert gone(running.pid), f"chromium (pid {running.pid}) outlived its fixture"
    assert not live_group(running.pid), "chromium's helper processes outlived it"


def page(tmp_path: Path, body: str, title: str = "test page") -> Path:
    path = tmp_path / "index.html"
    path.write_text(f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>")
    return path


def png(path: Path, width: int, height: int) -> None:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (0, 128, 255)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def decode(png_bytes: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png_bytes, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the screenshot does not decode"
    return image


def gone(pid: int) -> bool:
    """True once `pid` no longer exists (Popen.wait has reaped it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return not Path(f"/proc/{pid}").exists()
    return False


def live_group(pgid: int, wait: float = 5.0) -> list[int]:
    """The processes of group `pgid` that are not zombies (init reaps those in its own time)."""
    deadline = time.monotonic() + wait
    while True:
        live = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            except OSError:
                continue
            if int(group) == pgid and state not in "ZX":
                live.append(int(stat.parent.name))
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.1)


@pytest.mark.slow
def test_page_with_two_images(browser: HeadlessChromium, tmp_path: Path) -> None:
    png(tmp_path / "wide.png", 40, 30)
    png(tmp_path / "square.png", 10, 10)
    report = browser.open(page(tmp_path, '<img src="wide.png" alt="wide"><img src="square.png" alt="sq">'))
    assert isinstance(report, PageReport)
    assert report.title == "test page"
    assert report.url == (tmp_path / "index.html").as_uri()
    sizes = [(i.natural_width, i.natural_height, i.alt) for i in report.images]
    assert sizes == [(40, 30, "wide"), (10, 10, "sq")]
    assert all(image.complete for image in report.images) and report.broken_images == ()
    assert report.console_errors == ()
    assert report.screenshot_png.startswith(PNG_SIGNATURE)
    assert decode(report.screenshot_png).shape[1] == 1280
    saved = report.save_screenshot(tmp_path / "shot.png")
    assert saved.read_bytes() == report.screenshot_png


@pytest.mark.slow
def test_missing_image_is_broken_and_logged(browser: HeadlessChromium, tmp_path: Path) -> None:
    png(tmp_path / "here.png", 10, 10)
    report = browser.open(page(tmp_path, '<img src="here.png"><img src="missing.png">'))
    assert [Path(i.src).name for i in report.broken_images] == ["missing.png"]
    assert report.broken_images[0].natural_width == 0
    assert any("missing.png" in e or "Failed to load" in e for e in report.console_errors), (
        report.console_errors
    )


@pytest.mark.slow
def test_console_error_and_uncaught_exception(browser: HeadlessChromium, tmp_path: Path) -> None:
    report = browser.open(page(tmp_path, '<script>console.error("boom")</script>'))
    assert any("boom" in e for e in report.console_errors), report.console_errors
    report = browser.open(page(tmp_path, '<script>throw new Error("kaboom")</script>'))
    assert any("kaboom" in e for e in report.console_errors), report.console_errors


@pytest.mark.slow
def test_tall_page_screenshot_is_full_page(browser: HeadlessChromium, tmp_path: Path) -> None:
    report = browser.open(page(tmp_path, '<div style="height: 3000px; background: teal"></div>'), width=640)
    height, width = decode(report.screenshot_png).shape[:2]
    assert width == 640 and height >= 3000


@pytest.mark.slow
def test_cdp_errors_name_the_method(browser: HeadlessChromium, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="Emulation.setDeviceMetricsOverride"):
        browser.open(page(tmp_path, "<p>hi</p>"), width=-5)
    with pytest.raises(RuntimeError, match="Page.navigate .*ERR_FILE_NOT_FOUND"):
        browser.open(tmp_path / "no-such-page.html")
    assert browser.open(page(tmp_path, "<p>still fine</p>")).console_errors == ()


@pytest.mark.slow
def test_browser_stops_even_when_the_test_fails(chromium: str, tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), HeadlessChromium(chromium) as running:
        pid, profile = running.pid, running._tmp
        assert pid is not None and not gone(pid) and profile.is_dir()
        running.open(page(tmp_path, "<p>hi</p>"))
        1 / 0  # noqa: B018
    assert gone(pid)
    assert not live_group(pid)
    assert not profile.exists()


def test_startup_failure_reports_stderr(tmp_path: Path) -> None:
    fake = tmp_path / "fake-chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"(?s)exited with 3.*cannot open display"):
        with HeadlessChromium(str(fake)):
            pass


def test_no_chromium_and_no_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.shutil, "which", lambda name: None)
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    with pytest.raises(ChromiumUnavailable, match="needs root and apt-get"):
        ensure_chromium()
