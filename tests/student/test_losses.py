"""Tests for edgedepth.student.train.losses, checked against an independent NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgedepth.student.model.depth_code import g_inverse, g_transform
from edgedepth.student.train.losses import (
    LossTerms,
    MultiScaleLoss,
    depth_loss,
    downsample_depth,
    downsample_labels,
)

SIZES = [(4, 6), (8, 12), (16, 24), (32, 48)]
LABEL_SIZE = (64, 96)
N_CLASSES = 5
M, BIG_M = 4.0, 80.0


# ---------------------------------------------------------------- NumPy reference
def np_g(d: np.ndarray) -> np.ndarray:
    return (np.log(d) - math.log(M)) * BIG_M / (math.log(BIG_M) - math.log(M))


def np_downsample_depth(depth: np.ndarray, h: int, w: int) -> np.ndarray:
    n, big_h, big_w = depth.shape
    fh, fw = big_h // h, big_w // w
    out = np.zeros((n, h, w))
    for b in range(n):
        for i in range(h):
            for j in range(w):
                cell = depth[b, i * fh : (i + 1) * fh, j * fw : (j + 1) * fw]
                vals = cell[(cell > 0) & np.isfinite(cell)]
                out[b, i, j] = vals.mean() if vals.size else 0.0
    return out


def np_downsample_labels(labels: np.ndarray, h: int, w: int) -> np.ndarray:
    fh, fw = labels.shape[1] // h, labels.shape[2] // w
    return labels[:, ::fh, ::fw]


def np_depth_loss(pred_g: np.ndarray, label: np.ndarray, ratio: float = 0.2) -> float:
    valid = label > 0
    if not valid.any():
        return 0.0
    x = pred_g[valid] - np_g(label[valid])
    c = ratio * np.abs(x).max()
    vals = [abs(v) if abs(v) <= c else (v * v + c * c) / (2 * c) for v in x]
    return float(np.mean(vals))


def np_seg_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    z = np.moveaxis(logits, 1, -1)  # (N,h,w,C)
    keep = labels != 255
    if not keep.any():
        return 0.0
    z, k = z[keep], labels[keep]
    lse = z.max(axis=1) + np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(k)), k]))


def np_total(outputs, depth, labels, alpha, beta) -> tuple[float, list[float], list[float]]:
    total, lds, lss = 0.0, [], []
    for i, (pred, logits) in enumerate(outputs):
        h, w = pred.shape[-2:]
        ld = np_depth_loss(pred[:, 0], np_downsample_depth(depth, h, w))
        ls = np_seg_loss(logits, np_downsample_labels(labels, h, w))
        lds.append(ld)
        lss.append(ls)
        total += alpha[i] * ld + beta[i] * ls
    return total, lds, lss


# ---------------------------------------------------------------- fixtures
def make_batch(seed: int = 0, invalid_frac: float = 0.3, requires_grad: bool = True):
    gen = torch.Generator().manual_seed(seed)
    n = 2
    depth = torch.rand(n, *LABEL_SIZE, generator=gen) * 70 + 1.0
    depth[torch.rand(n, *LABEL_SIZE, generator=gen) < invalid_frac] = 0.0
    labels = torch.randint(0, N_CLASSES, (n, *LABEL_SIZE), generator=gen)
    labels[torch.rand(n, *LABEL_SIZE, generator=gen) < 0.2] = 255
    outputs = []
    for h, w in SIZES:
        d = (torch.rand(n, 1, h, w, generator=gen) * 80).requires_grad_(requires_grad)
        s = torch.randn(n, N_CLASSES, h, w, generator=gen).requires_grad_(requires_grad)
        outputs.append((d, s))
    return tuple(outputs), depth, labels


def to_np(outputs):
    return [(d.detach().double().numpy(), s.detach().double().numpy()) for d, s in outputs]


def all_grads(outputs):
    return [t.grad for pair in outputs for t in pair if t is not None]


# ---------------------------------------------------------------- G transform
def test_g_transform_fixed_points_and_inverse():
    assert g_transform(torch.tensor(4.0)).item() == pytest.approx(0.0, abs=1e-6)
    assert g_transform(torch.tensor(80.0)).item() == pytest.approx(80.0, rel=1e-6)
    x = torch.rand(1000, dtype=torch.float64) * 119.5 + 0.5
    torch.testing.assert_close(g_inverse(g_transform(x)), x, rtol=1e-10, atol=0)
    assert np.allclose(g_transform(x).numpy(), np_g(x.numpy()))


# ---------------------------------------------------------------- downsampling helpers
def test_downsample_helpers_match_reference():
    _, depth, labels = make_batch(1, invalid_frac=0.8)
    depth[0, :16, :16] = 0.0  # a fully invalid coarse cell
    for h, w in SIZES:
        got = downsample_depth(depth, (h, w))
        assert got.shape == (2, 1, h, w)
        ref = np_downsample_depth(depth.double().numpy(), h, w)
        np.testing.assert_allclose(got[:, 0].numpy(), ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(
            downsample_labels(labels, (h, w)).numpy(), np_downsample_labels(labels.numpy(), h, w)
        )
    assert downsample_depth(depth, (4, 6))[0, 0, 0, 0] == 0.0
    assert downsample_depth(depth.unsqueeze(1), (8, 12)).shape == (2, 1, 8, 12)


def test_label_smaller_than_prediction_raises():
    with pytest.raises(ValueError, match="smaller"):
        downsample_depth(torch.ones(1, 4, 4), (8, 8))
    with pytest.raises(ValueError, match="smaller"):
        downsample_labels(torch.zeros(1, 4, 4, dtype=torch.long), (8, 8))


# ---------------------------------------------------------------- full loss vs reference
@pytest.mark.parametrize(
    ("alpha", "beta"),
    [(0.25, 0.75), ((0.1, 0.2, 0.3, 0.4), (1.0, 0.5, 0.25, 0.0))],
)
def test_multiscale_loss_matches_numpy_reference(alpha, beta):
    outputs, depth, labels = make_batch(2)
    terms = MultiScaleLoss(alpha=alpha, beta=beta)(outputs, depth, labels)
    al = alpha if isinstance(alpha, tuple) else (alpha,) * 4
    be = beta if isinstance(beta, tuple) else (beta,) * 4
    ref_total, ref_ld, ref_ls = np_total(to_np(outputs), depth.double().numpy(), labels.numpy(), al, be)

    assert isinstance(terms, LossTerms)
    assert terms.total.dim() == 0 and terms.total.requires_grad
    np.testing.assert_allclose(terms.total.item(), ref_total, rtol=1e-5)
    np.testing.assert_allclose([t.item() for t in terms.depth], ref_ld, rtol=1e-5)
    np.testing.assert_allclose([t.item() for t in terms.seg], ref_ls, rtol=1e-5)
    d = terms.as_dict()
    assert set(d) == {"total"} | {f"depth/{i}" for i in range(1, 5)} | {f"seg/{i}" for i in range(1, 5)}
    assert d["depth/1"] == pytest.approx(ref_ld[0], rel=1e-5)


def test_list_outputs_and_missing_seg():
    outputs, depth, labels = make_batch(3)
    no_seg = [(d, None) for d, _ in outputs]
    terms = MultiScaleLoss()(no_seg, depth, labels)
    assert terms.seg == ()
    assert set(terms.as_dict()) == {"total"} | {f"depth/{i}" for i in range(1, 5)}
    torch.testing.assert_close(terms.total, 0.25 * sum(terms.depth))
    with_seg = MultiScaleLoss()(list(outputs), depth, None)
    torch.testing.assert_close(with_seg.total, terms.total)


# ---------------------------------------------------------------- gradients
def test_gradients_finite_in_normal_case():
    outputs, depth, labels = make_batch(4)
    MultiScaleLoss()(outputs, depth, labels).total.backward()
    for g in all_grads(outputs):
        assert g is not None and torch.isfinite(g).all()
        assert g.abs().sum() > 0


def test_gradients_finite_without_valid_depth_or_seg_labels():
    outputs, depth, labels = make_batch(5)
    depth = torch.zeros_like(depth)  # no valid depth pixel in any block
    depth[0, 0, 0] = float("nan")  # non-finite labels are invalid too
    labels = torch.full_like(labels, 255)  # every seg pixel ignored
    terms = MultiScaleLoss()(outputs, depth, labels)
    assert terms.total.item() == 0.0
    terms.total.backward()
    for g in all_grads(outputs):
        assert g is not None and torch.isfinite(g).all() and (g == 0).all()


def test_depth_gradient_matches_reference_with_constant_threshold():
    outputs, depth, _ = make_batch(6)
    pred = outputs[1][0]
    label = downsample_depth(depth, pred.shape[-2:])
    depth_loss(pred, label).backward()
    # Reference: c is a constant, so dF/dx = sign(x) inside the threshold and x / c outside.
    p, lab = pred.detach().double().numpy(), label.double().numpy()
    valid = lab > 0
    x = p[valid] - np_g(lab[valid])
    c = 0.2 * np.abs(x).max()
    ref = np.zeros_like(p)
    ref[valid] = np.where(np.abs(x) <= c, np.sign(x), x / c) / valid.sum()
    np.testing.assert_allclose(pred.grad.numpy(), ref, rtol=1e-4, atol=1e-8)


# ---------------------------------------------------------------- invalid pixels have no effect
def test_invalid_cells_do_not_affect_loss_or_other_gradients():
    outputs, depth, labels = make_batch(7)
    depth[:, :16, :32] = 0.0  # makes cells invalid at every block resolution

    def run(outs):
        outs = tuple((d.detach().clone().requires_grad_(True), s.detach().clone()) for d, s in outs)
        total = MultiScaleLoss()(outs, depth, labels).total
        total.backward()
        return total.item(), [d.grad for d, _ in outs]

    perturbed = []
    for d, s in outputs:
        invalid = downsample_depth(depth, d.shape[-2:]) == 0
        assert invalid.any()
        perturbed.append((torch.where(invalid, d.detach() + 37.0, d.detach()), s))
    loss_a, grads_a = run(outputs)
    loss_b, grads_b = run(perturbed)
    assert loss_a == loss_b
    for (d, _), ga, gb in zip(outputs, grads_a, grads_b, strict=True):
        invalid = downsample_depth(depth, d.shape[-2:]) == 0
        assert (ga[invalid] == 0).all() and (gb[invalid] == 0).all()
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)


# ---------------------------------------------------------------- alpha / beta
def test_beta_zero_gives_weighted_depth_sum():
    outputs, depth, labels = make_batch(8)
    terms = MultiScaleLoss(beta=0.0)(outputs, depth, labels)
    torch.testing.assert_close(terms.total, 0.25 * sum(terms.depth))
    assert terms.total.item() > 0


def test_per_block_sequences_are_honoured():
    outputs, depth, labels = make_batch(9)
    base = MultiScaleLoss()(outputs, depth, labels)
    alpha, beta = [0.0, 1.0, 0.0, 2.0], [3.0, 0.0, 0.5, 0.0]
    terms = MultiScaleLoss(alpha=alpha, beta=beta)(outputs, depth, labels)
    expected = sum(a * d + b * s for a, b, d, s in zip(alpha, beta, base.depth, base.seg, strict=True))
    torch.testing.assert_close(terms.total.detach(), expected)


@pytest.mark.parametrize("kwargs", [{"alpha": (0.1, 0.2, 0.3)}, {"beta": [1.0] * 5}])
def test_wrong_number_of_weights_raises(kwargs):
    outputs, depth, labels = make_batch(10)
    with pytest.raises(ValueError, match="alpha|beta"):
        MultiScaleLoss(**kwargs)(outputs, depth, labels)


def test_label_smaller_than_block_raises_in_loss():
    outputs, depth, labels = make_batch(11)
    with pytest.raises(ValueError, match="smaller"):
        MultiScaleLoss()(outputs, depth[:, :16, :24], labels)


# ---------------------------------------------------------------- perfect prediction
def test_perfect_prediction_gives_zero_depth_loss():
    outputs, depth, labels = make_batch(12)
    perfect = []
    for d, s in outputs:
        lab = downsample_depth(depth, d.shape[-2:])
        target = torch.where(lab > 0, g_transform(lab.clamp_min(1e-6)), d.detach())
        perfect.append((target.clone().requires_grad_(True), s))
    terms = MultiScaleLoss(beta=0.0)(perfect, depth, labels)
    assert terms.total.item() == 0.0
    assert all(t.item() == 0.0 for t in terms.depth)
    terms.total.backward()
    for d, _ in perfect:
        assert torch.isfinite(d.grad).all()
    lab = downsample_depth(depth, (8, 12))
    assert depth_loss(g_transform(lab.clamp_min(1e-6)), lab).item() == 0.0
