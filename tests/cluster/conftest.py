"""The one-node SLURM cluster, started once for the tests that need it and stopped after them."""

from __future__ import annotations

import pytest

from tests.cluster.slurm import OneNodeSlurm, SlurmUnavailable


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node SLURM; a machine where it cannot start fails the test with the reason."""
    try:
        cluster = OneNodeSlurm(tmp_path_factory.mktemp("slurm")).start()
    except SlurmUnavailable as err:
        pytest.fail(f"cannot start a one-node SLURM cluster: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()
