"""Data-parallel training on PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc-per-node N --no-python edgedepth student train ...`` starts N processes; each
finds its rank in the environment torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``) and joins one process group: NCCL on CUDA, gloo on CPU.

A distributed step equals one step of a single process on the whole (effective) batch:
- each rank takes its slice of the global batch (``edgedepth.student.train.sampler``);
- batch norm normalises over the global batch: torch's SyncBatchNorm on CUDA, and on CPU, where
  SyncBatchNorm refuses to run, :class:`GlobalBatchNorm2d` (sums all-reduced, differentiably);
- the loss's batch-wide max and valid-pixel count are all-reduced (:class:`DistributedReducer`).
Only rank 0 writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from edgedepth.student.train.losses import BatchReducer


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank (its GPU), and the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo:
    """The torchrun environment of this process (world size 1 when not started by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes: NCCL when ``device_type`` is ``cuda`` (each rank
    on GPU ``LOCAL_RANK``), gloo otherwise; a no-op for a single process."""
    info = from_environment()
    if not info.enabled:
        return info
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(info.rank, info.world_size, info.local_rank, backend)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


class DistributedReducer(BatchReducer):
    """All-reduces the loss's batch statistics across ranks (they are constants: no gradient)."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size

    def max(self, value: Tensor) -> Tensor:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return value

    def sum(self, value: Tensor) -> Tensor:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value


def reducer_for(info: DistInfo) -> BatchReducer:
    return DistributedReducer(info.world_size) if info.enabled else BatchReducer()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, value: Tensor) -> Tensor:  # noqa: ANN001
        value = value.clone()
        dist.all_reduce(value)
        return value

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(value: Tensor) -> Tensor:
    """Differentiable all-reduce (sum) across the process group."""
    return _AllReduceSum.apply(value)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the samples of every rank, for CPU/gloo (torch's SyncBatchNorm needs a GPU).

    In training it all-reduces per-channel sums, sums of squares and counts with a differentiable
    all-reduce, so both the normalisation and its gradient are those of the global batch; running
    statistics are updated as ``nn.BatchNorm2d`` does (unbiased variance). Otherwise it is plain
    batch norm, and its state dict is that of ``nn.BatchNorm2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        # Two passes, as batch norm itself computes them: the mean, then the mean squared deviation
        # (a one-pass E[x^2] - E[x]^2 loses float32 precision where activations are large).
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        sums = all_reduce_sum(torch.cat([x.sum(dim=(0, 2, 3)), count]))
        channels, total = x.shape[1], sums[-1]
        mean = sums[:channels] / total
        centred = x - mean.view(1, channels, 1, 1)
        var = all_reduce_sum((centred * centred).sum(dim=(0, 2, 3))) / total
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 0.1
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
                self.num_batches_tracked.add_(1)
        shape = (1, channels, 1, 1)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d normalise over the global batch: SyncBatchNorm on CUDA, else ours."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            template = next(iter(child.state_dict().values()), None)
            replacement.to(device=device, dtype=template.dtype if template is not None else None)
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            convert_batchnorm(child, device)
    return model


def broadcast_object(value: object, info: DistInfo) -> object:
    """Rank 0's ``value`` on every rank (for decisions rank 0 makes, e.g. the resume point)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


__all__ = [
    "DistInfo",
    "DistributedReducer",
    "GlobalBatchNorm2d",
    "barrier",
    "broadcast_object",
    "convert_batchnorm",
    "from_environment",
    "init_distributed",
    "reducer_for",
    "shutdown",
]
