"""The demo: the whole pipeline on one small data set, and the report it leaves (docs/demo.md)."""

from demo.motorcycle import MotorcycleData, make_motorcycle
from demo.pipeline import run_demo
from demo.report import write_reports
from demo.result import KITTI, MOTORCYCLE, RIG, DemoResult, DemoSettings

__all__ = [
    "KITTI",
    "MOTORCYCLE",
    "RIG",
    "DemoResult",
    "DemoSettings",
    "MotorcycleData",
    "make_motorcycle",
    "run_demo",
    "write_reports",
]
