"""PSMNet (stacked hourglass, Chang & Chen, CVPR 2018) as plain nn.Modules, for the public checkpoints.

The module tree reproduces the child names of the public release so its state dicts load strictly
once their ``module.`` prefix is removed. State-dict keys (514 with current torch, 429 in files
written before torch 0.4.1, which lack ``num_batches_tracked``; 5,224,768 parameters):

- ``feature_extraction.firstconv.{0,2,4}.{0,1}.*``: three conv+BN at 1/2 resolution.
- ``feature_extraction.layer{1,2,3,4}.N.conv1.0.{0,1}.*`` and ``.conv2.{0,1}.*``: residual blocks
  (3, 16, 3, 3 of them); ``layer2.0`` and ``layer3.0`` also have ``downsample.{0,1}.*``.
- ``feature_extraction.branch{1..4}.1.{0,1}.*``: the spatial-pyramid-pooling branches.
- ``feature_extraction.lastconv.0.{0,1}.*`` and ``lastconv.2.weight``.
- ``dres0.{0,2}.{0,1}.*``, ``dres1.{0,2}.{0,1}.*``: 3-D aggregation before the hourglasses.
- ``dres{2,3,4}.conv{1,3,4}.0.{0,1}.*``, ``.conv2.{0,1}.*``, ``.conv{5,6}.{0,1}.*``: the hourglasses.
- ``classif{1,2,3}.0.{0,1}.*`` and ``classif{1,2,3}.2.weight``: the three cost heads.

``*`` is ``weight`` for a convolution (none has a bias) and ``weight, bias, running_mean, running_var,
num_batches_tracked`` for a batch norm.

``align_corners`` applies to every bilinear (SPP) and trilinear (cost volume) upsampling: the 2018
checkpoints were trained when torch behaved as ``True``; later ones (torch >= 0.4.1) use ``False``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int, pad: int, dilation: int) -> nn.Sequential:
    """2-D convolution without bias followed by batch norm; a dilated conv pads by its dilation."""
    padding = dilation if dilation > 1 else pad
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, bias=False), nn.BatchNorm2d(c_out)
    )


def conv_bn_3d(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3x3 convolution without bias followed by 3-D batch norm (size-preserving at stride 1)."""
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm3d(c_out))


def deconv_bn_3d(c_in: int, c_out: int) -> nn.Sequential:
    """Transposed 3-D convolution that doubles every size, followed by 3-D batch norm."""
    return nn.Sequential(
        nn.ConvTranspose3d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm3d(c_out),
    )


class BasicBlock(nn.Module):
    """Residual block of two 3x3 conv+BN; ReLU after the first only, none after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(conv_bn(c_in, c_out, 3, stride, 1, dilation), nn.ReLU(inplace=True))
        self.conv2 = conv_bn(c_out, c_out, 3, 1, 1, dilation)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x)) + shortcut


def residual_layer(c_in: int, c_out: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """``blocks`` BasicBlocks; only the first changes stride or width."""
    layers = [BasicBlock(c_in, c_out, stride, dilation)]
    layers += [BasicBlock(c_out, c_out, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def spp_branch(pool: int) -> nn.Sequential:
    """Average-pool by ``pool`` then a 1x1 conv+BN+ReLU down to 32 channels."""
    return nn.Sequential(nn.AvgPool2d(pool, pool), conv_bn(128, 32, 1, 1, 0, 1), nn.ReLU(inplace=True))


class FeatureExtraction(nn.Module):
    """Shared 2-D feature net: 32 channels at 1/4 resolution from a normalised RGB image."""

    def __init__(self, align_corners: bool) -> None:
        super().__init__()
        self.align_corners = align_corners
        relu = nn.ReLU
        self.firstconv = nn.Sequential(
            conv_bn(3, 32, 3, 2, 1, 1), relu(True), conv_bn(32, 32, 3, 1, 1, 1), relu(True),
            conv_bn(32, 32, 3, 1, 1, 1), relu(True),
        )  # fmt: skip
        self.layer1 = residual_layer(32, 32, 3, 1, 1)
        self.layer2 = residual_layer(32, 64, 16, 2, 1)
        self.layer3 = residual_layer(64, 128, 3, 1, 1)
        self.layer4 = residual_layer(128, 128, 3, 1, 2)
        self.branch1 = spp_branch(64)
        self.branch2 = spp_branch(32)
        self.branch3 = spp_branch(16)
        self.branch4 = spp_branch(8)
        self.lastconv = nn.Sequential(
            conv_bn(320, 128, 3, 1, 1, 1), relu(True), nn.Conv2d(128, 32, 1, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        raw = self.layer2(self.layer1(self.firstconv(x)))
        skip = self.layer4(self.layer3(raw))
        size = skip.shape[-2:]
        pyramid = [
            F.interpolate(branch(skip), size, mode="bilinear", align_corners=self.align_corners)
            for branch in (self.branch4, self.branch3, self.branch2, self.branch1)
        ]
        return self.lastconv(torch.cat([raw, skip, *pyramid], dim=1))


class Hourglass(nn.Module):
    """3-D encoder-decoder over the cost volume, with skip inputs from the previous hourglass."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        wide = 2 * channels
        self.conv1 = nn.Sequential(conv_bn_3d(channels, wide, 2), nn.ReLU(inplace=True))
        self.conv2 = conv_bn_3d(wide, wide)
        self.conv3 = nn.Sequential(conv_bn_3d(wide, wide, 2), nn.ReLU(inplace=True))
        self.conv4 = nn.Sequential(conv_bn_3d(wide, wide), nn.ReLU(inplace=True))
        self.conv5 = deconv_bn_3d(wide, wide)
        self.conv6 = deconv_bn_3d(wide, channels)

    def forward(
        self, x: Tensor, presqu: Tensor | None, postsqu: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(output, pre, post); ``pre``/``post`` feed the next hourglass as its skip inputs."""
        pre = self.conv2(self.conv1(x))
        pre = F.relu(pre if postsqu is None else pre + postsqu)
        post = self.conv5(self.conv4(self.conv3(pre)))
        post = F.relu(post + (pre if presqu is None else presqu))
        return self.conv6(post), pre, post


def cost_head() -> nn.Sequential:
    """3-D conv+BN+ReLU then a single-channel 3-D conv: one matching score per disparity bin."""
    return nn.Sequential(conv_bn_3d(32, 32), nn.ReLU(inplace=True), nn.Conv3d(32, 1, 3, 1, 1, bias=False))


class PSMNet(nn.Module):
    """Stacked-hourglass PSMNet on normalised, padded (B, 3, H, W) pairs, H and W multiples of 16, >= 256.

    ``eval()`` forward returns the final disparity (B, H, W) in pixels of the input; ``train()`` forward
    returns the three intermediate predictions (each (B, H, W)) as the original training did.
    """

    def __init__(self, max_disp: int = 192, align_corners: bool = True) -> None:
        super().__init__()
        if max_disp <= 0 or max_disp % 16:
            raise ValueError(f"max_disp must be a positive multiple of 16, got {max_disp}")
        self.max_disp = max_disp
        self.align_corners = align_corners
        self.feature_extraction = FeatureExtraction(align_corners)
        self.dres0 = nn.Sequential(
            conv_bn_3d(64, 32), nn.ReLU(inplace=True), conv_bn_3d(32, 32), nn.ReLU(inplace=True)
        )
        self.dres1 = nn.Sequential(conv_bn_3d(32, 32), nn.ReLU(inplace=True), conv_bn_3d(32, 32))
        self.dres2 = Hourglass(32)
        self.dres3 = Hourglass(32)
        self.dres4 = Hourglass(32)
        self.classif1 = cost_head()
        self.classif2 = cost_head()
        self.classif3 = cost_head()

    def cost_volume(self, left: Tensor, right: Tensor) -> Tensor:
        """(B, 64, D/4, H/4, W/4): left features beside right features shifted right by d; zero where x < d."""
        b, c, h, w = left.shape
        cost = left.new_zeros(b, 2 * c, self.max_disp // 4, h, w)
        for d in range(self.max_disp // 4):
            cost[:, :c, d, :, d:] = left[:, :, :, d:]
            cost[:, c:, d, :, d:] = right[:, :, :, : w - d]
        return cost

    def regress(self, cost: Tensor, size: tuple[int, int]) -> Tensor:
        """Upsample a (B, 1, D/4, H/4, W/4) score volume, softmax over disparity, expected disparity."""
        cost = F.interpolate(
            cost, (self.max_disp, *size), mode="trilinear", align_corners=self.align_corners
        ).squeeze(1)
        prob = F.softmax(cost, dim=1)  # +cost: the network learned a similarity, not a cost
        bins = torch.arange(self.max_disp, dtype=prob.dtype, device=prob.device)
        return torch.einsum("bdhw,d->bhw", prob, bins)

    def forward(self, left: Tensor, right: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        h, w = left.shape[-2:]
        if left.shape != right.shape or h % 16 or w % 16 or h < 256 or w < 256:
            raise ValueError(
                f"PSMNet needs equal-size inputs with H, W multiples of 16 and >= 256, got "
                f"{tuple(left.shape)} and {tuple(right.shape)}"
            )
        cost = self.cost_volume(self.feature_extraction(left), self.feature_extraction(right))
        cost0 = self.dres0(cost)
        cost0 = self.dres1(cost0) + cost0
        out1, pre1, post1 = self.dres2(cost0, None, None)
        out1 = out1 + cost0
        out2, _, post2 = self.dres3(out1, pre1, post1)
        out2 = out2 + cost0
        out3, _, _ = self.dres4(out2, pre1, post2)  # pre1, not pre2, as in the published model
        out3 = out3 + cost0
        cost1 = self.classif1(out1)
        cost2 = self.classif2(out2) + cost1
        cost3 = self.classif3(out3) + cost2
        if self.training:
            return self.regress(cost1, (h, w)), self.regress(cost2, (h, w)), self.regress(cost3, (h, w))
        return self.regress(cost3, (h, w))
