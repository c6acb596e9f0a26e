"""Multi-scale depth + segmentation training loss of the student network (paper Sec. III-C).

Every decoder block predicts depth in the log space G (``edgedepth.student.model.depth_code.g_transform``) and, optionally,
segmentation logits. Each block is supervised at its own resolution: the full-resolution labels are
brought down to the block size inside the loss, and the per-block terms are combined as
``L = sum_i alpha_i * LD_i + beta_i * LS_i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgedepth.student.model import MAX_LOG_DEPTH, MIN_LOG_DEPTH, g_transform

IGNORE_INDEX = 255  # the Cityscapes ignore id (edgedepth.labelgen.cityscapes.IGNORE_ID)


def berhu(diff: Tensor, c: Tensor | float) -> Tensor:
    """Element-wise reverse Huber: ``|x|`` up to ``c``, ``(x^2 + c^2) / (2c)`` beyond.

    ``c == 0`` is allowed (then every ``|x| <= c`` means x == 0); the quadratic branch uses a clamped
    denominator so that neither the value nor the gradient of the unused branch becomes NaN.
    """
    c = torch.as_tensor(c, dtype=diff.dtype, device=diff.device)
    abs_diff = diff.abs()
    safe_c = c.clamp_min(torch.finfo(diff.dtype).tiny)
    quadratic = (diff * diff + c * c) / (2 * safe_c)
    return torch.where(abs_diff <= c, abs_diff, quadratic)


def _valid_depth(depth: Tensor) -> Tensor:
    return (depth > 0) & torch.isfinite(depth)


def _check_size(label_size: Sequence[int], size: Sequence[int], what: str) -> None:
    if label_size[0] < size[0] or label_size[1] < size[1]:
        raise ValueError(
            f"{what} of size {tuple(label_size)} is smaller than the prediction size {tuple(size)}"
        )


def downsample_depth(depth: Tensor, size: Sequence[int]) -> Tensor:
    """Bring a metric depth label (N,H,W) or (N,1,H,W) to ``size`` as (N,1,h,w).

    Each output cell is the mean of the valid (positive, finite) pixels it covers; a cell without any
    valid pixel is 0, i.e. invalid. Invalid pixels therefore never drag the average towards 0.
    """
    if depth.dim() == 3:
        depth = depth.unsqueeze(1)
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth label must be (N,H,W) or (N,1,H,W), got shape {tuple(depth.shape)}")
    size = (int(size[0]), int(size[1]))
    _check_size(depth.shape[-2:], size, "depth label")
    if not depth.is_floating_point():
        depth = depth.float()
    valid = _valid_depth(depth)
    if tuple(depth.shape[-2:]) == size:
        return torch.where(valid, depth, torch.zeros_like(depth))
    # Both pools divide by the same cell area, so their ratio is the mean over valid pixels.
    sums = F.adaptive_avg_pool2d(torch.where(valid, depth, torch.zeros_like(depth)), size)
    counts = F.adaptive_avg_pool2d(valid.to(depth.dtype), size)
    return torch.where(
        counts > 0, sums / counts.clamp_min(torch.finfo(depth.dtype).tiny), torch.zeros_like(sums)
    )


def downsample_labels(labels: Tensor, size: Sequence[int]) -> Tensor:
    """Bring an int64 label map (N,H,W) to ``size`` by nearest neighbour: out[i, j] = in[i*f, j*f].

    Nearest (not a vote) keeps real class ids and the ignore value 255 intact.
    """
    if labels.dim() == 4 and labels.shape[1] == 1:
        labels = labels.squeeze(1)
    if labels.dim() != 3:
        raise ValueError(f"segmentation labels must be (N,H,W), got shape {tuple(labels.shape)}")
    size = (int(size[0]), int(size[1]))
    _check_size(labels.shape[-2:], size, "segmentation label map")
    if tuple(labels.shape[-2:]) == size:
        return labels.long()
    # interpolate has no integer kernel; class ids are small integers, exact in float32.
    resized = F.interpolate(labels.unsqueeze(1).float(), size=size, mode="nearest")
    return resized.squeeze(1).long()


class BatchReducer:
    """How a loss sees "the batch": this process's samples (here) or all ranks' samples.

    The loss needs two batch-wide quantities: the BerHu threshold (a max) and the number of valid
    pixels (a sum). :class:`edgedepth.student.train.distributed.DistributedReducer` all-reduces them, so a loss
    computed on one rank's share of a batch has the gradient of the loss on the whole batch once
    DistributedDataParallel averages the ranks' gradients (hence ``world_size``).
    """

    world_size = 1

    def max(self, value: Tensor) -> Tensor:
        return value

    def sum(self, value: Tensor) -> Tensor:
        return value


LOCAL = BatchReducer()


def depth_loss(
    pred: Tensor,
    depth_label: Tensor,
    berhu_ratio: float = 0.2,
    depth_space: str = "log",
    reducer: BatchReducer = LOCAL,
    depth_range: tuple[float, float] = (MIN_LOG_DEPTH, MAX_LOG_DEPTH),
) -> Tensor:
    """Mean BerHu between a prediction (N,1,h,w) and a metric label at the same resolution.

    ``pred`` is in G-space (``depth_space="log"``, with G's m, M = ``depth_range`` metres) or metres
    (``"linear"``); the label is compared in the same space. The threshold c is ``berhu_ratio`` times the largest absolute error over the
    valid pixels of the whole batch, treated as a constant. Computed in float32 (also under
    autocast). Without any valid pixel the loss is a graph-connected 0.
    """
    if depth_space not in ("log", "linear"):
        raise ValueError(f"depth_space must be 'log' or 'linear', got {depth_space!r}")
    if depth_label.dim() == pred.dim() - 1:
        depth_label = depth_label.unsqueeze(1)
    if depth_label.shape != pred.shape:
        raise ValueError(f"depth label shape {tuple(depth_label.shape)} != prediction {tuple(pred.shape)}")
    pred = pred.float()
    valid = _valid_depth(depth_label)
    target = depth_label[valid].float()
    diff = pred[valid] - (g_transform(target, *depth_range) if depth_space == "log" else target)
    local_max = diff.detach().abs().max() if diff.numel() else diff.new_zeros(())
    c = berhu_ratio * reducer.max(local_max)
    count = reducer.sum(diff.new_tensor(float(diff.numel())))
    if not bool(count > 0):
        return pred.sum() * 0.0
    return berhu(diff, c).sum() / count * reducer.world_size


def seg_loss(logits: Tensor, labels: Tensor, reducer: BatchReducer = LOCAL) -> Tensor:
    """Pixel-wise cross-entropy of logits (N,C,h,w) vs int64 labels (N,h,w), ignoring 255.

    Averaged over the non-ignored pixels (of all ranks, with a distributed ``reducer``); a
    graph-connected 0 when every pixel is ignored.
    """
    if labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"segmentation labels shape {tuple(labels.shape)} do not match logits {tuple(logits.shape)}"
        )
    labels = labels.long()
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = reducer.sum((labels != IGNORE_INDEX).sum().to(total.dtype))
    return total / count.clamp_min(1) * reducer.world_size


@dataclass(frozen=True)
class LossTerms:
    """Result of :class:`MultiScaleLoss`: the differentiable total and detached per-block terms.

    ``seg`` is empty when no segmentation term was computed; otherwise it has one entry per block
    (0 for a block without segmentation output).
    """

    total: Tensor
    depth: tuple[Tensor, ...]
    seg: tuple[Tensor, ...]

    def as_dict(self) -> dict[str, float]:
        """Plain floats for logging: "total", "depth/i" and "seg/i" with 1-based block index."""
        out = {"total": float(self.total.detach())}
        out.update({f"depth/{i}": float(t) for i, t in enumerate(self.depth, start=1)})
        out.update({f"seg/{i}": float(t) for i, t in enumerate(self.seg, start=1)})
        return out


def _per_block(weights: float | tuple[float, ...], n_blocks: int, name: str) -> tuple[float, ...]:
    if isinstance(weights, tuple):
        if len(weights) != n_blocks:
            raise ValueError(f"{name} has {len(weights)} values but the network output has {n_blocks} blocks")
        return weights
    return (weights,) * n_blocks


class MultiScaleLoss(nn.Module):
    """Sum over decoder blocks of ``alpha_i * depth_loss + beta_i * seg_loss`` at each block's size.

    ``depth_space`` says what the depth heads predict (G-space over ``depth_range`` metres, or
    metres); ``reducer`` makes the batch-wide statistics span every rank of a distributed run (see
    :class:`BatchReducer`).
    """

    def __init__(
        self,
        alpha: float | Sequence[float] = 0.25,
        beta: float | Sequence[float] = 0.75,
        berhu_ratio: float = 0.2,
        depth_space: str = "log",
        reducer: BatchReducer = LOCAL,
        depth_range: tuple[float, float] = (MIN_LOG_DEPTH, MAX_LOG_DEPTH),
    ) -> None:
        super().__init__()
        if not 0 < depth_range[0] < depth_range[1]:
            raise ValueError(f"depth range must satisfy 0 < min < max metres, got {tuple(depth_range)}")
        self.depth_range = (float(depth_range[0]), float(depth_range[1]))
        if depth_space not in ("log", "linear"):
            raise ValueError(f"depth_space must be 'log' or 'linear', got {depth_space!r}")
        self.depth_space, self.reducer = depth_space, reducer
        if berhu_ratio <= 0:
            raise ValueError(f"berhu_ratio must be positive, got {berhu_ratio}")
        self.alpha = float(alpha) if isinstance(alpha, int | float) else tuple(float(a) for a in alpha)
        self.beta = float(beta) if isinstance(beta, int | float) else tuple(float(b) for b in beta)
        self.berhu_ratio = float(berhu_ratio)

    def forward(
        self,
        outputs: Sequence[tuple[Tensor, Tensor | None]],
        depth: Tensor,
        labels: Tensor | None = None,
    ) -> LossTerms:
        """Loss of the per-block outputs ``(depth_g, seg_logits_or_None)``, coarse to fine.

        ``depth`` is the full-resolution metric label (0 / non-finite = invalid), ``labels`` the
        optional int64 class map (255 = ignore).
        """
        n_blocks = len(outputs)
        if n_blocks == 0:
            raise ValueError("outputs is empty: expected one entry per decoder block")
        alphas = _per_block(self.alpha, n_blocks, "alpha")
        betas = _per_block(self.beta, n_blocks, "beta")
        if labels is not None and labels.dim() == 4 and labels.shape[1] == 1:
            labels = labels.squeeze(1)

        total: Tensor | None = None
        depth_terms: list[Tensor] = []
        seg_terms: list[Tensor | None] = []
        for entry, a, b in zip(outputs, alphas, betas, strict=True):
            pred_g, logits = entry[0], entry[1]
            size = pred_g.shape[-2:]
            label = downsample_depth(depth, size)
            ld = depth_loss(pred_g, label, self.berhu_ratio, self.depth_space, self.reducer, self.depth_range)
            block = a * ld
            depth_terms.append(ld.detach())
            ls = None
            if logits is not None and labels is not None:
                ls = seg_loss(logits, downsample_labels(labels, logits.shape[-2:]), self.reducer)
                block = block + b * ls
            seg_terms.append(None if ls is None else ls.detach())
            total = block if total is None else total + block

        assert total is not None
        seg: tuple[Tensor, ...] = ()
        if any(t is not None for t in seg_terms):
            seg = tuple(torch.zeros_like(total.detach()) if t is None else t for t in seg_terms)
        return LossTerms(total=total, depth=tuple(depth_terms), seg=seg)
