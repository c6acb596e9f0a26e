"""Teacher models that turn KITTI frames into labels."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Input normalisation (after scaling RGB to [0, 1]) of every ImageNet-initialised network here:
PSMNet, the DeepLab teachers and the student's MobileNetV2 encoder."""
