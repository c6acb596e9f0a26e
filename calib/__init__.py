"""The per-distance teacher-vs-LiDAR depth bias look-up table (fit, apply, plot)."""
