"""Where per-shard tasks run: a dask client (a local cluster, the user's scheduler, or batch jobs),
opened only when there is work for it, and sized to that work.

Every command that reads or writes shards (``labelgen run``, ``labelgen inspect``, ``calib fit``,
``calib apply``) goes through :class:`Workers`: ``workers.client(tasks)`` starts the cluster on
first use, with ``min(--workers or cores, tasks)`` local processes (saying so when it caps the
request), or returns None when the work is too small to be worth a cluster and no cluster was
asked for, so it runs in this process. A run with nothing to do starts nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

GPU = {"GPU": 1}
PARALLEL_FRAMES = 256
"""Reading fewer frame rows than this runs in the command's own process unless workers were asked
for (a local cluster costs 1-2 s to start; a frame row costs about 1-30 ms to verify or fit)."""
MAX_LOCAL_WORKERS = 256
"""More local worker processes than this is refused (each costs ~100 MB before any work)."""


@dataclass(frozen=True)
class ClusterSpec:
    """Where the work runs: batch jobs of ``kind`` (slurm, pbs, sge, lsf, htcondor) through
    dask-jobqueue, ``jobs`` of them, with the cluster class's own ``options``."""

    kind: str
    jobs: int = 1
    options: dict = field(default_factory=dict)
    job_timeout: float = 600.0


def cpu_count() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _gpu_count() -> int:
    import torch  # only for CUDA runs

    return torch.cuda.device_count()


@contextmanager
def dask_client(
    scheduler: str | None, workers: int | None, device: str, cluster: ClusterSpec | None = None
) -> Iterator[Any]:
    """A client of batch jobs (``cluster``), of the user's scheduler, or of a LocalCluster of
    ``workers`` processes (default: one a GPU for CUDA, one a core otherwise)."""
    import dask
    from distributed import Client, LocalCluster

    if cluster is not None:
        from edgedepth.labelgen.cluster import jobqueue_client

        if scheduler:
            raise ValueError("give --cluster or --scheduler, not both")
        if workers is not None:
            raise ValueError(
                "--workers sizes a local cluster; with --cluster use --jobs (and --job-option processes=N)"
            )
        with jobqueue_client(
            cluster.kind, cluster.jobs, cluster.options, device, cluster.job_timeout
        ) as client:
            yield client
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise ValueError(f"{scheduler}: scheduler unreachable ({type(err).__name__})") from None
        try:
            yield client
        finally:
            client.close()
        return
    gpu = device.startswith("cuda")
    if workers is None:
        workers = max(1, _gpu_count()) if gpu else cpu_count()
    with dask.config.set({"distributed.nanny.pre-spawn-environ": _worker_environ(workers)}):
        local = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: several runs may share a machine
            resources=GPU if gpu else None,
            silence_logs=logging.ERROR,
        )
    client = Client(local)
    try:
        yield client
    finally:
        client.close()
        local.close()


def _worker_environ(workers: int) -> dict[str, str]:
    """Set before local workers start: the machine's cores shared out among them, and malloc
    thresholds that let frame-sized buffers be reused. Dask sets MALLOC_TRIM_THRESHOLD_ to 64 KiB,
    which also freezes glibc's mmap threshold at 128 KiB: every frame buffer is then mapped and
    unmapped anew, and SGBM runs 20 % slower than outside dask."""
    threads = str(max(1, cpu_count() // workers))
    return {
        "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
        "MALLOC_MMAP_THRESHOLD_": str(64 * 2**20),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
    }


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Workers:
    """The dask client of one command, opened on first need (``with Workers(...) as pool``).

    ``client(tasks)`` returns the client, starting it if needed, or None when the work runs in
    this process: ``workers=1`` on a local machine, or fewer than ``inline_below`` tasks with no
    ``--workers``/``--scheduler``/``--cluster`` given. A local cluster gets ``min(asked, tasks)``
    processes, and at most one a core for CPU work; ``note`` receives one line when it caps.
    An already open dask ``Client`` may be given as ``client`` (it is used as is, never closed).
    """

    def __init__(
        self,
        scheduler: str | None = None,
        workers: int | None = None,
        device: str = "cpu",
        cluster: ClusterSpec | None = None,
        *,
        client: Any = None,
        inline_below: int = 2,
        note: Callable[[str], None] | None = _stderr,
    ) -> None:
        if workers is not None and not 1 <= workers <= MAX_LOCAL_WORKERS:
            raise ValueError(f"--workers must be between 1 and {MAX_LOCAL_WORKERS}, got {workers}")
        self.scheduler, self.workers, self.device, self.cluster = scheduler, workers, device, cluster
        self.inline_below, self.note = inline_below, note
        self._client, self._given = client, client is not None
        self._stack = ExitStack()

    @classmethod
    def of(cls, where: Any) -> Workers:
        """``where`` itself when it is Workers; a dask client wrapped; None: this process only."""
        if isinstance(where, Workers):
            return where
        return cls(client=where) if where is not None else cls(workers=1, note=None)

    @property
    def remote(self) -> bool:
        """Whether the work goes to a scheduler or batch jobs (not a cluster of this machine)."""
        return bool(self.scheduler or self.cluster) or self._given

    @property
    def started(self) -> Any:
        """The client if one is open, else None."""
        return self._client

    def client(self, tasks: int, inline: bool = True) -> Any:
        """The client for ``tasks`` tasks (started now if needed), or None to run them here
        (never None with ``inline=False``: work that must run on dask workers)."""
        if self._client is not None:
            return self._client
        if tasks < 1 and inline:
            return None
        if not self.remote and inline:
            if self.workers == 1 or (self.workers is None and tasks < self.inline_below):
                return None
        self._client = self._stack.enter_context(
            dask_client(self.scheduler, self._local_size(max(1, tasks)), self.device, self.cluster)
        )
        return self._client

    def client_for(self, tasks: int, frames: int) -> Any:
        """``client(tasks)`` for reading ``frames`` frame rows: here (None) unless a client is open,
        one was asked for (``--workers`` above 1, ``--scheduler``, ``--cluster``), or the work is at
        least ``PARALLEL_FRAMES`` rows, which is when a local cluster's start (1-2 s) pays off."""
        asked = self.remote or (self.workers or 1) > 1
        if self._client is not None or asked or frames >= PARALLEL_FRAMES:
            return self.client(tasks)
        return None

    def _local_size(self, tasks: int) -> int | None:
        if self.remote:
            return self.workers
        if self.device.startswith("cuda"):
            gpus = max(1, _gpu_count())
            size = min(self.workers or gpus, tasks)
            return size
        cores = cpu_count()
        size = min(self.workers or cores, tasks, cores)
        if self.workers is not None and size < self.workers and self.note is not None:
            why = [
                f"{tasks} task(s)" if tasks < self.workers else "",
                f"{cores} cores" if cores < self.workers else "",
            ]
            self.note(
                f"using {size} local worker(s), not {self.workers}: {' and '.join(w for w in why if w)}"
            )
        return size

    def close(self) -> None:
        self._stack.close()
        if not self._given:
            self._client = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["GPU", "PARALLEL_FRAMES", "ClusterSpec", "Workers", "cpu_count", "dask_client"]
