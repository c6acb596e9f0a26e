"""Input normalisation constants shared by the teachers and the student."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet's per-channel mean of RGB in [0, 1]: the teachers' and the student's input scaling."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet's per-channel standard deviation of RGB in [0, 1]."""

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]
