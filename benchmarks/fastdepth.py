"""A FastDepth-class baseline, re-declared from its published description (no code or weights reused).

Wofk et al., "FastDepth: Fast Monocular Depth Estimation on Embedded Systems", ICRA 2019: a
MobileNet (v1, width 1.0) encoder and the NNConv5 decoder, five stages of a 5x5 depthwise separable
convolution followed by x2 nearest-neighbour upsampling, with additive skip connections from the
encoder (stride 8, 4 and 2 maps), then a 1x1 convolution to one depth channel at full resolution.
This is the unpruned topology ("MobileNetSkipAdd"); the published, NetAdapt-pruned network exists
only as a pickled checkpoint. Every convolution is followed by batch norm and a ReLU (ReLU6 in the
encoder), as in the paper's MobileNet. Weights are random: the baseline is for speed only.

Reference size (research notes, peers.md section 2): 3.96 M parameters and 0.74 G multiply-adds at
224x224; ``tests/student/test_speed.py`` pins both within 5 %.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

# MobileNet v1 (width 1.0): (output channels, stride) of the 13 depthwise separable layers.
MOBILENET_V1 = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
DECODER_WIDTHS = (512, 256, 128, 64, 32)  # NNConv5: each stage halves the channels
SKIP_LAYERS = {5: 1, 3: 2, 1: 3}  # encoder layer -> decoder stage (0-based) whose upsampled output it joins
DECODER_KERNEL = 5


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu6: bool = False):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True),
    )


def _separable(cin: int, cout: int, kernel: int, stride: int = 1, relu6: bool = False) -> nn.Sequential:
    """Depthwise ``kernel`` x ``kernel`` convolution, then pointwise 1x1, each with BN + ReLU."""
    return nn.Sequential(
        _conv_bn(cin, cin, kernel, stride, groups=cin, relu6=relu6), _conv_bn(cin, cout, 1, relu6=relu6)
    )


class FastDepthClass(nn.Module):
    """MobileNet v1 encoder + NNConv5 (depthwise) decoder with additive skips; (N,3,H,W) -> (N,1,H,W).

    H and W must be multiples of 32.
    """

    def __init__(self) -> None:
        super().__init__()
        layers, cin = [_conv_bn(3, 32, 3, stride=2, relu6=True)], 32
        for cout, stride in MOBILENET_V1:
            layers.append(_separable(cin, cout, 3, stride, relu6=True))
            cin = cout
        self.encoder = nn.ModuleList(layers)  # layer 0 = stem; 1..13 separable
        stages = []
        for cout in DECODER_WIDTHS:
            stages.append(_separable(cin, cout, DECODER_KERNEL))
            cin = cout
        self.decoder = nn.ModuleList(stages)
        self.head = _conv_bn(cin, 1, 1)  # 1x1 to one channel (BN + ReLU, as the decoder's pointwise)

    def forward(self, x: Tensor) -> Tensor:
        skips: dict[int, Tensor] = {}
        for index, layer in enumerate(self.encoder):
            x = layer(x)
            if index in SKIP_LAYERS:
                skips[SKIP_LAYERS[index]] = x
        for stage, layer in enumerate(self.decoder):
            x = F.interpolate(layer(x), scale_factor=2, mode="nearest")
            if stage in skips:
                x = x + skips[stage]
        return self.head(x)


def build_fastdepth() -> FastDepthClass:
    """The FastDepth-class network with random weights, in eval mode."""
    return FastDepthClass().eval()


__all__ = ["FastDepthClass", "build_fastdepth"]
