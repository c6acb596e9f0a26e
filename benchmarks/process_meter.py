"""Wall time and memory of a command through its whole process tree (for ``benchmarks/scale.py``).

How a command is measured: it runs in a session of its own; every ~50 ms the script reads, through
psutil and /proc, the driver (the ``edgedepth`` process itself) and all its descendants (dask nannies
and workers, DataLoader workers). ``driver MB``: the driver's peak resident set (VmHWM, exact up to
the last poll). ``tree MB``: the largest sum of the resident sets of the driver and its descendants
at one poll (sampled; a page shared by two processes counts twice). ``proc MB``: the largest peak
(VmHWM) of any one descendant. ``cpu s``: user + system time of the driver and of the descendants it
waited for (``wait4``). ``wall s``: start to exit. ``student train``'s first step is when its
progress bar first shows step 1 on stderr. ``load``: the 1-minute load average when the command
started (the machine may be shared).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil

POLL_S = 0.05
FIRST_STEP = re.compile(rb"epoch 1/\d+:[^\r\n]*?\b[1-9]\d*/\d+")


def _hwm_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a live process in MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _stop(pid: int) -> tuple[int, int, object]:
    """SIGTERM the command's session, SIGKILL it after 10 s; the ``wait4`` result."""
    _killpg(pid, signal.SIGTERM)
    for _ in range(int(10 / POLL_S)):
        result = os.wait4(pid, os.WNOHANG)
        if result[0]:
            return result
        time.sleep(POLL_S)
    _killpg(pid, signal.SIGKILL)
    return os.wait4(pid, 0)


def measure(argv: list[str], log: Path, timeout: float, first_step: bool = False) -> dict:
    """Run ``argv`` to its end (or ``timeout``), polling its process tree; see the module docstring."""
    load = os.getloadavg()[0]
    log.parent.mkdir(parents=True, exist_ok=True)
    peak_driver = peak_tree = peak_proc = 0.0
    procs, first_at, timed_out = 1, None, False
    with open(log, "wb") as out:
        out.write((" ".join(argv) + "\n").encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        driver = psutil.Process(proc.pid)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter() - start
            try:
                children, tree = driver.children(recursive=True), driver.memory_info().rss
            except psutil.Error:
                children, tree = [], 0
            for child in children:
                try:
                    tree += child.memory_info().rss
                except psutil.Error:
                    continue
                peak_proc = max(peak_proc, _hwm_mb(child.pid))
            peak_tree = max(peak_tree, tree / 2**20)
            peak_driver = max(peak_driver, _hwm_mb(proc.pid))
            procs = max(procs, 1 + len(children))
            if first_step and first_at is None and FIRST_STEP.search(log.read_bytes()):
                first_at = now
            if now > timeout:
                timed_out = True
                pid, status, usage = _stop(proc.pid)
                break
            time.sleep(POLL_S)
        wall = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    _killpg(proc.pid, signal.SIGKILL)  # a worker the driver left behind (the session is ours)
    lines = [line for line in log.read_text(errors="replace").splitlines()[1:] if line.strip()]
    return {
        "status": "timeout" if timed_out else "ok" if code == 0 else "failed",
        "exit": code,
        "wall_s": round(wall, 2),
        "driver_mb": round(peak_driver, 1),
        "tree_mb": round(peak_tree, 1),
        "proc_mb": round(peak_proc, 1) if peak_proc else None,
        "procs": procs,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "load": round(load, 2),
        "first_step_s": round(first_at, 2) if first_at is not None else None,
        "detail": "" if code == 0 else (lines[-1][-200:] if lines else "no output"),
    }


__all__ = ["FIRST_STEP", "POLL_S", "measure"]
