"""Data parallelism on gloo (CPU): a step on two ranks has the gradient of one step on the whole batch.

Two real processes (torch.multiprocessing + gloo) each take half of a batch whose halves differ in
their number of valid depth pixels, ignored class pixels and largest error; with the global batch
norm and the all-reduced loss statistics their DDP-averaged gradient equals the single-process
gradient on the whole batch. Without them it does not, which shows the test can fail.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from edgedepth.student.model.config import ModelConfig
from edgedepth.student.train.distributed import DistributedReducer, GlobalBatchNorm2d, convert_batchnorm
from edgedepth.student.train.losses import MultiScaleLoss

SIZE = (32, 64)


def make_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four samples in float64 (float32 rounding, amplified through 50 batch norms over a handful of
    values at stride 32, would hide an exact match)."""
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, *SIZE, generator=generator, dtype=torch.float64)
    depth = torch.rand(4, *SIZE, generator=generator, dtype=torch.float64) * 60 + 2
    depth[:2] *= (torch.rand(2, *SIZE, generator=generator) < 0.1).double()  # sparse first half
    depth[3, :, :20] = 75.0  # a far block: the largest error sits in the second half
    labels = torch.randint(0, 19, (4, *SIZE), generator=generator)
    labels[2:, :8] = 255  # more ignored pixels in the second half
    return images, depth, labels


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return ModelConfig(input_size=SIZE).build().double().train()


def _rank(rank: int, world: int, port: int, out: str, synced: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        net = model()
        if synced:
            convert_batchnorm(net, torch.device("cpu"))
        ddp = DistributedDataParallel(net)
        images, depth, labels = make_batch()
        share = slice(rank * 2, rank * 2 + 2)
        loss_fn = MultiScaleLoss(reducer=DistributedReducer(world)) if synced else MultiScaleLoss()
        loss = loss_fn(ddp(images[share]), depth[share], labels[share]).total
        loss.backward()
        if rank == 0:
            grads = {name: p.grad.clone() for name, p in net.named_parameters()}
            torch.save(grads, Path(out) / f"grads-{int(synced)}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_rank_grads(tmp_path: Path, synced: bool) -> dict[str, torch.Tensor]:
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path), synced), nprocs=2, join=True)
    return torch.load(tmp_path / f"grads-{int(synced)}.pt", weights_only=True)


@pytest.fixture(scope="module")
def single_grads() -> dict[str, torch.Tensor]:
    net = model()
    images, depth, labels = make_batch()
    MultiScaleLoss()(net(images), depth, labels).total.backward()
    return {name: p.grad.clone() for name, p in net.named_parameters()}


def _relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum(float((a[k] - b[k]).norm() ** 2) for k in b) ** 0.5
    return num / sum(float(b[k].norm() ** 2) for k in b) ** 0.5


def test_two_ranks_have_the_whole_batch_gradient(tmp_path, single_grads):
    grads = _two_rank_grads(tmp_path, synced=True)
    for name, grad in single_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-7, atol=1e-10, msg=name)


def test_without_global_statistics_the_gradient_differs(tmp_path, single_grads):
    grads = _two_rank_grads(tmp_path, synced=False)
    assert _relative_error(grads, single_grads) > 1e-2


def test_global_batchnorm_is_plain_batchnorm_outside_a_process_group():
    plain = torch.nn.BatchNorm2d(4)
    ours = GlobalBatchNorm2d(4)
    x = torch.randn(3, 4, 5, 6)
    torch.testing.assert_close(ours(x), plain(x))
    assert set(ours.state_dict()) == set(plain.state_dict())
    torch.testing.assert_close(ours.running_var, plain.running_var)
