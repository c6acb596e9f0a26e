"""A real one-node SLURM cluster for the tests: munge and SLURM from Debian's packages.

``OneNodeSlurm(folder).start()`` installs ``munge`` and ``slurm-wlm`` with apt when they are
missing (root only), writes a ``slurm.conf`` for this host (its CPUs and memory,
``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, free ports), starts ``munged``
(unless one already answers), ``slurmctld`` and ``slurmd`` as background processes and waits for
the node to be idle; ``stop()`` cancels every job and stops, by process id, what ``start`` started.
``SLURM_CONF`` is set for the client commands (sbatch, squeue, scancel) while it runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be started here (one line: why)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


def _install() -> None:
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable(
            "slurm-wlm and munge are not installed and apt-get cannot run here (needs root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "munge", "slurm-wlm"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode:
            raise SlurmUnavailable(
                f"{' '.join(command)} failed: {(result.stderr or result.stdout).strip()[-300:]}"
            )


def _munge_works() -> bool:
    if not shutil.which("munge"):
        return False
    return subprocess.run(["munge", "-n"], capture_output=True, check=False).returncode == 0


class OneNodeSlurm:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.previous_conf = os.environ.get("SLURM_CONF")

    def start(self) -> OneNodeSlurm:
        _install()
        self.folder.mkdir(parents=True, exist_ok=True)
        if not _munge_works():
            key = Path("/etc/munge/munge.key")
            if not key.exists():
                subprocess.run(
                    ["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True
                )
            for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
                Path(folder).mkdir(parents=True, exist_ok=True)
            self._spawn(["munged", "--foreground", "--force"], "munged")
            self._wait(_munge_works, "munged to answer")
        host = socket.gethostname()
        state = self.folder
        for sub in ("ctld", "spool"):
            (state / sub).mkdir(exist_ok=True)
        self.conf.write_text(
            "\n".join([
                "ClusterName=edgedepth-test",
                f"SlurmctldHost={host}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "ReturnToService=2",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                f"SlurmctldPidFile={state}/slurmctld.pid",
                f"SlurmdPidFile={state}/slurmd.pid",
                f"SlurmdSpoolDir={state}/spool",
                f"StateSaveLocation={state}/ctld",
                f"SlurmctldLogFile={state}/slurmctld.log",
                f"SlurmdLogFile={state}/slurmd.log",
                "MpiDefault=none",
                "JobCompType=jobcomp/none",
                "AccountingStorageType=accounting_storage/none",
                "KillWait=5",
                f"NodeName={host} CPUs={os.cpu_count() or 1} RealMemory={int(_memory_mb() * 0.8)} State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            ]) + "\n"
        )  # fmt: skip
        os.environ["SLURM_CONF"] = str(self.conf)
        self._spawn(["slurmctld", "-D", "-c", "-f", str(self.conf)], "slurmctld")
        self._wait(lambda: self._sinfo() != "", "slurmctld to answer")
        self._spawn(["slurmd", "-D", "-f", str(self.conf)], "slurmd")
        self._wait(lambda: self._sinfo() == "idle", "the node to be idle")
        return self

    def _spawn(self, command: list[str], name: str) -> None:
        log = open(self.folder / f"{name}.out", "wb")  # noqa: SIM115  (closed with the process)
        self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))

    def _sinfo(self) -> str:
        result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    def _wait(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = " | ".join(p.read_text()[-200:] for p in self.folder.glob("*.out"))
                self.stop()
                raise SlurmUnavailable(f"timed out waiting for {what}: {logs.strip()}")
            time.sleep(0.2)

    def queue(self) -> list[str]:
        """Job ids in the queue (pending or running)."""
        result = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=False)
        return result.stdout.split()

    def stop(self) -> None:
        if self.procs and self.conf.exists() and shutil.which("scancel"):
            subprocess.run(["scancel", "--user", "root"], capture_output=True, check=False)
            deadline = time.monotonic() + 30
            while self.queue() and time.monotonic() < deadline:  # let slurmd end the job steps
                time.sleep(0.2)
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        if self.previous_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self.previous_conf


def main() -> None:
    """``python -m tests.cluster.slurm [FOLDER]``: start a one-node SLURM here and keep it up until Ctrl-C."""
    import signal
    import sys
    import tempfile

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="slurm-"))
    try:
        cluster = OneNodeSlurm(folder).start()
    except SlurmUnavailable as err:
        sys.exit(f"cannot start a one-node SLURM cluster: {err}")
    print(
        f"SLURM is up (partition {PARTITION}); in another shell:\n  export SLURM_CONF={cluster.conf}",
        flush=True,
    )
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
