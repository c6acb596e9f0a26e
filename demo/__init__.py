"""The demo: the whole pipeline on one small data set, and the report it leaves (docs/demo.md)."""

from demo.motorcycle import MotorcycleData, make_motorcycle_kitti
from demo.pipeline import KITTI, MOTORCYCLE, DemoResult, DemoSettings, run_demo
from demo.report import write_reports

__all__ = [
    "KITTI",
    "MOTORCYCLE",
    "DemoResult",
    "DemoSettings",
    "MotorcycleData",
    "make_motorcycle_kitti",
    "run_demo",
    "write_reports",
]
