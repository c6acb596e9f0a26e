"""Workers: a dask client opened only when there is work for it, sized to that work."""

from __future__ import annotations

import pytest

from edgedepth.labelgen.client import PARALLEL_FRAMES, Workers, cpu_count


def test_small_work_runs_here_and_nothing_is_started() -> None:
    with Workers() as pool:
        assert pool.client_for(3, PARALLEL_FRAMES - 1) is None and pool.started is None
        assert pool.client(1) is None  # one task: not worth a cluster
    with Workers(workers=1) as pool:
        assert pool.client(10) is None and pool.client_for(10, 10**6) is None  # --workers 1: here


def test_a_cluster_is_sized_to_the_work_and_the_cap_is_said() -> None:
    notes: list[str] = []
    with Workers(workers=16, note=notes.append) as pool:
        client = pool.client(1, inline=False)
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
        assert pool.client(99) is client  # opened once
    assert notes == [
        "using 1 local worker(s), not 16: 1 task(s)"
        + (f" and {cpu_count()} cores" if cpu_count() < 16 else "")
    ]
    assert pool.started is None  # closed with the block


def test_worker_counts_are_bounded_at_the_door() -> None:
    with pytest.raises(ValueError, match="--workers must be between 1 and 256, got 0"):
        Workers(workers=0)
    with pytest.raises(ValueError, match="--workers must be between 1 and 256, got 100000"):
        Workers(workers=100000)
