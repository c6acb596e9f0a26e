"""Fixtures of the fault tests (a small and a read-only tmpfs) and the catalogue's count, printed at
the end of a run that used it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reports = [r for group in terminalreporter.stats.values() for r in group if hasattr(r, "nodeid")]
    if not any(r.nodeid.startswith("tests/reliability/test_catalogue") for r in reports):
        return
    from tests.reliability.catalogue import CASES, FAMILIES

    counts = ", ".join(f"{family} {sum(c.family == family for c in CASES)}" for family in FAMILIES)
    terminalreporter.write_sep(
        "-", f"bad-input catalogue: {len(CASES)} cases ({counts}); docs/reliability.md"
    )


def mounted_tmpfs(mount: Path, options: str) -> Path:
    """Mount a tmpfs at ``mount`` (needs root, as in CI: fails there, skips elsewhere, with the reason)."""
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        if os.environ.get("CI"):
            pytest.fail("this test needs root to mount a tmpfs (CI runs as root)")
        pytest.skip("this test needs root to mount a tmpfs; CI runs it")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        message = f"cannot mount a tmpfs: {result.stderr.strip()}"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return mount


@contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs at ``mount`` for the block (``mounted_tmpfs``), unmounted at its end."""
    mounted_tmpfs(mount, options)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted for the test; unmounted at the end."""
    with tmpfs(tmp_path / "disk", "size=4m") as mount:
        yield mount


@pytest.fixture
def read_only_disk(tmp_path):
    """A read-only tmpfs (root ignores permission bits, so chmod cannot make a folder read-only)."""
    with tmpfs(tmp_path / "ro", "size=1m,ro") as mount:
        yield mount
