"""Fixtures for the browser tests: the system Chromium, and a Playwright-driven browser per module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.demo.chromium import ChromiumUnavailable, ensure_chromium, running


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; skip without one unless we are root, who can (and must) install it."""
    try:
        return ensure_chromium()
    except ChromiumUnavailable as exc:
        if os.geteuid() != 0:
            pytest.skip(str(exc))
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    """One headless chromium per module (not per session: a session fixture would start before, and
    idle through, test_demo's module fixture that runs the demo); Playwright's driver and the browser
    stop at its end."""
    with running(chromium) as started:
        yield started
