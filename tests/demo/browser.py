"""A small headless-Chromium harness: open a page, list its images and errors, take a screenshot.

Chromium is driven with the Chrome DevTools Protocol (CDP) over a tornado websocket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.websocket import websocket_connect

BINARIES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--remote-debugging-port=0")
FLAGS += ("--no-first-run", "--no-default-browser-check")  # root needs --no-sandbox
MAX_SCREENSHOT_HEIGHT = 20_000
IMAGES_JS = """({title: document.title, url: location.href, images: Array.from(document.images, i => ({
    src: i.currentSrc || i.src, natural_width: i.naturalWidth, natural_height: i.naturalHeight,
    complete: i.complete, alt: i.alt}))})"""


class ChromiumUnavailable(RuntimeError):
    """No chromium binary, and it could not be installed."""


def _which() -> str | None:
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


def ensure_chromium() -> str:
    """The path of a chromium binary; as root with apt-get, install Debian's `chromium` first."""
    if found := _which():
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ChromiumUnavailable(
            f"no {'/'.join(BINARIES)} on PATH; installing chromium needs root and apt-get"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode:
            raise ChromiumUnavailable(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr[-2000:]}")
    if found := _which():
        return found
    raise ChromiumUnavailable("apt-get installed chromium, but no chromium binary is on PATH")


@dataclass(frozen=True)
class ImageInfo:
    """One `<img>` element as the page saw it."""

    src: str
    natural_width: int
    natural_height: int
    complete: bool
    alt: str

    @property
    def broken(self) -> bool:
        return self.natural_width == 0 or not self.complete


@dataclass(frozen=True)
class PageReport:
    """What one page load showed: images, console errors and a full-page PNG screenshot."""

    url: str
    title: str
    images: tuple[ImageInfo, ...]
    console_errors: tuple[str, ...]
    screenshot_png: bytes

    @property
    def broken_images(self) -> tuple[ImageInfo, ...]:
        return tuple(image for image in self.images if image.broken)

    def save_screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Write the screenshot to `path` and return it."""
        path = Path(path)
        path.write_bytes(self.screenshot_png)
        return path


class _Cdp:
    """One CDP websocket session; events that arrive between answers are kept in `events`."""

    def __init__(self, ws: Any, timeout: float) -> None:
        self.ws, self.timeout, self.events, self._id = ws, timeout, [], 0

    async def _receive(self, deadline: float, what: str) -> dict:
        try:
            raw = await asyncio.wait_for(self.ws.read_message(), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise TimeoutError(f"CDP {what}: nothing within {self.timeout:g} s") from None
        if raw is None:
            raise RuntimeError(f"CDP {what}: chromium closed the websocket")
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    async def call(self, method: str, **params: Any) -> dict:
        """Send one command and return its result; a CDP error becomes a RuntimeError."""
        self._id += 1
        await self.ws.write_message(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while (message := await self._receive(deadline, method)).get("id") != self._id:
            pass
        if "error" in message:
            raise RuntimeError(f"CDP {method} failed: {message['error']}")
        return message.get("result", {})

    async def wait_event(self, name: str, since: int = 0) -> dict:
        """The first `name` event at or after index `since` of `events`."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events[since:]:
                if event["method"] == name:
                    return event
            since = len(self.events)
            await self._receive(deadline, f"waiting for {name}")


def _remote_text(obj: dict) -> str:
    return str(obj["value"]) if "value" in obj else obj.get("description", obj.get("type", "?"))


def _errors(events: list[dict]) -> tuple[str, ...]:
    """The console errors, uncaught exceptions, error log entries and failed loads among `events`."""
    urls, errors = {}, []
    for event in events:
        method, p = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[p.get("requestId")] = p.get("request", {}).get("url", "?")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(f"console.{p['type']}: " + " ".join(_remote_text(a) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            errors.append(f"exception: {text}")
        elif method == "Log.entryAdded" and (entry := p.get("entry", {})).get("level") == "error":
            errors.append(f"log.{entry.get('source')}: {entry.get('text')} ({entry.get('url', '')})")
        elif method == "Network.loadingFailed":
            errors.append(f"network: {p.get('errorText')} ({urls.get(p.get('requestId'), '?')})")
    return tuple(errors)


class HeadlessChromium:
    """Headless chromium as a subprocess: `with HeadlessChromium() as browser: browser.open(path)`."""

    def __init__(self, binary: str | None = None, startup_timeout: float = 30.0) -> None:
        self.binary, self.startup_timeout = binary, startup_timeout
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self._tmp: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> HeadlessChromium:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start chromium and wait until it writes its DevTools port."""
        self._tmp = Path(tempfile.mkdtemp(prefix="headless-chromium-"))
        profile, log = self._tmp / "profile", self._tmp / "stderr.log"
        cmd = [self.binary or ensure_chromium(), *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        with log.open("wb") as out:  # a new session, so that close() can stop chromium's helpers too
            self.process = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            lines = port_file.read_text().split("\n") if port_file.is_file() else []
            if lines and lines[0].strip().isdigit():
                self.port = int(lines[0])
                return
            time.sleep(0.1)
        code, tail = self.process.poll(), log.read_text(errors="replace")[-3000:]
        state = "still running" if code is None else f"exited with {code}"
        raise RuntimeError(
            f"chromium wrote no DevToolsActivePort in {self.startup_timeout:g} s ({state}):\n{tail}"
        )

    def close(self) -> None:
        """Stop chromium (terminate, then kill) and remove its temporary profile."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            try:  # chromium's helpers (zygote, renderers) share its process group, whose id is its pid
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _http(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def open(self, url_or_path: str | os.PathLike[str], width: int = 1280, timeout: float = 60) -> PageReport:
        """Load a URL or file in a new tab and report its images, errors and full-page screenshot."""
        if self.port is None:
            raise RuntimeError("HeadlessChromium is not started; use it as a context manager")
        text = os.fspath(url_or_path)
        url = text if "://" in text or text.startswith(("about:", "data:")) else Path(text).resolve().as_uri()
        target = json.loads(self._http("/json/new?about:blank", method="PUT"))
        try:
            return asyncio.run(self._open(target["webSocketDebuggerUrl"], url, width, timeout))
        finally:
            self._http(f"/json/close/{target['id']}")

    async def _open(self, ws_url: str, url: str, width: int, timeout: float) -> PageReport:
        ws = await asyncio.wait_for(websocket_connect(ws_url, max_message_size=1 << 30), timeout)
        try:
            cdp = _Cdp(ws, timeout)
            for domain in ("Runtime", "Log", "Page", "Network"):
                await cdp.call(f"{domain}.enable")
            metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False}
            await cdp.call("Emulation.setDeviceMetricsOverride", **metrics)
            since = len(cdp.events)
            navigation = await cdp.call("Page.navigate", url=url)
            if navigation.get("errorText"):
                raise RuntimeError(f"CDP Page.navigate to {url} failed: {navigation['errorText']}")
            await cdp.wait_event("Page.loadEventFired", since)
            page = await cdp.call("Runtime.evaluate", expression=IMAGES_JS, returnByValue=True)
            if "exceptionDetails" in page:
                raise RuntimeError(f"CDP Runtime.evaluate failed: {page['exceptionDetails'].get('text')}")
            value = page["result"]["value"]
            metrics = await cdp.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            height = min(size["height"], MAX_SCREENSHOT_HEIGHT)
            clip = {"x": 0, "y": 0, "width": size["width"], "height": height, "scale": 1}
            shot = await cdp.call(
                "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
            )
        finally:
            ws.close()
        return PageReport(
            url=value["url"],
            title=value["title"],
            images=tuple(ImageInfo(**image) for image in value["images"]),
            console_errors=_errors(cdp.events),
            screenshot_png=base64.b64decode(shot["data"]),
        )
