"""The report's first-screen figure: accuracy with its interval for the rows that answer the question.

Rows (from ``eval/matrix.csv``): the CNN alone of every backbone, the selected configuration, and
the next best combined / fallback-only rows, so the reader sees at once where the chosen
configuration sits against the classifier alone.  Drawn with lus_core.plotting.forest into PNG
bytes; the report embeds them (it stays one self-contained file).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from lus_core import plotting

__all__ = ["main_rows", "forest_png"]


def main_rows(matrix: pd.DataFrame, selected: Mapping | None, n_top: int = 4) -> pd.DataFrame:
    """CNN-alone rows, the selected row, and the ``n_top`` best deployable others; best first."""
    deployable = matrix[matrix["row_type"].isin(["combined", "fallback_only"])]
    parts = [matrix[matrix["row_type"] == "cnn"], deployable.head(n_top)]
    if selected and "config_id" in selected:
        parts.append(matrix[matrix["config_id"] == selected["config_id"]])
    rows = pd.concat(parts).drop_duplicates("config_id")
    return rows.sort_values("accuracy", ascending=False, kind="stable").reset_index(drop=True)


def forest_png(rows: pd.DataFrame, selected_id: str | None, ci: float = 0.95) -> bytes:
    """A horizontal forest plot (accuracy, interval) of ``rows``; the selected row in bold, the
    CNN-alone accuracies as dotted lines."""
    colors = [plotting.ROW_COLORS.get(t, "#666666") for t in rows["row_type"]]
    fig = plotting.forest(
        [_short(c) for c in rows["config_id"]], rows["accuracy"], rows["accuracy_lo"], rows["accuracy_hi"], colors,
        xlabel=f"test accuracy, {100 * ci:g}% patient-bootstrap interval",
        reference=rows[rows["row_type"] == "cnn"]["accuracy"].tolist(), reference_color=plotting.ROW_COLORS["cnn"],
        bold=[c == selected_id for c in rows["config_id"]],
    )
    return plotting.png_bytes(fig)


def _short(config_id: str, width: int = 48) -> str:
    return config_id if len(config_id) <= width else config_id[: width - 1] + "…"
