"""Teacher models that turn KITTI frames into labels.

Input normalisation (after scaling RGB to [0, 1]) of every ImageNet-initialised network here
(PSMNet, the DeepLab teachers; the student's MobileNetV2 encoder too) is
``edgedepth.common.normalisation``.
"""

from edgedepth.common import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]
