"""The order in which training sees its samples: a pure function of (seed, epoch, step).

An epoch is ``iters_per_epoch`` optimiser steps of one *global* batch (``batch_size`` samples on
each of ``world_size`` ranks). The global sample order of an epoch is a concatenation of random
permutations of the training frames drawn from ``(seed, epoch)``, so every frame is seen equally
often whatever the folder size; rank r takes its slice of each global batch. Every sample also
carries its own augmentation seed, drawn from ``(seed, epoch, position in the epoch)``.

Hence a resumed run sees exactly what an uninterrupted one would, and one process with batch
2B sees exactly the samples that two ranks of batch B see together.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def epoch_order(num_rows: int, num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """``num_samples`` row indices: permutations of ``range(num_rows)`` drawn from (seed, epoch)."""
    if num_rows < 1:
        raise ValueError("no training frames to sample from")
    rng = np.random.default_rng([seed, epoch])
    rounds = -(-num_samples // num_rows)
    return np.concatenate([rng.permutation(num_rows) for _ in range(rounds)])[:num_samples]


def epoch_stream(num_rows: int, seed: int, epoch: int) -> Iterator[int]:
    """The same order as :func:`epoch_order`, endless and lazy: memory of one permutation, however
    many samples an epoch takes."""
    if num_rows < 1:
        raise ValueError("no training frames to sample from")
    rng = np.random.default_rng([seed, epoch])
    while True:
        yield from rng.permutation(num_rows).tolist()


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of an epoch's global order."""
    return int(np.random.SeedSequence([seed, epoch, position, 0x5EED]).generate_state(1)[0])


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(row, augmentation seed)`` for this rank, ``iters_per_epoch * batch_size`` of them."""

    def __init__(
        self,
        num_rows: int,
        iters_per_epoch: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.num_rows, self.iters, self.batch = num_rows, iters_per_epoch, batch_size
        self.seed, self.rank, self.world = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_batch(self) -> int:
        return self.batch * self.world

    def __len__(self) -> int:
        return self.iters * self.batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_stream(self.num_rows, self.seed, self.epoch)
        for step in range(self.iters):
            rows = list(itertools.islice(order, self.global_batch))  # this step's global batch
            start = step * self.global_batch + self.rank * self.batch
            for offset in range(self.batch):
                row = rows[self.rank * self.batch + offset]
                yield row, sample_seed(self.seed, self.epoch, start + offset)


__all__ = ["EpochSampler", "epoch_order", "epoch_stream", "sample_seed"]
