"""`eval/selected_predictions.csv` (a scope's evaluate writes it): the selected configuration's
scores of every test frame, one row each: frame_id, patient, video, label, cnn (the CNN's score),
final (the configuration's score: the CNN's where trusted, its neighbours' where not), trusted,
config_id. The nested estimate pools the outer folds' files (lus_core.evaluation.nested)."""

from __future__ import annotations

import pandas as pd

from lus_core.io_utils import atomic_path

COLUMNS = ("frame_id", "patient", "video", "label", "cnn", "final", "trusted", "config_id")


def write_selected_scores(table: pd.DataFrame, path) -> None:
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"selected scores lack columns {sorted(missing)}")
    with atomic_path(path) as tmp:
        table.loc[:, list(COLUMNS)].to_csv(tmp, index=False)


def empty_selected_scores() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS))


def read_selected_scores(path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"patient": str, "video": str, "config_id": str})
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path}: not a selected-scores file (missing {sorted(missing)})")
    return table
