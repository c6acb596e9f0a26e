"""Batch clusters through dask-jobqueue: SLURM, PBS, SGE, LSF and HTCondor jobs as dask workers.

``--cluster slurm --jobs N --job-option KEY=VALUE ...`` builds the dask-jobqueue class of that
kind (``SLURMCluster``, ...) with the user's options over the defaults of their dask configuration
(``~/.config/dask/jobqueue.yaml``, as dask-jobqueue users expect), scales it to N jobs, and closes
it (which cancels every job still queued or running) when the work ends or fails. Jobs that cannot
start give one line naming the cluster, the options and what the scheduler said. Guide:
docs/cluster.md.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgedepth.common import check_choice, first_line

JOBQUEUES = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
}
"""--cluster kind -> dask_jobqueue class."""

LIST_OPTIONS = frozenset(
    {"job_extra_directives", "worker_extra_args", "job_script_prologue", "job_directives_skip"}
)
"""Options that take a list: repeating ``--job-option KEY=...`` appends to it."""

DEFAULT_JOB_TIMEOUT_S = 600.0
STATUS_COMMANDS = {"slurm": ["squeue", "-h", "-o", "%i %T %r", "-j"]}
"""How to ask the scheduler why a job has not started (job ids appended, comma-separated)."""


def parse_job_options(items: Sequence[str]) -> dict[str, Any]:
    """``["queue=gpu", "cores=8", "job_extra_directives=--gres=gpu:1"]`` -> keyword arguments of
    the dask-jobqueue class (integers and true/false converted; list options accumulate)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ValueError(f"--job-option {item!r}: expected KEY=VALUE, e.g. queue=gpu or memory=64GB")
        if key in LIST_OPTIONS:
            options.setdefault(key, []).append(value)
        else:
            options[key] = _scalar(value)
    return options


def _scalar(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        return value


def cluster_options(kind: str, device: str, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for the dask-jobqueue class: the user's options, workers running this
    Python, and for ``cuda`` the ``GPU`` resource on every worker (one worker per job) plus, on
    SLURM, a GPU request in the job script unless the options already ask for one."""
    import dask

    merged = {key: list(value) if isinstance(value, list) else value for key, value in options.items()}
    merged.setdefault("python", sys.executable)
    if device.startswith("cuda"):
        config_args = dask.config.get(f"jobqueue.{kind}.worker-extra-args", None) or []
        args = merged.setdefault("worker_extra_args", list(config_args))
        if "--resources" not in args:
            args += ["--resources", "GPU=1"]
        merged.setdefault("processes", 1)
        if kind == "slurm":
            config_directives = dask.config.get("jobqueue.slurm.job-extra-directives", None) or []
            directives = merged.setdefault("job_extra_directives", list(config_directives))
            if not any("gres" in d or "gpus" in d for d in directives):
                directives.append("--gres=gpu:1")
    return merged


def make_cluster(kind: str, device: str = "cpu", options: dict[str, Any] | None = None) -> Any:
    """A dask-jobqueue cluster of ``kind`` (no job submitted yet); one-line ValueErrors."""
    check_choice(kind, JOBQUEUES, "cluster")
    try:
        import dask
        import dask_jobqueue
    except ImportError:
        raise ValueError(f"--cluster {kind} needs dask-jobqueue: pip install dask-jobqueue") from None
    kwargs = cluster_options(kind, device, options or {})
    scheduler = dict(dask.config.get(f"jobqueue.{kind}.scheduler-options", None) or {})
    scheduler.setdefault("dashboard_address", ":0")  # several runs may share a login node
    kwargs.setdefault("scheduler_options", scheduler)
    try:
        return getattr(dask_jobqueue, JOBQUEUES[kind])(silence_logs="error", **kwargs)
    except TypeError as err:
        raise ValueError(f"{kind}: {first_line(err)} (check --job-option names)") from None
    except ValueError as err:
        text = first_line(err)
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", text)
        if unexpected:
            text = f"{JOBQUEUES[kind]} has no option {unexpected.group(1)!r} (check --job-option names)"
        if "cores and memory" in text:
            text = "set cores and memory per job (--job-option cores=N --job-option memory=8GB, or jobqueue.yaml)"
        raise ValueError(f"{kind}: {text}") from None


def job_script(kind: str, device: str = "cpu", options: dict[str, Any] | None = None) -> str:
    """The job script dask-jobqueue would submit (``--dry-run``); nothing is submitted."""
    cluster = make_cluster(kind, device, options)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def job_ids(cluster: Any) -> list[str]:
    """Scheduler job ids of the cluster's current jobs."""
    return sorted(str(job.job_id) for job in cluster.workers.values() if getattr(job, "job_id", None))


class _SubmitErrors(logging.Handler):
    """Collects the errors dask-jobqueue logs when a job submission fails (it does not raise)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + str(record.exc_info[1])
        self.messages.append(text)


def _scheduler_said(text: str) -> str:
    """The scheduler's own words from a failed submission ("stderr: sbatch: error: ...")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = [line for line in lines if "error" in line.lower() and not line.startswith(("Traceback", "File "))]
    return said[-1] if said else (lines[-1] if lines else text)


def _preflight(kind: str, cluster: Any, options: dict[str, Any]) -> None:
    """SLURM: ``sbatch --test-only`` on the job script, so a job the scheduler refuses (no such
    partition, account, too much memory) fails now, in one line, with SLURM's words."""
    if kind != "slurm":
        return
    if shutil.which("sbatch") is None:
        raise ValueError("slurm: sbatch not found on PATH (run on a SLURM login node)")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as handle:
        handle.write(cluster.job_script())
    try:
        result = subprocess.run(
            ["sbatch", "--test-only", handle.name], capture_output=True, text=True, check=False
        )
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if result.returncode:
        given = ", ".join(f"{k}={v}" for k, v in options.items() if k != "python") or "defaults"
        raise ValueError(f"slurm: the scheduler refused the job ({given}): {_scheduler_said(result.stderr)}")


def _job_states(kind: str, ids: list[str]) -> str:
    command = STATUS_COMMANDS.get(kind)
    if not command or not ids or shutil.which(command[0]) is None:
        return ""
    result = subprocess.run([*command, ",".join(ids)], capture_output=True, text=True, check=False)
    return "; ".join(line.strip() for line in result.stdout.splitlines() if line.strip())


def _wait_for_workers(client: Any, cluster: Any, kind: str, timeout: float, errors: _SubmitErrors) -> None:
    deadline = time.monotonic() + timeout
    while not client.scheduler_info(n_workers=-1)["workers"]:
        if errors.messages:
            raise ValueError(f"{kind}: job submission failed: {_scheduler_said(errors.messages[-1])}")
        if time.monotonic() > deadline:
            ids = job_ids(cluster)
            states = _job_states(kind, ids)
            raise ValueError(
                f"{kind}: no job started within {timeout:g} s (--job-timeout); jobs {', '.join(ids) or 'none'}"
                + (f": {states}" if states else "")
            )
        time.sleep(0.2)


@contextmanager
def jobqueue_client(
    kind: str,
    jobs: int,
    options: dict[str, Any] | None = None,
    device: str = "cpu",
    job_timeout: float = DEFAULT_JOB_TIMEOUT_S,
) -> Iterator[Any]:
    """A dask client of ``jobs`` batch jobs; the jobs end with the block (also on failure).

    The client has ``edgedepth_job_ids`` (every job id seen) and ``edgedepth_cluster`` (the kind).
    """
    from distributed import Client

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    options = dict(options or {})
    errors = _SubmitErrors()
    loggers = [
        logging.getLogger(name)
        for name in ("distributed.deploy.spec", "distributed.deploy", "tornado.application", "asyncio")
    ]
    for logger in loggers:
        logger.addHandler(errors)
    cluster = make_cluster(kind, device, options)
    try:
        _preflight(kind, cluster, options)
        cluster.scale(jobs=jobs)
        client = Client(cluster)
        client.edgedepth_cluster, client.edgedepth_job_ids = kind, set()
        try:
            _wait_for_workers(client, cluster, kind, job_timeout, errors)
            client.edgedepth_job_ids.update(job_ids(cluster))
            yield client
            client.edgedepth_job_ids.update(job_ids(cluster))
        finally:
            client.close()
    finally:
        for logger in loggers:
            logger.removeHandler(errors)
        cluster.close()  # cancels every job still queued or running


__all__ = [
    "DEFAULT_JOB_TIMEOUT_S",
    "JOBQUEUES",
    "cluster_options",
    "job_ids",
    "job_script",
    "jobqueue_client",
    "make_cluster",
    "parse_job_options",
]
