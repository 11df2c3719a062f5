"""The level of the answer (`evaluate.selection.level`): per frame, or per video when the labels
are per video (COVID-BLUES, POCUS: every frame carries its video's score).

At video level the answer is a video score (max, mean, majority, confident mean of the CNN's
frame scores, or the learned attention score) of one backbone, chosen by its validation video
QWK (balanced accuracy for nominal classes: majority or attention only, lus_core.class_order) on
the training patients' videos (out of fold); the report's first screen shows it and the
frame tables follow. The frame-level configuration (which frames to trust, what replaces the
others) is chosen as before by `evaluate.selection.criterion`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from lus_core.videolevel.table import chosen_video_score

LEVELS = ("auto", "frame", "video")
METRIC_NAMES = {"qwk": "QWK", "balanced_accuracy": "balanced accuracy", "accuracy": "accuracy", "macro_f1": "macro-F1"}


def labels_are_per_video(frame_index: pd.DataFrame) -> bool:
    """Whether every video's frames carry one score (a label row covering the whole video)."""
    return bool((frame_index.groupby("video")["label"].nunique() <= 1).all())


def resolve_level(setting: str, has_video_scores: bool, per_video_labels: bool) -> str:
    """`auto`: video when the labels are per video and the run has video scores; else frame."""
    if setting not in LEVELS:
        raise ValueError(f"evaluate.selection.level must be one of {LEVELS}, got {setting!r}")
    if setting == "video" and not has_video_scores:
        raise ValueError("evaluate.selection.level: video needs video scores (video_model.enabled: true)")
    if setting == "auto":
        return "video" if has_video_scores and per_video_labels else "frame"
    return setting


def video_answer(video_level: Mapping[str, list[dict]], metric: str = "qwk") -> dict:
    """Of every backbone's video scores (summary.json's video_level), the one with the best
    validation video `metric` (QWK; balanced accuracy for nominal classes, lus_core.class_order;
    ties: the backbones' order, then the listed order of the scores); with its test scores,
    reported once."""
    key = f"val_{metric}"

    def score(row) -> float:
        v = row.get(key)
        return -math.inf if v is None or math.isnan(float(v)) else float(v)

    best = None
    for backbone, rows in video_level.items():
        row = chosen_video_score(rows, metric)
        if best is None or score(row) > score(best[1]):
            best = (backbone, row)
    if best is None:
        raise ValueError("no video scores to choose from")
    backbone, row = best
    metrics = [m for m in ("accuracy", "balanced_accuracy", "qwk") if m in row]
    return {"backbone": backbone, "video_score": row["video_score"],
            "criterion": f"validation video {METRIC_NAMES[metric]}", "metric": metric,
            "validation_score": row.get(key), "validation_qwk": row.get("val_qwk"),
            "validation_accuracy": row.get("val_accuracy"),
            "test": {m: {"estimate": row.get(m), "lo": row.get(f"{m}_lo"), "hi": row.get(f"{m}_hi")} for m in metrics},
            "n_test_videos": row.get("n_test_videos")}
