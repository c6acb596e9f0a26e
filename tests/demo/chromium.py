"""The system Chromium driven by Playwright: find (or, as root, install) it, launch it, load a page.

No browser is ever downloaded: Playwright launches Debian's chromium through `executable_path`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, sync_playwright

BINARIES = ("chromium", "chromium-browser", "google-chrome")
# root needs --no-sandbox; the machine has no network, and without the background-networking flags
# chromium floods refused connections
FLAGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
)  # fmt: skip
VIEWPORT_HEIGHT = 800
IMAGES_JS = """() => Array.from(document.images, i => ({src: i.currentSrc || i.src,
    natural_width: i.naturalWidth, natural_height: i.naturalHeight, complete: i.complete, alt: i.alt}))"""
# the page's scroll width and, widest first, the elements whose right edge passes the viewport
OVERFLOW_JS = """() => {
    const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
        + Array.from(e.classList, c => '.' + c).join('')
        + (e.getAttribute('src') ? `[src="${e.getAttribute('src')}"]` : '');
    const path = e => e.parentElement && e.parentElement !== document.body
        ? path(e.parentElement) + ' > ' + name(e) : name(e);
    const view = document.documentElement.clientWidth;
    const wide = Array.from(document.body.querySelectorAll('*'), e => [e, e.getBoundingClientRect()])
        .filter(([e, r]) => r.right > view + 0.5)
        .map(([e, r]) => ({element: path(e), left: r.left, right: r.right, width: r.width}))
        .sort((a, b) => b.right - a.right || a.element.length - b.element.length);
    return {scroll_width: document.documentElement.scrollWidth, client_width: view, elements: wide};
}"""


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


def launch(playwright: Playwright, binary: str, timeout_s: float = 60) -> Browser:
    """Headless `binary` (the system chromium) with FLAGS; close it with `Browser.close()`."""
    return playwright.chromium.launch(
        executable_path=binary, headless=True, args=list(FLAGS), timeout=timeout_s * 1000
    )


@contextmanager
def running(binary: str | None = None) -> Iterator[Browser]:
    """Playwright's driver and a headless `binary` (default: ensure_chromium()); both stop on exit,
    an exception included."""
    with sync_playwright() as playwright:
        browser = launch(playwright, binary or ensure_chromium())
        try:
            yield browser
        finally:
            browser.close()


@dataclass(frozen=True)
class Image:
    """One `<img>` element as the page saw it (sizes in image pixels)."""

    src: str
    natural_width: int
    natural_height: int
    complete: bool
    alt: str

    @property
    def broken(self) -> bool:
        return self.natural_width == 0 or not self.complete


@dataclass(frozen=True)
class Overflow:
    """How wide the page is: its scroll width against the viewport's, in CSS pixels, and the elements
    whose right edge passes the viewport (`element`, `left`, `right`, `width`), farthest first."""

    scroll_width: int
    client_width: int
    elements: tuple[dict, ...]

    def describe(self) -> str:
        """A one-line account of what sticks out, for a failure message."""
        if not self.elements:
            return f"scrollWidth {self.scroll_width} px > {self.client_width} px, no element past the edge"
        first = self.elements[0]
        return (
            f"scrollWidth {self.scroll_width} px > {self.client_width} px: `{first['element']}` is "
            f"{first['width']:.0f} px wide and ends at {first['right']:.0f} px "
            f"({len(self.elements)} element(s) past the edge)"
        )


@dataclass
class Loaded:
    """An open page and what went wrong while it loaded: console errors, uncaught exceptions and
    failed requests, as lines (`errors` keeps growing while the page stays open)."""

    page: Page
    errors: list[str] = field(default_factory=list)

    @property
    def images(self) -> tuple[Image, ...]:
        return tuple(Image(**image) for image in self.page.evaluate(IMAGES_JS))

    @property
    def broken_images(self) -> tuple[Image, ...]:
        return tuple(image for image in self.images if image.broken)

    def overflow(self) -> Overflow:
        value = self.page.evaluate(OVERFLOW_JS)
        return Overflow(value["scroll_width"], value["client_width"], tuple(value["elements"]))

    def screenshot(self, path: str | os.PathLike[str] | None = None) -> bytes:
        """The full page as PNG bytes (also written to `path` if given)."""
        return self.page.screenshot(full_page=True, path=path, type="png")


def url_of(target: str | os.PathLike[str]) -> str:
    """A URL as is; a path as its file:// URL."""
    text = os.fspath(target)
    return text if "://" in text or text.startswith(("about:", "data:")) else Path(text).resolve().as_uri()


def _console_lines(message: ConsoleMessage) -> list[str]:
    """An error or failed assertion as one line; other console output as none."""
    if message.type not in ("error", "assert"):
        return []
    where = message.location.get("url", "")
    return [f"console.{message.type}: {message.text}" + (f" ({where})" if where else "")]


def _failed_line(request: Request) -> str:
    return f"network: {request.failure} ({request.url})"


@contextmanager
def opened(
    browser: Browser, target: str | os.PathLike[str], width: int = 1280, timeout_s: float = 60
) -> Iterator[Loaded]:
    """Load `target` (a URL or a file) in a fresh context `width` CSS pixels wide; yield it once the
    load event has fired, then close the context. A failed navigation raises playwright's Error."""
    context = browser.new_context(viewport={"width": width, "height": VIEWPORT_HEIGHT})
    try:
        context.set_default_timeout(timeout_s * 1000)
        page = context.new_page()
        loaded = Loaded(page)
        page.on("console", lambda message: loaded.errors.extend(_console_lines(message)))
        page.on("pageerror", lambda error: loaded.errors.append(f"exception: {error}"))
        page.on("requestfailed", lambda request: loaded.errors.append(_failed_line(request)))
        page.goto(url_of(target), wait_until="load")
        yield loaded
    finally:
        context.close()


__all__ = [
    "BINARIES",
    "FLAGS",
    "ChromiumUnavailable",
    "Image",
    "Loaded",
    "Overflow",
    "ensure_chromium",
    "launch",
    "opened",
    "running",
    "url_of",
]
