"""The video table `R/video/{backbone}.csv` (its writer and reader), the fixed aggregations of a
video's frame scores, and the video-level metrics: no torch, so that evaluation and the report
start without it (the learned score itself is `lus_core.videolevel.model`).

One row per video: `video`, `patient`, `split`, `fold` (-1: the model trained on all training
videos), `label` (the video's class index: its frames' majority), `n_frames`, `attention` (class
index), `p_0..p_{C-1}`, and `max`, `mean`, `majority`, `confident_mean` (the fixed aggregations of
the CNN's frame scores, for comparison).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lus_core.io_utils import atomic_path
from lus_core.metrics import aggregate_by_group, bootstrap_ci, round_half_up

FIXED_AGGREGATIONS = ("max", "mean", "majority", "confident_mean")


def confident_mean(classes: np.ndarray, confidence: np.ndarray, fraction: float) -> int:
    """Khan et al. 2023: the mean class of the most confident `fraction` of a video's frames
    (at least one frame; ties in confidence keep the earlier frame), rounded half up."""
    if not 0 < fraction <= 1:
        raise ValueError(f"video_model.confident_fraction must be in (0, 1], got {fraction}")
    keep = max(1, int(np.ceil(fraction * len(classes))))
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")[:keep]
    return int(round_half_up(np.mean(np.asarray(classes)[order])))


def fixed_aggregations(frame_pred: np.ndarray, confidence: np.ndarray, n_classes: int, fraction: float) -> dict:
    """The CNN's frame scores of one video aggregated every fixed way."""
    zeros = np.zeros(len(frame_pred), np.int64)
    out = {how: int(aggregate_by_group(frame_pred, zeros, 1, how, n_classes)[0]) for how in ("max", "mean", "majority")}
    out["confident_mean"] = confident_mean(frame_pred, confidence, fraction)
    return out


def write_video_table(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


VIDEO_SCORES = (*FIXED_AGGREGATIONS, "attention")


def video_metrics(table: pd.DataFrame, n_classes: int, n_boot: int, ci: float, seed: int,
                  scores: tuple[str, ...] = VIDEO_SCORES, metrics: tuple[str, ...] = ("accuracy", "qwk")) -> pd.DataFrame:
    """One row per video score (of `scores`): `metrics` on test videos with patient-bootstrap
    intervals, and the same on training videos out-of-fold (`val_*`: what a choice may look at)."""
    rows = []
    for how in scores:
        row = {"video_score": how}
        for part, prefix in (("test", ""), ("train", "val_")):
            sub = table[table["split"] == part]
            for metric in metrics:
                if len(sub) == 0:
                    row[f"{prefix}{metric}"] = float("nan")
                    continue
                res = bootstrap_ci(metric, sub["label"], sub[how], sub["patient"], n_boot, ci, seed, n_classes)
                row[f"{prefix}{metric}"] = res.estimate
                if part == "test":
                    row[f"{metric}_lo"], row[f"{metric}_hi"] = res.lo, res.hi
        row["n_test_videos"] = int((table["split"] == "test").sum())
        rows.append(row)
    return pd.DataFrame(rows)


def chosen_video_score(rows: list[dict], metric: str = "qwk") -> dict:
    """Of a backbone's video scores (rows of `video_metrics`, as summary.json's video_level lists
    them), the one with the best out-of-fold validation `metric` (QWK; balanced accuracy for
    nominal classes, lus_core.class_order): ties and NaN go to the listed order (fixed
    aggregations before the learned one). A choice on training patients only."""
    if not rows:
        raise ValueError("no video scores to choose from")
    key = f"val_{metric}"
    return max(rows, key=lambda r: (np.nan_to_num(float(r[key]) if r.get(key) is not None else np.nan,
                                                   nan=-np.inf), -rows.index(r)))


def read_video_table(path: str | Path, test_patients: list[str] | None = None) -> pd.DataFrame:
    """Read `video/{backbone}.csv`; with `test_patients`, check its split agrees with split.json."""
    table = pd.read_csv(path, dtype={"video": str, "patient": str, "split": str})
    missing = {"video", "patient", "split", "label", "attention", *FIXED_AGGREGATIONS} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: not a video table of lus_core.videolevel.model (missing {sorted(missing)})")
    if test_patients is not None:
        got = sorted(set(table.loc[table["split"] == "test", "patient"]))
        if got != sorted(map(str, test_patients)):
            raise ValueError(f"{path}: test patients {got} differ from split.json {sorted(test_patients)}")
    return table
