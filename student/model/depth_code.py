"""The depth head's output code: the log space G of the paper (Sec. III-C).

G(m) = 0 and G(M) = M for the range [m, M] metres; the network predicts G(depth), training
compares in G, and export, evaluation and prediction map back with ``g_inverse``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MIN_LOG_DEPTH = 4.0
MAX_LOG_DEPTH = 80.0


def g_transform(depth: Tensor, m: float = MIN_LOG_DEPTH, big_m: float = MAX_LOG_DEPTH) -> Tensor:
    """Map metric depth to the log space G, where G(m) = 0 and G(M) = M.

    The log compresses far depths so that near-range errors weigh more, while keeping the values
    on the same numeric scale as metric depth.
    """
    return (torch.log(depth) - math.log(m)) * (big_m / (math.log(big_m) - math.log(m)))


def g_inverse(y: Tensor, m: float = MIN_LOG_DEPTH, big_m: float = MAX_LOG_DEPTH) -> Tensor:
    """Map a G-space value back to metric depth (inverse of :func:`g_transform`)."""
    return torch.exp(y * ((math.log(big_m) - math.log(m)) / big_m) + math.log(m))


__all__ = ["MAX_LOG_DEPTH", "MIN_LOG_DEPTH", "g_inverse", "g_transform"]
