"""One figure style for every picture the project draws: matplotlib's object API on an Agg canvas
(no pyplot state, no display), the same fonts and grid, one way to save, and the one forest plot.

`figure()` makes a figure, `save_png()` writes it atomically, `png_bytes()` returns it for an HTML
page; `forest()` draws estimates with intervals, one row each (the report's first screen and the
evaluation's gain-over-CNN figure).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lus_core.io_utils import atomic_path

DPI = 110
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": DPI,
}
# score colours, lowest severity first (ColorBrewer RdYlBu, then distinct ones for more classes)
SCORE_COLORS = ["#2c7bb6", "#abd9e9", "#fdae61", "#d7191c", "#7b3294", "#008837", "#636363"]
ROW_COLORS = {"cnn": "#2c7bb6", "combined": "#d7191c", "fallback_only": "#fdae61", "oracle": "#888888"}


def figure(figsize: tuple[float, float], **kwargs) -> Figure:
    """A new figure in the project's style, on its own Agg canvas."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def subplots(fig: Figure, *args, **kwargs):
    """``fig.subplots`` in the project's style (rc settings apply when axes are made)."""
    with matplotlib.rc_context(STYLE):
        return fig.subplots(*args, **kwargs)


def save_png(fig: Figure, path: str | os.PathLike, tight: bool = True) -> Path:
    """Write the figure as PNG, atomically (a crash leaves no half-written file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    return path


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def score_colors(n: int) -> list[str]:
    """One colour per score class."""
    if n <= len(SCORE_COLORS):
        return SCORE_COLORS[:n]
    cmap = matplotlib.colormaps["viridis"].resampled(n)
    return [matplotlib.colors.to_hex(cmap(i)) for i in range(n)]


def forest(labels: Sequence[str], est, lo, hi, colors: Sequence[str], xlabel: str, title: str = "",
           reference: Sequence[float] = (), reference_color: str = "black", bold: Sequence[bool] | None = None,
           width: float = 6.4) -> Figure:
    """Estimates with intervals, one row each, the first row on top; ``reference``: vertical lines
    (0 for differences, the CNN's accuracy for scores); ``bold``: rows to emphasise (a larger
    marker and a bold, marked label)."""
    est, lo, hi = (np.asarray(v, dtype=float) for v in (est, lo, hi))
    n = len(labels)
    bold = [False] * n if bold is None else list(bold)
    fig = figure((width, 0.9 + 0.3 * n))
    ax = subplots(fig)
    y = np.arange(n)[::-1]
    for yi, e, lo_, hi_, col, b in zip(y, est, lo, hi, colors, bold, strict=True):
        if np.isfinite(lo_) and np.isfinite(hi_):
            ax.plot([lo_, hi_], [yi, yi], color=col, lw=2 if b else 1.5)
        ax.plot([e], [yi], "o", color=col, ms=8 if b else 5)
    for r in reference:
        ax.axvline(r, color=reference_color, lw=0.8, ls=":" if reference_color != "black" else "-")
    ax.set_yticks(y, [("▶ " if b else "") + label for label, b in zip(labels, bold, strict=True)])
    for tick, b in zip(ax.get_yticklabels(), bold, strict=True):
        if b:
            tick.set_fontweight("bold")
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    if title:
        ax.set_title(title)
    return fig
