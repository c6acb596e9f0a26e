"""DeepLabV3 / V3+ with the module trees of VainF/DeepLabV3Plus-Pytorch, so its checkpoints load strictly.

The public Cityscapes teachers (``deeplabv3plus_mobilenet``, ``deeplabv3plus_resnet101``) were
trained with VainF's code; their weights only give the published behaviour in a network with the
same parameter names *and* the same forward geometry. Neither smp nor torchvision provides the V3+
model (see the research note, teacher-checkpoints.md sections 2-4), so it is rebuilt here. The
ResNet backbone and the ASPP module come from torchvision, whose names and forward match VainF's.

Output stride 16 (every released checkpoint): ASPP rates 6/12/18; ResNet dilates only ``layer4``
(its first block keeps dilation 1); MobileNet dilates from block 14 on (block 14's depthwise conv
keeps the previous dilation). Output stride 8 (rates 12/24/36) follows the same rules one stage
earlier. The forward returns logits (B, C, H, W) resized to the input size with
``align_corners=False``; any input size works.

State-dict keys (19 classes):

ResNet backbone (torchvision ResNet under an IntermediateLayerGetter; no ``fc``/``avgpool``)::

    backbone.conv1.weight, backbone.bn1.*
    backbone.layer{1..4}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}.*, backbone.layer{1..4}.0.downsample.{0,1}.*

MobileNet backbone (VainF's MobileNetV2; original ``features`` indices kept)::

    backbone.low_level_features.0.{0,1}.*            3x3 stride-2 conv 3->32 (no padding), BN
    backbone.low_level_features.1.conv.{0,1,2}.*     expand ratio 1: dw (.0.0/.0.1), pw conv, BN
    backbone.low_level_features.{2,3}.conv.{0..3}.*  pw expand, dw, pw-linear conv, BN
    backbone.high_level_features.{4..17}.conv.{0..3}.*

DeepLabV3 head (``classifier.classifier`` is torchvision's DeepLabHead Sequential)::

    classifier.classifier.0.convs.{0..3}.{0,1}.*     ASPP 1x1 and dilated 3x3 branches (conv, BN)
    classifier.classifier.0.convs.4.{1,2}.*          ASPP image pooling (conv, BN)
    classifier.classifier.0.project.{0,1}.*          1x1 1280->256, BN
    classifier.classifier.{1,2}.*                    3x3 256->256, BN
    classifier.classifier.4.{weight,bias}            1x1 256->num_classes

DeepLabV3+ head::

    classifier.project.{0,1}.*                       1x1 low-level->48, BN
    classifier.aspp.convs.*, classifier.aspp.project.*
    classifier.classifier.{0,1}.*                    dense 3x3 304->256, BN
    classifier.classifier.3.{weight,bias}            1x1 256->num_classes
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead

ARCHITECTURES = (
    "deeplabv3plus_mobilenet",
    "deeplabv3plus_resnet101",
    "deeplabv3plus_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_mobilenet",
)
"""VainF builder names this module reproduces (the first two have public Cityscapes weights)."""

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
"""ASPP dilation rates per output stride, as VainF's builders set them."""

# MobileNetV2 inverted-residual stages: (expand ratio, out channels, blocks, stride).
_MOBILENET_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
_MOBILENET_STAGES += ((6, 160, 3, 2), (6, 320, 1, 1))
_LOW_LEVEL_END = 4  # features[0:4] are the stride-4 low-level features, features[4:18] the rest
_ASPP_DROPOUT = 0.1  # VainF's project dropout (torchvision uses 0.5); inactive in eval


def _fixed_padding(dilation: int, kernel_size: int = 3) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that keeps a dilated kernel's output aligned."""
    total = kernel_size + (kernel_size - 1) * (dilation - 1) - 1
    begin = total // 2
    return (begin, total - begin, begin, total - begin)


class ConvBNReLU6(nn.Sequential):
    """Unpadded conv (no bias), BN, ReLU6; keys ``0.weight`` and ``1.*``."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, dilation: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, 0, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block that zero-pads its *input* before the whole block, as VainF's variant does.

    Because the padding comes before the 1x1 expansion, the border the depthwise conv sees is
    ReLU6(BN(0)) rather than 0: this changes outputs against torchvision's block with equal weights.
    """

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(cin * expand_ratio)
        layers: list[nn.Module] = [] if expand_ratio == 1 else [ConvBNReLU6(cin, hidden)]
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, dilation, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.padding = _fixed_padding(dilation)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.pad(x, self.padding))
        return x + out if self.use_residual else out


def mobilenet_v2_features(output_stride: int = 16) -> nn.Sequential:
    """VainF's MobileNetV2 ``features[0:18]`` (the final 1280-channel conv is never used).

    Once the running stride reaches ``output_stride``, strides become dilations; the first block
    of each such stage keeps the previous dilation in its depthwise conv.
    """
    layers: list[nn.Module] = [ConvBNReLU6(3, 32, 3, stride=2)]
    cin, current_stride, dilation = 32, 2, 1
    for expand_ratio, cout, blocks, stage_stride in _MOBILENET_STAGES:
        previous_dilation = dilation
        if current_stride == output_stride:
            stride, dilation = 1, dilation * stage_stride
        else:
            stride, current_stride = stage_stride, current_stride * stage_stride
        for i in range(blocks):
            first = i == 0
            block_dilation = previous_dilation if first else dilation
            layers.append(InvertedResidual(cin, cout, stride if first else 1, block_dilation, expand_ratio))
            cin = cout
    return nn.Sequential(*layers)


class MobileNetBackbone(nn.Module):
    """``low_level_features`` (features[0:4], 24 ch, stride 4) and ``high_level_features`` (4..17)."""

    low_level_channels = 24
    out_channels = 320

    def __init__(self, output_stride: int = 16) -> None:
        super().__init__()
        features = mobilenet_v2_features(output_stride)
        # Slicing an nn.Sequential keeps the original indices as child names, hence in the keys.
        self.low_level_features = features[:_LOW_LEVEL_END]
        self.high_level_features = features[_LOW_LEVEL_END:]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.low_level_features(x)
        return {"low_level": low, "out": self.high_level_features(low)}


def resnet_backbone(depth: int, output_stride: int = 16) -> IntermediateLayerGetter:
    """torchvision ResNet-50/101 (no weights) returning ``layer1`` as low_level and ``layer4`` as out."""
    factory = {50: resnet50, 101: resnet101}[depth]
    resnet = factory(weights=None, replace_stride_with_dilation=[False, output_stride == 8, True])
    return IntermediateLayerGetter(resnet, return_layers={"layer1": "low_level", "layer4": "out"})


def _aspp(in_channels: int, rates: tuple[int, int, int]) -> ASPP:
    aspp = ASPP(in_channels, rates)
    aspp.project[3].p = _ASPP_DROPOUT
    return aspp


class DeepLabV3Head(nn.Module):
    """VainF's ``DeepLabHead``: torchvision's DeepLabHead Sequential under the name ``classifier``."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, int, int]) -> None:
        super().__init__()
        self.classifier = DeepLabHead(in_channels, num_classes, rates)
        self.classifier[0].project[3].p = _ASPP_DROPOUT

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(features["out"])


class DeepLabV3PlusHead(nn.Module):
    """VainF's ``DeepLabHeadV3Plus``: [48-ch low-level projection, ASPP resized to it] -> dense 3x3 -> 1x1."""

    def __init__(
        self, in_channels: int, low_level_channels: int, num_classes: int, rates: tuple[int, int, int]
    ) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(low_level_channels, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True)
        )
        self.aspp = _aspp(in_channels, rates)
        self.classifier = nn.Sequential(
            nn.Conv2d(48 + 256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, num_classes, 1),
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        low = self.project(features["low_level"])
        deep = self.aspp(features["out"])
        deep = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, deep], dim=1))


class VainFDeepLab(nn.Module):
    """``backbone`` + ``classifier``; logits resized to the input size (align_corners=False)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_vainf_deeplab(arch: str, num_classes: int = 19, output_stride: int = 16) -> VainFDeepLab:
    """The VainF model ``arch`` (one of ``ARCHITECTURES``) with random weights, in train mode."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown VainF architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    if output_stride not in ASPP_RATES:
        raise ValueError(f"VainF models support output stride 8 or 16, got {output_stride}")
    head_name, backbone_name = arch.split("_")
    rates = ASPP_RATES[output_stride]
    if backbone_name == "mobilenet":
        backbone: nn.Module = MobileNetBackbone(output_stride)
        in_channels, low_channels = MobileNetBackbone.out_channels, MobileNetBackbone.low_level_channels
    else:
        backbone = resnet_backbone(int(backbone_name.removeprefix("resnet")), output_stride)
        in_channels, low_channels = 2048, 256
    if head_name == "deeplabv3plus":
        head: nn.Module = DeepLabV3PlusHead(in_channels, low_channels, num_classes, rates)
    else:
        head = DeepLabV3Head(in_channels, num_classes, rates)
    return VainFDeepLab(backbone, head)


def guess_architecture(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Which VainF architecture a state dict's keys belong to (None when it is not VainF-shaped)."""
    if "backbone.low_level_features.0.0.weight" in state_dict:
        backbone = "mobilenet"
    elif "backbone.layer3.22.conv1.weight" in state_dict:
        backbone = "resnet101"
    elif "backbone.layer3.5.conv1.weight" in state_dict:
        backbone = "resnet50"
    else:
        return None
    if "classifier.project.0.weight" in state_dict:
        return f"deeplabv3plus_{backbone}"
    if "classifier.classifier.4.weight" in state_dict:
        return f"deeplabv3_{backbone}"
    return None
