"""Teacher models that turn KITTI frames into labels."""
