"""The Playwright-driven system Chromium against small real pages: images, errors, overflow,
screenshots, file:// and localhost URLs, and a clean exit."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Error

from tests.demo import chromium as harness
from tests.demo.chromium import ChromiumUnavailable, ensure_chromium, opened

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]
MARK = "EDGEDEPTH_BROWSER_TEST"  # set in a child's environment: every process it starts inherits it
# a child python opens a page, says its title, waits for a line on stdin, then fails
CHILD = """
import sys
from tests.demo.chromium import opened, running
with running(sys.argv[1]) as browser, opened(browser, sys.argv[2]) as loaded:
    print(loaded.page.title(), flush=True)
    sys.stdin.readline()
    1 / 0
"""


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
    assert png_bytes.startswith(PNG_SIGNATURE), "the screenshot is no PNG"
    image = cv2.imdecode(np.frombuffer(png_bytes, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the screenshot does not decode"
    return image


def running_processes() -> dict[int, tuple[int, bytes, list[str]]]:
    """Every running process (zombies aside) we may read: its parent, environment and command line."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            state, parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if state not in "ZX":
                environ, cmdline = (proc / "environ").read_bytes(), (proc / "cmdline").read_bytes()
                found[int(proc.name)] = (int(parent), environ, cmdline.decode(errors="replace").split("\0"))
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    return found


def marked(token: str, also: Iterable[int] = ()) -> dict[int, list[str]]:
    """The running processes whose environment holds `token` (NAME=VALUE; orphans of PID 1 too), the
    processes below them (chromium starts its helpers with a clean environment) and those of `also`
    still running: their command lines by pid."""
    procs = running_processes()
    found = {pid for pid, (_, environ, _) in procs.items() if token.encode() in environ.split(b"\0")}
    found |= set(also) & set(procs)
    while below := {pid for pid, (parent, _, _) in procs.items() if parent in found} - found:
        found |= below
    return {pid: procs[pid][2] for pid in found}


def still_marked(token: str, also: Iterable[int], wait: float = 10.0) -> dict[int, list[str]]:
    """marked(token, also), once it is empty or `wait` seconds have passed."""
    deadline = time.monotonic() + wait
    while (left := marked(token, also)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on 127.0.0.1, in a thread: yields its base URL, stops the server on exit."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.slow
def test_page_with_two_images(browser: Browser, tmp_path: Path) -> None:
    png(tmp_path / "wide.png", 40, 30)
    png(tmp_path / "square.png", 10, 10)
    index = page(tmp_path, '<img src="wide.png" alt="wide"><img src="square.png" alt="sq">')
    with opened(browser, index) as loaded:
        assert loaded.page.title() == "test page"
        assert loaded.page.url == index.as_uri()
        sizes = [(i.natural_width, i.natural_height, i.alt) for i in loaded.images]
        assert sizes == [(40, 30, "wide"), (10, 10, "sq")]
        assert all(image.complete for image in loaded.images) and loaded.broken_images == ()
        overflow = loaded.overflow()
        assert (overflow.scroll_width, overflow.client_width, overflow.elements) == (1280, 1280, ())
        shot = loaded.screenshot(tmp_path / "shot.png")
        assert loaded.errors == []
    assert decode(shot).shape[1] == 1280
    assert (tmp_path / "shot.png").read_bytes() == shot


@pytest.mark.slow
def test_page_over_localhost(browser: Browser, tmp_path: Path) -> None:
    png(tmp_path / "wide.png", 40, 30)
    page(tmp_path, '<img src="wide.png" alt="wide"><img src="missing.png" alt="gone">')
    with served(tmp_path) as base, opened(browser, f"{base}/index.html") as loaded:
        assert loaded.page.url == f"{base}/index.html" and loaded.page.title() == "test page"
        sizes = [(Path(i.src).name, i.natural_width) for i in loaded.images]
        assert sizes == [("wide.png", 40), ("missing.png", 0)]
        assert [i.alt for i in loaded.broken_images] == ["gone"]
        assert any("404" in e and "missing.png" in e for e in loaded.errors), loaded.errors


@pytest.mark.slow
def test_missing_image_is_broken_and_logged(browser: Browser, tmp_path: Path) -> None:
    png(tmp_path / "here.png", 10, 10)
    with opened(browser, page(tmp_path, '<img src="here.png"><img src="missing.png">')) as loaded:
        assert [Path(i.src).name for i in loaded.broken_images] == ["missing.png"]
        assert loaded.broken_images[0].natural_width == 0
        assert any("missing.png" in e and "ERR_FILE_NOT_FOUND" in e for e in loaded.errors), loaded.errors


@pytest.mark.slow
def test_console_error_and_uncaught_exception(browser: Browser, tmp_path: Path) -> None:
    with opened(browser, page(tmp_path, '<script>console.error("boom")</script>')) as loaded:
        assert any(e.startswith("console.error: boom") for e in loaded.errors), loaded.errors
    with opened(browser, page(tmp_path, '<script>throw new Error("kaboom")</script>')) as loaded:
        assert any(e.startswith("exception:") and "kaboom" in e for e in loaded.errors), loaded.errors
    quiet = page(tmp_path, '<script>console.log("fine"); console.warn("meh")</script>')
    with opened(browser, quiet) as loaded:
        assert loaded.errors == []  # only errors count


@pytest.mark.slow
def test_tall_page_screenshot_is_full_page(browser: Browser, tmp_path: Path) -> None:
    tall = page(tmp_path, '<div style="height: 3000px; background: teal"></div>')
    with opened(browser, tall, width=640) as loaded:
        height, width = decode(loaded.screenshot()).shape[:2]
    assert width == 640 and height >= 3000


@pytest.mark.slow
def test_overflow_names_the_element_that_sticks_out(browser: Browser, tmp_path: Path) -> None:
    body = '<p>narrow</p><div class="box"><pre id="wide" style="width: 2000px">x</pre></div>'
    with opened(browser, page(tmp_path, body)) as loaded:
        overflow = loaded.overflow()
    assert overflow.client_width == 1280 and overflow.scroll_width > 2000
    assert [e["element"] for e in overflow.elements] == ["div.box > pre#wide"]
    assert overflow.elements[0]["width"] == 2000
    assert "`div.box > pre#wide` is 2000 px wide" in overflow.describe()


@pytest.mark.slow
def test_failed_navigation_raises_and_the_browser_goes_on(browser: Browser, tmp_path: Path) -> None:
    with pytest.raises(Error, match="ERR_FILE_NOT_FOUND"), opened(browser, tmp_path / "no-such-page.html"):
        pass
    with opened(browser, page(tmp_path, "<p>still fine</p>")) as loaded:
        assert loaded.errors == [] and loaded.page.title() == "test page"
    assert browser.contexts == []  # each page's context was closed


@pytest.mark.slow
def test_browser_stops_even_when_the_test_fails(chromium: str, tmp_path: Path) -> None:
    """Playwright's driver, chromium, its helpers and its crash handlers (orphans of PID 1) all stop,
    and chromium's temporary profile goes, when the code inside `running()` raises."""
    value = uuid.uuid4().hex
    token = f"{MARK}={value}"
    cmd = [sys.executable, "-c", CHILD, chromium, str(page(tmp_path, "<p>hi</p>"))]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    child = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, MARK: value}, text=True, **pipes)
    try:
        title = child.stdout.readline().strip()
        during = marked(token)
        _, stderr = child.communicate("go\n", timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert title == "test page", stderr[-3000:]
    assert child.returncode != 0 and "ZeroDivisionError" in stderr, stderr[-3000:]
    kinds = {Path(cmdline[0]).name for cmdline in during.values()}
    # the child python, Playwright's node driver, chromium and its zygotes, renderer and other helpers
    assert {"node", "chromium"} <= kinds and len(during) >= 6, during
    left = still_marked(token, during)
    assert not left, f"processes outlived the browser: {left}"
    profiles = {a.split("=", 1)[1] for c in during.values() for a in c if a.startswith("--user-data-dir=")}
    assert profiles and not any(Path(p).exists() for p in profiles), profiles


@pytest.mark.slow  # starts Playwright's driver: seconds
def test_startup_failure_reports_stderr(tmp_path: Path) -> None:
    fake = tmp_path / "fake-chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    fake.chmod(0o755)
    start = "import sys\nfrom tests.demo.chromium import running\nwith running(sys.argv[1]):\n    pass\n"
    # a child python: the sync API allows one Playwright per thread, and the session's may be running
    child = subprocess.run([sys.executable, "-c", start, str(fake)], cwd=REPO, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert child.returncode != 0, child.stdout
    assert re.search(r"(?s)playwright.*Error.*cannot open display.*exitCode=3", child.stderr), child.stderr[
        -3000:
    ]


def test_no_chromium_and_no_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.shutil, "which", lambda name: None)
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    with pytest.raises(ChromiumUnavailable, match="needs root and apt-get"):
        ensure_chromium()


def test_launch_uses_the_system_chromium_with_the_offline_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never a downloaded browser: Playwright gets the binary's path, headless, and the offline flags."""
    calls = []

    class Chromium:
        def launch(self, **kwargs: object) -> str:
            calls.append(kwargs)
            return "browser"

    class Fake:
        chromium = Chromium()

    assert harness.launch(Fake(), "/usr/bin/chromium") == "browser"
    (call,) = calls
    assert call["executable_path"] == "/usr/bin/chromium" and call["headless"] is True
    assert set(call["args"]) >= {"--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                 "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync"}  # fmt: skip
