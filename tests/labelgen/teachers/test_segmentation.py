"""Segmentation teacher: VainF module trees and geometry, checkpoint round trips, prediction, errors.

Weights are random (the real checkpoints cannot be downloaded here), so these tests pin names,
shapes, parameter counts and numerical equivalence, not accuracy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v2, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

from edgedepth.labelgen.teachers.deeplab_vainf import ARCHITECTURES, build_vainf_deeplab, guess_architecture
from edgedepth.labelgen.teachers.segmentation import (
    CITYSCAPES_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegConfig,
    input_multiple,
    load_segmenter,
    predict_segmentation,
    predict_segmentation_batch,
)

# Research note section 2.3, "Measured sizes" (19 classes, OS 16): (parameters, state_dict entries).
# deeplabv3plus_resnet50 is not in the note; it is derived from it: V3+ R101 minus the R101-R50
# difference the note's V3 rows give (18,992,128 parameters, 306 entries).
PINNED_SIZES = {
    "deeplabv3plus_mobilenet": (5_225_203, 356),
    "deeplabv3plus_resnet101": (58_753_459, 674),
    "deeplabv3_resnet101": (58_630_483, 668),
    "deeplabv3_resnet50": (39_638_355, 362),
    "deeplabv3_mobilenet": (5_113_363, 350),
    "deeplabv3plus_resnet50": (58_753_459 - 18_992_128, 674 - 306),
}


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and biases, and a strong last layer, so mistakes show in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        last_conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
        last_conv.weight.copy_(torch.randn(last_conv.weight.shape, generator=gen))
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2)
            elif tensor.ndim == 1:  # BN scale
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75)
    return model.eval()


def _vainf(arch: str, num_classes: int = 19, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize(build_vainf_deeplab(arch, num_classes), seed)


def _smp(arch: str, encoder: str, classes: int = 19, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cls = smp.DeepLabV3 if arch == "deeplabv3" else smp.DeepLabV3Plus
    model = cls(encoder_name=encoder, encoder_weights=None, classes=classes, encoder_output_stride=16)
    return _randomize(model, seed)


def _save_vainf(model: nn.Module, path) -> str:
    """VainF's training-script container: the weights under model_state, best_score a NumPy scalar."""
    torch.save(
        {
            "cur_itrs": 1000,
            "model_state": model.state_dict(),
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
            "scheduler_state": {"last_epoch": 1000, "max_iters": 30000, "power": 0.9},
            "best_score": np.float64(0.72),
        },
        path,
    )
    return str(path)


def _image(height: int = 65, width: int = 97, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _normalized(image: np.ndarray) -> torch.Tensor:
    x = (image.astype(np.float32) / 255.0 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def mobilenet_plus() -> nn.Module:
    return _vainf("deeplabv3plus_mobilenet")


@pytest.fixture(scope="module")
def mobilenet_plus_file(mobilenet_plus, tmp_path_factory) -> str:
    return _save_vainf(mobilenet_plus, tmp_path_factory.mktemp("vainf") / "best_deeplabv3plus_mobilenet.pth")


# --- module trees ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_vainf_parameter_and_entry_counts(arch):
    model = build_vainf_deeplab(arch)
    state = model.state_dict()
    assert (sum(p.numel() for p in model.parameters()), len(state)) == PINNED_SIZES[arch]
    assert guess_architecture(state) == arch


def test_vainf_keys():
    plus = build_vainf_deeplab("deeplabv3plus_mobilenet").state_dict()
    for key in (
        "backbone.low_level_features.0.0.weight",
        "backbone.low_level_features.1.conv.2.running_var",
        "backbone.high_level_features.4.conv.3.weight",
        "backbone.high_level_features.17.conv.2.weight",
        "classifier.project.0.weight",
        "classifier.aspp.convs.4.1.weight",
        "classifier.aspp.project.0.weight",
        "classifier.classifier.0.weight",
        "classifier.classifier.3.bias",
    ):
        assert key in plus, key
    assert not any(k.startswith("backbone.high_level_features.18") for k in plus)
    assert plus["classifier.classifier.0.weight"].shape == (256, 304, 3, 3)
    assert plus["classifier.aspp.convs.0.0.weight"].shape == (256, 320, 1, 1)

    v3 = build_vainf_deeplab("deeplabv3_resnet101").state_dict()
    for key in (
        "backbone.conv1.weight",
        "backbone.layer4.2.conv3.weight",
        "backbone.layer4.0.downsample.1.running_mean",
        "classifier.classifier.0.convs.1.0.weight",
        "classifier.classifier.0.project.0.weight",
        "classifier.classifier.1.weight",
        "classifier.classifier.4.bias",
    ):
        assert key in v3, key
    assert not any(k.startswith(("backbone.fc", "aux_classifier")) for k in v3)


# --- geometry ----------------------------------------------------------------------------------


def test_mobilenet_geometry_on_kitti_size():
    backbone = _vainf("deeplabv3plus_mobilenet").backbone
    features = backbone(torch.zeros(1, 3, 375, 1242))
    # VainF's unpadded first conv: 94x310 at stride 4 (torchvision's MobileNetV2 gives 94x311).
    assert features["low_level"].shape == (1, 24, 94, 310)
    assert features["out"].shape == (1, 320, 24, 78)
    depthwise = {i: block.conv[1][0] for i, block in backbone.high_level_features.named_children()}
    assert {i: conv.dilation[0] for i, conv in depthwise.items() if int(i) >= 13} == {
        "13": 1,
        "14": 1,  # first block of the 160-ch stage keeps the previous dilation
        "15": 2,
        "16": 2,
        "17": 2,
    }
    assert depthwise["14"].stride == (1, 1) and depthwise["7"].stride == (2, 2)


def test_inverted_residual_pads_input_before_expansion():
    """Against torchvision's block with the same weights: same interior, different border."""
    ours = _vainf("deeplabv3plus_mobilenet").backbone.low_level_features[3]  # 24->24, expand 6, residual
    theirs = mobilenet_v2(weights=None).features[3].eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 24, 20, 30, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert (a[..., 0, :] - b[..., 0, :]).abs().max() > 1e-2


def test_resnet101_v3_matches_torchvision_assembly():
    """Research note section 4: torchvision's pieces at OS 16 give bit-identical outputs."""
    ours = _vainf("deeplabv3_resnet101")
    resnet = resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
    reference = DeepLabV3(
        IntermediateLayerGetter(resnet, {"layer4": "out"}), DeepLabHead(2048, 19, atrous_rates=(6, 12, 18))
    ).eval()
    renamed = {k.replace("classifier.classifier.", "classifier.", 1): v for k, v in ours.state_dict().items()}
    reference.load_state_dict(renamed, strict=True)
    x = torch.randn(1, 3, 65, 97, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out, expected = ours(x), reference(x)["out"]
    assert out.shape == (1, 19, 65, 97) and torch.isfinite(out).all()
    assert torch.equal(out, expected)


# --- loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["deeplabv3plus_mobilenet", "deeplabv3plus_resnet101"])
def test_vainf_round_trip_is_exact(arch, mobilenet_plus, mobilenet_plus_file, tmp_path):
    if arch == "deeplabv3plus_mobilenet":
        original, path = mobilenet_plus, mobilenet_plus_file
    else:
        original = _vainf(arch, seed=3)
        path = _save_vainf(original, tmp_path / "best.pth")
    loaded = load_segmenter(SegConfig(format="vainf", arch=arch, checkpoint=path))
    assert not loaded.training
    x = torch.randn(2, 3, 65, 97, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, out = original(x), loaded(x)
    assert out.shape == (2, 19, 65, 97)
    assert torch.equal(out, expected)


def test_vainf_plain_prefixed_state_dict_loads(mobilenet_plus, tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({f"module.{k}": v for k, v in mobilenet_plus.state_dict().items()}, path)
    loaded = load_segmenter(SegConfig(format="vainf", arch="deeplabv3plus_mobilenet", checkpoint=str(path)))
    for key, value in mobilenet_plus.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("arch", "encoder", "nest"),
    [("deeplabv3", "resnet18", None), ("deeplabv3plus", "mobilenet_v2", "state_dict")],
)
def test_smp_round_trip_is_exact(arch, encoder, nest, tmp_path):
    original = _smp(arch, encoder, seed=5)
    path = tmp_path / "smp.pth"
    torch.save(original.state_dict() if nest is None else {nest: original.state_dict(), "epoch": 3}, path)
    loaded = load_segmenter(SegConfig(format="smp", arch=arch, encoder=encoder, checkpoint=str(path)))
    assert input_multiple(loaded) == 16
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
    image = _image()
    for got, want in zip(
        predict_segmentation(loaded, image), predict_segmentation(original, image), strict=True
    ):
        np.testing.assert_array_equal(got, want)


# --- prediction --------------------------------------------------------------------------------


def _check_against_reference(seg, conf, logits):
    probs = torch.softmax(logits[0], dim=0).numpy()
    assert seg.dtype == np.uint8 and conf.dtype == np.uint8 and seg.shape == conf.shape == probs.shape[1:]
    # The reference normalises in NumPy, so float rounding may differ: exact where it cannot matter.
    top2 = np.sort(probs, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-4
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(seg[clear], probs.argmax(0)[clear])
    expected_conf = np.round(probs.max(0) * 255)
    assert np.abs(conf - expected_conf).max() <= 1 and (conf == expected_conf).mean() > 0.99
    assert seg.max() < 19 and len(np.unique(seg)) > 1


def test_predict_vainf_odd_size(mobilenet_plus):
    image = _image(65, 97)
    seg, conf = predict_segmentation(mobilenet_plus, image)
    assert seg.shape == (65, 97)
    with torch.no_grad():
        logits = mobilenet_plus(_normalized(image))
    _check_against_reference(seg, conf, logits)


def test_predict_smp_pads_bottom_right_and_crops():
    model = _smp("deeplabv3plus", "resnet18", seed=7)
    image = _image(65, 97, seed=1)
    seg, conf = predict_segmentation(model, image)
    assert seg.shape == (65, 97)
    with torch.no_grad():
        logits = model(F.pad(_normalized(image), (0, 112 - 97, 0, 80 - 65)))[..., :65, :97]
    _check_against_reference(seg, conf, logits)


def test_batch_matches_single_images(mobilenet_plus):
    images = [_image(48, 80, seed=s) for s in (2, 3)]
    seg, conf = predict_segmentation_batch(mobilenet_plus, images)
    assert seg.shape == conf.shape == (2, 48, 80)
    for i, image in enumerate(images):
        one_seg, one_conf = predict_segmentation(mobilenet_plus, image)
        np.testing.assert_array_equal(seg[i], one_seg)
        assert np.abs(conf[i].astype(int) - one_conf).max() <= 1  # batched convs may round differently


def test_prediction_argument_errors(mobilenet_plus):
    with pytest.raises(ValueError, match="fp16 inference needs a CUDA device"):
        predict_segmentation(mobilenet_plus, _image(), precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        predict_segmentation(mobilenet_plus, _image(), precision="int8")
    with pytest.raises(ValueError, match="uint8"):
        predict_segmentation(mobilenet_plus, _image().astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predict_segmentation(mobilenet_plus, _image()[..., 0])
    training = build_vainf_deeplab("deeplabv3_mobilenet")
    with pytest.raises(ValueError, match="training mode"):
        predict_segmentation(training, _image())


# --- errors ------------------------------------------------------------------------------------


def _load_error(config: SegConfig) -> str:
    with pytest.raises(ValueError) as caught:
        load_segmenter(config)
    message = str(caught.value)
    assert "\n" not in message and config.checkpoint in message
    return message


def test_wrong_class_count_is_one_line(tmp_path):
    path = _save_vainf(_vainf("deeplabv3plus_mobilenet", num_classes=21), tmp_path / "voc.pth")
    message = _load_error(SegConfig(format="vainf", arch="deeplabv3plus_mobilenet", checkpoint=path))
    assert "classifier.classifier.3.weight: checkpoint (21, 256, 1, 1), model (19, 256, 1, 1)" in message
    assert "with 21 classes" in message


def test_wrong_architecture_is_one_line(mobilenet_plus_file):
    config = SegConfig(format="vainf", arch="deeplabv3plus_resnet101", checkpoint=mobilenet_plus_file)
    message = _load_error(config)
    assert "missing backbone.conv1.weight" in message
    assert "unexpected backbone.low_level_features.0.0.weight" in message
    assert "looks like VainF deeplabv3plus_mobilenet with 19 classes" in message


def test_wrong_format_is_one_line(mobilenet_plus_file):
    config = SegConfig(
        format="smp", arch="deeplabv3plus", encoder="mobilenet_v2", checkpoint=mobilenet_plus_file
    )
    message = _load_error(config)
    assert "missing encoder." in message and "unexpected backbone." in message


def test_smp_wrong_encoder_is_one_line(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(_smp("deeplabv3", "resnet18").state_dict(), path)
    message = _load_error(SegConfig(format="smp", arch="deeplabv3", encoder="resnet34", checkpoint=str(path)))
    assert "missing encoder.layer1.2." in message and "smp" in message


def test_config_validation_and_provenance():
    with pytest.raises(ValueError, match="unknown VainF architecture"):
        SegConfig(format="vainf", arch="deeplabv3plus_xception", checkpoint="x.pth")
    with pytest.raises(ValueError, match="encoder name"):
        SegConfig(format="smp", arch="deeplabv3", checkpoint="x.pth")
    with pytest.raises(ValueError, match="format"):
        SegConfig(format="onnx", arch="deeplabv3", checkpoint="x.pth")
    with pytest.raises(ValueError, match="unknown smp encoder"):
        load_segmenter(SegConfig(format="smp", arch="deeplabv3", encoder="resnet7", checkpoint=__file__))
    record = SegConfig(format="vainf", arch="deeplabv3plus_resnet101", checkpoint="best.pth").to_dict()
    assert record["atrous_rates"] == [6, 12, 18] and record["encoder_output_stride"] == 16
    assert record["classes"] == list(CITYSCAPES_CLASSES)
    json.dumps(record)
    smp_record = SegConfig(format="smp", arch="deeplabv3", encoder="resnet101", checkpoint="s.pth").to_dict()
    assert smp_record["encoder"] == "resnet101" and smp_record["atrous_rates"] == [12, 24, 36]
