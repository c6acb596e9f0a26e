"""Lazy package faces: a wing's ``__init__`` names its public objects and where they live.

A face maps each public name to its home module (``_HOMES``); the home is imported on first use,
so ``import edgedepth.labelgen`` costs nothing and a wing that needs one name from another never
pays for the rest (torch stays out of a driver that only plans labels). Modules may move: the
face keeps the name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_face(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public names live in ``homes``."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(home), name)

    def __dir__() -> list[str]:
        return sorted(homes)

    return __getattr__, __dir__


__all__ = ["lazy_face"]
