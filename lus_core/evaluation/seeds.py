"""Choosing on the mean over model seeds (`train.seeds`).

With several seeds every scope has one replica per seed (lus_core.split.scopes), each with its
own models. Each replica's ``validate`` step writes ``eval/validation.json``: every configuration's
validation scores (training patients, out of fold) and every video score's, nothing about test
patients. Each replica's ``evaluate`` then reads all of its scope's validation files and chooses
on the mean over the seeds, so every replica of a scope chooses the same configuration and video
score, and scores its own test patients with its own models.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lus_core.evaluation.matrix import MAIN_METRICS
from lus_core.io_utils import read_json, write_json

# the validation scores averaged over seeds: every criterion's (counts and flags are the same in
# every replica)
MEANED = (*(f"val_{m}" for m in MAIN_METRICS), "val_fallback_rate")


def write_validation(path: str | os.PathLike, val: pd.DataFrame, video_level: Mapping[str, list[dict]]) -> None:
    """A replica's validation scores: the configurations' table and each backbone's video scores'
    `val_*` values (test columns left out: what is written here is what a choice may read)."""
    videos = {b: [{k: v for k, v in row.items() if k == "video_score" or k.startswith("val_")} for row in rows]
              for b, rows in video_level.items()}
    write_json(path, {"configurations": val.to_dict("records"), "video_level": videos})


def read_validation(path: str | os.PathLike) -> dict:
    data = read_json(path)
    if not {"configurations", "video_level"} <= set(data):
        raise ValueError(f"{path}: not a validation file (configurations, video_level)")
    return {"path": str(path), "configurations": pd.DataFrame(data["configurations"]),
            "video_level": data["video_level"]}


def mean_over_seeds(val: pd.DataFrame, validations: Sequence[Mapping], criterion: str) -> pd.DataFrame:
    """`val` (this replica's table) with its validation scores replaced by their mean over the
    seeds' tables, and `val_{criterion}_seed_sd`, the spread of the criterion over seeds."""
    tables = [v["configurations"] for v in validations]
    for v, table in zip(validations, tables, strict=True):
        if list(table["config_id"]) != list(val["config_id"]):
            raise ValueError(f"{v['path']}: its configurations differ from this replica's (another config?)")
    out = val.copy()
    for col in MEANED:
        stacked = np.stack([t[col].to_numpy(np.float64) for t in tables])
        out[col] = _nanmean(stacked)
        if col == f"val_{criterion}":
            out[f"{col}_seed_sd"] = np.nanstd(stacked, axis=0, ddof=1) if len(tables) > 1 else 0.0
    out["val_n_seeds"] = len(tables)
    return out


def _nanmean(stacked: np.ndarray) -> np.ndarray:
    """Mean over seeds, NaN where every seed is NaN (no warning)."""
    n = np.sum(~np.isnan(stacked), axis=0)
    total = np.nansum(stacked, axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def video_level_mean(video_level: Mapping[str, list[dict]], validations: Sequence[Mapping]) -> dict:
    """summary.json's video_level with each score's `val_*` values replaced by their mean over
    the seeds (the test values stay this replica's)."""
    out = {}
    for b, rows in video_level.items():
        out[b] = []
        for row in rows:
            seeds = [_video_row(v, b, row["video_score"]) for v in validations]
            mean = dict(row)
            for key in (k for k in row if k.startswith("val_")):
                values = [float(s[key]) for s in seeds if s.get(key) is not None and not math.isnan(float(s[key]))]
                mean[key] = sum(values) / len(values) if values else float("nan")
            out[b].append(mean)
    return out


def _video_row(validation: Mapping, backbone: str, how: str) -> dict:
    for row in validation["video_level"].get(backbone, []):
        if row["video_score"] == how:
            return row
    raise ValueError(f"{validation['path']}: no validation of video score {backbone} · {how}")
