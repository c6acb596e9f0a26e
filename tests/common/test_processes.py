"""Temporary files of killed writers: named by host and pid, removed once their writer is gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from edgedepth.common import STALE_TMP_S, remove_stale_temps, write_text_atomic, writer_alive


def test_a_killed_writers_temporary_sibling_goes_and_a_live_ones_stays(tmp_path):
    target = tmp_path / ".verified.json"
    write_text_atomic(target, "{}\n")
    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        live = tmp_path / f"..verified.json.tmp-{host}-{child.pid}-aaaa"
        gone = tmp_path / f"..verified.json.tmp-{host}-{dead.pid}-bbbb"
        legacy = tmp_path / f"..verified.json.tmp-{dead.pid}-cccc"  # before the host was in the name
        other_young = tmp_path / "..verified.json.tmp-elsewhere-1-dddd"
        other_old = tmp_path / "..verified.json.tmp-elsewhere-2-eeee"
        unrelated = tmp_path / f".report.json.tmp-{host}-{dead.pid}-ffff"
        for path in (live, gone, legacy, other_young, other_old, unrelated):
            path.write_text("half")
        old = time.time() - STALE_TMP_S - 60
        os.utime(other_old, (old, old))
        assert writer_alive(live) and not writer_alive(gone)
        assert remove_stale_temps(target) == 3
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([target.name, live.name, other_young.name, unrelated.name])
    finally:
        child.kill()
        child.wait()


def test_an_atomic_write_names_its_host_and_pid_and_leaves_nothing(tmp_path, monkeypatch):
    seen = []
    original = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return original(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_text_atomic(tmp_path / "report.json", "{}\n")
    monkeypatch.undo()
    assert seen and seen[0].startswith(f".report.json.tmp-{socket.gethostname()}-{os.getpid()}-")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
