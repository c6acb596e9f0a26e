"""The border-stripe measure of docs/evaluation.md ("Border stripes"), for the tests that check it;
`benchmarks/border_stripes.py` has its own copy (tests import nothing from `benchmarks/`)."""

from __future__ import annotations

import numpy as np


def edge_step(depth: np.ndarray) -> tuple[float, float]:
    """(left, right) for one depth map (H, W metres, all > 0): the median log depth of the outer 1/32
    of the columns minus that of the next 3/32; +0.1 is a border 10 % farther than just inside it."""
    width = depth.shape[1]
    outer, inner = width // 32, width // 8
    log = np.log(depth)
    return (
        float(np.median(log[:, :outer]) - np.median(log[:, outer:inner])),
        float(np.median(log[:, -outer:]) - np.median(log[:, -inner:-outer])),
    )
