"""The depth + segmentation student: network, losses, metrics, training, export, benchmarks."""
