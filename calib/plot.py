"""The paper's Fig. 2 for a fitted table: error per teacher-depth bin with its CI, and the counts.

matplotlib is imported lazily with the Agg backend, so importing calib needs no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedepth.calib.lut import Lut
from edgedepth.common import save_figure


def _title(lut: Lut) -> str:
    src, held = lut.source, lut.heldout
    stage = src.get("teacher_stage", "teacher")
    names = ", ".join(n for n in src.get("teacher", []) if n)
    head = f"{stage} ({names})" if names and names != stage else stage
    if held and held.get("rmse_before") is not None:
        tail = f"held-out RMSE {held['rmse_before']:.3f} → {held['rmse_after']:.3f} m"
    else:
        tail = "no held-out drives"
    return f"{head}: depth bias vs LiDAR ({lut.settings['stat']}); {tail}"


def _bars(
    ax: Any, left: np.ndarray, right: np.ndarray, bottom: np.ndarray, top: np.ndarray, **style: Any
) -> None:
    """Rectangles ``[left, right] x [bottom, top]`` as one artist: ``ax.bar`` makes one patch a bar,
    which took 20 s to draw for a 10,000-bin table."""
    from matplotlib.collections import PolyCollection

    corners = [(left, bottom), (left, top), (right, top), (right, bottom)]
    verts = np.stack([np.stack(xy, axis=-1) for xy in corners], axis=1)
    color = style.pop("color")
    ax.add_collection(PolyCollection(verts, facecolor=color, edgecolor="none", **style))
    ax.autoscale_view()


def _error_panel(ax: Any, lut: Lut) -> None:
    """Top panel: the statistic per bin with its CI band, the table, filled bins, held-out residual."""
    c, populated = lut.centres, ~lut.filled
    level = f"{lut.settings['ci_level']:.0%}"
    width = lut.edges[1] - lut.edges[0]
    _bars(ax, c[populated] - width / 2, c[populated] + width / 2, lut.ci_low[populated], lut.ci_high[populated],
          color="tab:blue", alpha=0.3, label=f"{level} bootstrap CI")  # fmt: skip
    ax.plot(c[populated], lut.value[populated], "o", ms=3, color="tab:blue",
            label=f"{lut.settings['stat']} of lidar − teacher")  # fmt: skip
    ax.plot(c, lut.correction, "-", lw=1, color="tab:blue", alpha=0.6, label="table (linear between centres)")
    if lut.filled.any():
        ax.plot(c[lut.filled], lut.correction[lut.filled], "x", ms=4, color="tab:red",
                label=f"filled: fewer than {lut.settings['min_count']} px")  # fmt: skip
    held = lut.heldout
    if held and held.get("pixels"):
        residual = np.array([np.nan if v is None else v for v in held["residual_mean"]])
        ax.plot(c, residual, "s", ms=3, color="tab:green", label="held-out residual after correction")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("lidar − teacher depth (m)")
    ax.grid(alpha=0.3)
    # "best" searches every vertex for a free spot: 6 s of a 10,000-bin table's plot
    ax.legend(fontsize=8, loc="best" if len(c) <= 1000 else "upper left")


def _count_panel(ax: Any, lut: Lut) -> None:
    """Bottom panel: pixels per bin (log scale), filled bins in red, the min_count line."""
    half, filled, c = 0.45 * (lut.edges[1] - lut.edges[0]), lut.filled, lut.centres
    for keep, color, label in ((~filled, "tab:blue", "fit pixels"), (filled, "tab:red", "filled bins")):
        if keep.any():
            count = lut.count[keep].astype(np.float64)
            _bars(ax, c[keep] - half, c[keep] + half, np.zeros_like(count), count, color=color, label=label)
    held = lut.heldout
    if held and held.get("pixels"):
        ax.step(
            lut.edges[:-1], held["residual_count"], where="post", color="tab:green", label="held-out pixels"
        )
    ax.axhline(lut.settings["min_count"], color="black", ls=":", lw=1, label="min count")
    if lut.count.max() > 0:
        ax.set_yscale("log")
    ax.set_xlabel("teacher depth (m)")
    ax.set_ylabel("pixels per bin")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")


def lut_figure(lut: Lut) -> Any:
    """The two-panel figure (caller closes it); used by plot_lut and by tests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(8, 6.5), gridspec_kw={"height_ratios": [3, 1.4]}
    )
    _error_panel(top, lut)
    _count_panel(bottom, lut)
    top.set_title(_title(lut), fontsize=10)
    bottom.set_xlim(lut.edges[0], lut.edges[-1])
    fig.tight_layout()
    return fig


def plot_lut(lut: Lut, out_png: str | Path, dpi: int = 120) -> Path:
    """Write the figure as PNG (parent folders created); returns the path."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig = lut_figure(lut)  # selects Agg before pyplot is imported
    import matplotlib.pyplot as plt

    try:
        save_figure(fig, out_png, dpi=dpi)
    finally:
        plt.close(fig)
    return out_png
