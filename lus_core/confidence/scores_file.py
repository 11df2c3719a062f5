"""The confidence scores file contract: ``confidence/{backbone}/{method}.csv``, one row per frame
of the run (written by ``fit_confidence``, read by the confidence report and the evaluation).

Columns: ``frame_id``, ``split`` (train / test), ``confidence`` (in [0, 1], higher = more likely
correct), ``trusted`` (bool), ``set_size`` (conformal prediction set size; empty for other
methods). Training rows hold cross-fitted values (lus_core.confidence.step).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lus_core.io_utils import atomic_path

COLUMNS = ["frame_id", "split", "confidence", "trusted", "set_size"]


def write_scores(path: str | Path, frame_id, split, confidence, trusted, set_size=None) -> None:
    """Write the table atomically; `set_size` None: no prediction sets (an empty column)."""
    n = len(frame_id)
    table = pd.DataFrame({"frame_id": frame_id, "split": split, "confidence": confidence, "trusted": trusted})
    table["set_size"] = (np.asarray(set_size).astype(int) if set_size is not None
                         else pd.array([pd.NA] * n, dtype="Int64"))
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def read_scores(path: str | Path) -> pd.DataFrame:
    """The table with typed columns: int64 frame_id, float64 confidence, bool trusted, float64
    set_size (NaN where a method has no sets)."""
    table = pd.read_csv(path)
    missing = {"frame_id", "confidence", "trusted"} - set(table.columns)
    if missing:
        raise ValueError(f"confidence table {path}: missing column(s) {sorted(missing)}")
    table["frame_id"] = table["frame_id"].astype(np.int64)
    table["confidence"] = table["confidence"].astype(np.float64)
    table["trusted"] = _to_bool(table["trusted"], path)
    table["set_size"] = (pd.to_numeric(table["set_size"], errors="coerce").astype(np.float64)
                         if "set_size" in table else np.nan)
    return table


def _to_bool(column: pd.Series, path) -> pd.Series:
    if column.dtype == bool:
        return column
    text = column.astype(str).str.strip().str.lower()
    bad = sorted(set(text) - {"true", "false", "1", "0"})
    if bad:
        raise ValueError(f"confidence table {path}: `trusted` holds {bad[:3]}, expected True / False")
    return text.isin(["true", "1"])
