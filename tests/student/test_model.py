"""The student network: size and cost pinned to the paper, shapes, variants, weight loading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from edgedepth.student.model.build import build_student
from edgedepth.student.model.depth_code import g_inverse
from edgedepth.student.model.network import (
    ARCHS,
    VARIANTS,
    BlockOutput,
    KerasPadConv2d,
    count_macs,
    count_parameters,
    load_student_weights,
    output_size,
)
from edgedepth.student.train.losses import MultiScaleLoss

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


# Pinned per decoder: a change here changes the architecture and its checkpoints.
PINNED = {  # arch: (parameters, multiply-adds at 1056x320 with the class map, state-dict keys)
    "paper": (320_408, 1_991_473_440, 520),
    "fast": (337_728, 1_723_164_960, 466),
}


def test_the_default_decoder_is_the_papers():
    model = build_student("L")
    assert model.decoder[3].bottlenecks[-1].out_channels == 16 and ARCHS["paper"].widths == (24, 24, 24, 16)
    # the paper's description: 2 to 4 bottlenecks in every block
    assert [len(block.bottlenecks) for block in model.decoder] == [2, 2, 3, 4]
    assert all(2 <= n <= 4 for n in ARCHS["paper"].bottlenecks)


@pytest.mark.parametrize("arch", sorted(PINNED))
def test_parameters_and_multiply_adds_are_pinned(arch):
    params, macs, keys = PINNED[arch]
    model = build_student("L", num_classes=19, seg=True, arch=arch, return_classes=True)
    assert count_parameters(model) == params and len(model.state_dict()) == keys
    assert count_macs(model, KITTI) == macs == conv_macs_by_hooks(model, KITTI)
    if arch == "paper":  # the paper's budget: 0.32 M parameters, 2.1 G multiply-adds
        assert 0.30e6 <= params <= 0.34e6 and 1.9e9 <= macs <= 2.3e9


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_multiply_adds_equal_a_per_convolution_count_for_every_variant(variant, arch):
    model = build_student(variant, num_classes=19, seg=True, arch=arch, return_classes=True)
    assert count_macs(model, KITTI) == conv_macs_by_hooks(model, KITTI)


def test_multiply_adds_agree_with_torchs_flop_counter(full_model):
    from torch.utils.flop_counter import FlopCounterMode

    full_model.return_classes = True
    full_model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        full_model(torch.zeros(1, 3, *KITTI))
    assert count_macs(full_model, KITTI) == counter.get_total_flops() // 2 == PINNED["paper"][1]
    assert full_model.return_classes is True  # count_macs restores the model's settings
    full_model.return_classes = False


def test_keras_style_encoder_pads_bottom_right_and_keeps_parameters():
    torch.manual_seed(0)
    tv = build_student("L", encoder_style="torchvision").eval()
    keras = build_student("L", encoder_style="keras").eval()
    strided = [m for m in keras.encoder.modules() if isinstance(m, KerasPadConv2d)]
    assert len(strided) == 5 and all(m.padding == (0, 0) for m in strided)  # stem + 4 depthwise
    bn_eps = {m.eps for m in keras.encoder.modules() if isinstance(m, nn.BatchNorm2d)}
    assert bn_eps == {1e-3}
    assert list(keras.state_dict()) == list(tv.state_dict()) and count_parameters(keras) == count_parameters(
        tv
    )
    keras.load_state_dict(tv.state_dict())
    x = torch.rand(1, 3, 64, 96)
    conv = tv.encoder.features[0][0]
    # Keras: zero row below / column right, valid conv; PyTorch: one zero on every side.
    expected = nn.functional.conv2d(nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    torch.testing.assert_close(strided[0](x), expected)
    assert not torch.allclose(strided[0](x), conv(x))


def test_depth_range_sets_the_log_space(full_model):
    near = build_student("L", depth_range=(1.3, 3.0)).eval()
    near.load_state_dict(full_model.state_dict())
    x = torch.rand(1, 3, 64, 96)
    raw = near.decoder[-1].depth_head(near._decode(x)[-1])
    torch.testing.assert_close(near(x), g_inverse(raw, 1.3, 3.0))
    with pytest.raises(ValueError, match="depth range"):
        build_student("L", depth_range=(3.0, 1.0))
    with pytest.raises(ValueError, match="unknown decoder architecture 'big'; choose one of paper, fast"):
        build_student("L", arch="big")


@pytest.mark.parametrize("depth_range", [(1.0, 80.0), (1.3, 3.0)])
@pytest.mark.parametrize("depth_space", ["log", "linear"])
def test_a_new_model_starts_at_the_ranges_geometric_centre(depth_range, depth_space):
    """Every block's head starts at sqrt(m M) metres (G = M / 2 in log space), not at the range's
    floor: from there a KITTI model spent hundreds of steps climbing from 1 m."""
    torch.manual_seed(0)
    model = build_student("L", seg=False, depth_range=depth_range, depth_space=depth_space)
    x = torch.rand(2, 3, 64, 96)
    centre = math.sqrt(depth_range[0] * depth_range[1])
    with torch.no_grad():
        depth = model.eval()(x)
        blocks = model.train()(x)
    assert depth.median().item() == pytest.approx(centre, rel=0.05)
    start = depth_range[1] / 2 if depth_space == "log" else centre
    for block in blocks:
        assert block.depth.median().item() == pytest.approx(start, rel=0.05)


def test_count_macs_counts_the_class_map_of_a_multitask_model(full_model):
    depth_only = conv_macs_by_hooks(full_model, EDGE)  # return_classes off: no seg head
    assert count_macs(full_model, EDGE) == depth_only + 160 * 240 * 16 * 19  # D4's 16 channels x 19 classes


def test_state_dict_keys_are_stable(full_model):
    keys = list(full_model.state_dict())
    assert len(keys) == 520  # encoder 306 + 11 bottlenecks x 18 + 4 blocks x 4 head keys
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


def test_version_1_checkpoints_load_as_the_fast_decoder(tmp_path):
    """Checkpoints written before ``arch`` existed hold the decoder now called ``fast``."""
    from edgedepth.student.model.checkpoint import FORMAT, load_student, read_checkpoint
    from edgedepth.student.model.config import ModelConfig

    fast = ModelConfig(input_size=(64, 96), arch="fast")
    old_config = {
        k: v for k, v in fast.to_dict().items() if k not in ("arch", "encoder_style", "depth_range")
    }
    torch.manual_seed(0)
    model = fast.build()
    torch.save({"format": FORMAT, "format_version": 1, "model_config": old_config, "model": model.state_dict()},
               tmp_path / "v1.pt")  # fmt: skip
    assert read_checkpoint(tmp_path / "v1.pt")["model_config"]["arch"] == "fast"
    loaded, config = load_student(tmp_path / "v1.pt")
    assert config.arch == "fast" and config.depth_range == (4.0, 80.0)
    x = torch.rand(1, 3, 64, 96)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    torch.save(
        {"format": FORMAT, "format_version": 9, "model_config": old_config, "model": {}}, tmp_path / "v9.pt"
    )
    with pytest.raises(ValueError, match="format version 9, this edgedepth reads 1 and 2"):
        read_checkpoint(tmp_path / "v9.pt")
