"""The report's first-screen figure: accuracy with its interval for the rows that answer the question.

Rows (from ``eval/matrix.csv``): the CNN alone of every backbone, the selected configuration, and
the next best combined / fallback-only rows, so the reader sees at once where the chosen
configuration sits against the classifier alone.  Drawn with matplotlib into PNG bytes; the
report embeds them (it stays one self-contained file).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import pandas as pd

__all__ = ["main_rows", "forest_png"]

COLOURS = {"cnn": "#2c7bb6", "combined": "#d7191c", "fallback_only": "#fdae61"}


def main_rows(matrix: pd.DataFrame, selected: Mapping | None, n_top: int = 4) -> pd.DataFrame:
    """CNN-alone rows, the selected row, and the ``n_top`` best deployable others; best first."""
    deployable = matrix[matrix["row_type"].isin(["combined", "fallback_only"])]
    parts = [matrix[matrix["row_type"] == "cnn"], deployable.head(n_top)]
    if selected and "config_id" in selected:
        parts.append(matrix[matrix["config_id"] == selected["config_id"]])
    rows = pd.concat(parts).drop_duplicates("config_id")
    return rows.sort_values("accuracy", ascending=False, kind="stable").reset_index(drop=True)


def forest_png(rows: pd.DataFrame, selected_id: str | None, ci: float = 0.95) -> bytes:
    """A horizontal forest plot (accuracy, interval) of ``rows``; the selected row in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, ax = plt.subplots(figsize=(6.4, 0.38 * n + 0.9), dpi=100)
    y = list(range(n))[::-1]
    for yi, r in zip(y, rows.to_dict("records"), strict=True):
        colour = COLOURS.get(r["row_type"], "#666666")
        lo, hi = r.get("accuracy_lo"), r.get("accuracy_hi")
        if pd.notna(lo) and pd.notna(hi):
            ax.plot([lo, hi], [yi, yi], color=colour, lw=2)
        bold = r["config_id"] == selected_id
        ax.plot(r["accuracy"], yi, "o", color=colour, ms=8 if bold else 5)
    labels = [("▶ " if c == selected_id else "") + _short(c) for c in rows["config_id"]]
    ax.set_yticks(y, labels, fontsize=8)
    for tick, cid in zip(ax.get_yticklabels(), rows["config_id"], strict=True):
        if cid == selected_id:
            tick.set_fontweight("bold")
    cnn = rows[rows["row_type"] == "cnn"]["accuracy"]
    for a in cnn:
        ax.axvline(a, color=COLOURS["cnn"], lw=0.8, ls=":")
    ax.set_xlabel(f"test accuracy, {100 * ci:g}% patient-bootstrap interval", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _short(config_id: str, width: int = 48) -> str:
    return config_id if len(config_id) <= width else config_id[: width - 1] + "…"
