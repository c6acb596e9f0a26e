"""The student network: size and cost pinned to the paper, shapes, variants, weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from student.losses import MultiScaleLoss, g_inverse
from student.model import (
    VARIANTS,
    BlockOutput,
    build_student,
    count_macs,
    count_parameters,
    load_student_weights,
    output_size,
)

KITTI = (320, 1056)  # (height, width): the paper's training size
EDGE = (320, 480)  # the paper's Table VI size


def conv_macs_by_hooks(model: nn.Module, size: tuple[int, int]) -> int:
    """Independent MAC count: out elements x kernel area x in-channels / groups for every conv."""
    total = 0

    def hook(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * kh * kw * module.in_channels // module.groups

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, *size))
    for handle in handles:
        handle.remove()
    return total


@pytest.fixture(scope="module")
def full_model() -> nn.Module:
    torch.manual_seed(0)
    return build_student("L", num_classes=19, seg=True)


def test_full_model_has_the_papers_parameter_count(full_model):
    params = count_parameters(full_model)
    assert 0.30e6 <= params <= 0.34e6  # paper: 0.32 M
    assert params == 337_728  # pinned: a change here changes the architecture and its checkpoints


def test_full_model_multiply_adds_at_1056x320(full_model):
    full_model.return_classes = True
    macs = count_macs(full_model, KITTI)
    assert 1.7e9 <= macs <= 2.5e9  # paper: 2.1 G
    assert macs == conv_macs_by_hooks(full_model, KITTI)
    assert full_model.return_classes is True  # count_macs restores the model's settings
    full_model.return_classes = False


def test_count_macs_counts_the_class_map_of_a_multitask_model(full_model):
    depth_only = conv_macs_by_hooks(full_model, EDGE)  # return_classes off: no seg head
    assert count_macs(full_model, EDGE) == depth_only + 160 * 240 * 24 * 19


def test_state_dict_keys_are_stable(full_model):
    keys = list(full_model.state_dict())
    assert len(keys) == 466  # encoder 306 + 8 bottlenecks x 18 + 4 blocks x 4 head keys
    assert keys[0] == "encoder.features.0.0.weight"
    assert "encoder.features.17.conv.2.weight" in keys and "encoder.features.18.0.weight" not in keys
    assert keys[-4:] == [
        "decoder.3.depth_head.weight",
        "decoder.3.depth_head.bias",
        "decoder.3.seg_head.weight",
        "decoder.3.seg_head.bias",
    ]
    assert {k.split(".")[1] for k in keys if k.startswith("decoder.")} == {"0", "1", "2", "3"}


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (KITTI, [(20, 66), (40, 132), (80, 264), (160, 528)]),
        (EDGE, [(20, 30), (40, 60), (80, 120), (160, 240)]),
    ],
)
def test_training_forward_returns_every_block(full_model, size, expected):
    full_model.train()
    outputs = full_model(torch.rand(2, 3, *size))
    assert isinstance(outputs, tuple) and all(isinstance(o, BlockOutput) for o in outputs)
    assert [tuple(o.depth.shape) for o in outputs] == [(2, 1, h, w) for h, w in expected]
    assert [tuple(o.seg.shape) for o in outputs] == [(2, 19, h, w) for h, w in expected]


@pytest.mark.parametrize(
    ("variant", "expected"), [("L", (160, 240)), ("M", (80, 120)), ("S", (40, 60)), ("XS", (20, 30))]
)
def test_variants_inference_output(variant, expected):
    model = build_student(variant, return_classes=True).eval()
    depth, classes = model(torch.rand(1, 3, *EDGE))
    assert tuple(depth.shape) == (1, 1, *expected) and output_size(variant, *EDGE) == expected
    assert tuple(classes.shape) == (1, *expected) and classes.dtype == torch.int64
    assert int(classes.min()) >= 0 and int(classes.max()) < 19
    assert torch.all(depth > 0)


def test_inference_depth_is_g_inverse_of_the_last_depth_head(full_model):
    x = torch.rand(1, 3, *EDGE)
    full_model.train()
    full_model.apply(lambda m: m.eval() if isinstance(m, nn.BatchNorm2d) else None)
    g_space = full_model(x)[-1].depth
    full_model.eval()
    torch.testing.assert_close(full_model(x), g_inverse(g_space))


def test_variant_names_and_block_counts():
    assert VARIANTS == {"L": 4, "M": 3, "S": 2, "XS": 1}
    assert [len(build_student(v).decoder) for v in ("L", "M", "S", "XS")] == [4, 3, 2, 1]
    assert len(build_student("xs").decoder) == 1
    with pytest.raises(ValueError, match="unknown variant 'XL'"):
        build_student("XL")


def test_full_checkpoint_loads_into_smaller_variants_as_the_matching_subset(full_model):
    x = torch.rand(1, 3, *EDGE)
    full_model.eval()
    reference = full_model.forward_blocks(x)
    for variant, blocks in VARIANTS.items():
        small = build_student(variant)
        load_student_weights(small, full_model.state_dict())
        small.eval()
        for got, want in zip(small.forward_blocks(x), reference[:blocks], strict=False):
            torch.testing.assert_close(got.depth, want.depth)
            torch.testing.assert_close(got.seg, want.seg)


def test_depth_only_model_loads_from_multitask_checkpoint(full_model, tmp_path):
    path = tmp_path / "student.pt"
    torch.save({"state_dict": full_model.state_dict()}, path)
    depth_only = build_student("M", seg=False)
    load_student_weights(depth_only, path)
    assert all(o.seg is None for o in depth_only.train()(torch.rand(1, 3, 64, 64)))
    with pytest.raises(ValueError, match="return_classes needs the segmentation head"):
        build_student("L", seg=False, return_classes=True)


def test_smaller_checkpoint_does_not_load_into_larger_variant(tmp_path):
    path = tmp_path / "s.pt"
    torch.save(build_student("S").state_dict(), path)
    with pytest.raises(ValueError, match=r"s\.pt: \d+ keys missing \(first: decoder\.2\."):
        load_student_weights(build_student("L"), path)


def test_wrong_class_count_is_named():
    with pytest.raises(ValueError, match=r"decoder\.0\.seg_head\.weight has shape \(7, 24, 1, 1\)"):
        load_student_weights(build_student("XS"), build_student("XS", num_classes=7).state_dict())


def test_torchvision_encoder_checkpoint_loads(tmp_path):
    torch.manual_seed(1)
    source = mobilenet_v2(weights=None, width_mult=0.35).state_dict()
    path = tmp_path / "mobilenet_v2_035.pth"
    torch.save({f"module.{k}": v for k, v in source.items()}, path)  # DataParallel prefix is removed
    model = build_student("L", encoder_weights=path)
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, source[key])


def test_encoder_checkpoint_of_another_width_is_refused(tmp_path):
    path = tmp_path / "mobilenet_v2_100.pth"
    torch.save(mobilenet_v2(weights=None, width_mult=1.0).state_dict(), path)
    with pytest.raises(
        ValueError,
        match=r"mobilenet_v2_100\.pth: features\.0\.0\.weight has shape "
        r"\(32, 3, 3, 3\), expected \(16, 3, 3, 3\); is it a width_mult=0\.35",
    ):
        build_student("L", encoder_weights=path)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((375, 1242), "input height 375 is not a multiple of 32; nearest valid heights: 352 or 384"),
        ((320, 1241), "input width 1241 is not a multiple of 32; nearest valid widths: 1216 or 1248"),
        ((20, 64), "input height 20 is not a multiple of 32; nearest valid heights: 32"),
    ],
)
def test_bad_input_size_names_the_nearest_valid_sizes(full_model, size, message):
    with pytest.raises(ValueError, match=message):
        full_model.eval()(torch.rand(1, 3, *size))


def test_every_parameter_gets_a_finite_gradient_from_the_loss():
    torch.manual_seed(2)
    model = build_student("L").train()
    x = torch.rand(2, 3, 64, 128)
    depth = torch.rand(2, 64, 128) * 70 + 2
    depth[:, :10] = 0  # rows without LiDAR/teacher value
    labels = torch.randint(0, 19, (2, 64, 128))
    terms = MultiScaleLoss()(model(x), depth, labels)
    terms.total.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), name
