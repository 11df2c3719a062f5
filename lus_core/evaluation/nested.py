"""The nested estimate (split.outer_folds K > 1): what the whole procedure - train, choose a
configuration on the training patients, score new patients with it - achieves on patients it
never saw, from every patient of the cohort.

Each outer fold o chose its configuration on its own training patients (its evaluate, out of
fold) and scored its test patients once with it (`outer/{o}/eval/selected_predictions.csv`).
Every patient is in exactly one fold's test group, so pooling those files gives each patient one
prediction made without them. Intervals resample patients over the whole cohort; the paired
differences (the procedure against its CNN alone, and against the majority class of each fold's
training frames) use the same resamples. At video level each fold's answer is the video score
it chose on its training videos (at video level, evaluate.selection.level, the best validation
video QWK among every backbone's video scores; else the best of its selected backbone's).

Writes `nested/estimate.json`, `nested/predictions.csv` (frames), `nested/videos.csv` (videos,
when the run fits video models) and `nested/folds.png` (every fold and the pooled estimate).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lus_core import metrics as M
from lus_core.class_order import class_order, video_metric
from lus_core.evaluation.answer_level import METRIC_NAMES
from lus_core.evaluation.matrix import MAIN_METRICS
from lus_core.evaluation.selected_scores import read_selected_scores
from lus_core.evaluation.summary import clean_json, read_summary
from lus_core.io_utils import atomic_path, read_json, write_json
from lus_core.split.scopes import scope_split
from lus_core.videolevel.table import chosen_video_score, read_video_table

log = logging.getLogger(__name__)

# what a "recipe" is when the stability of the choice is counted: the configuration without its
# neighbour count and fallback details (which the folds may tune differently around one idea)
RECIPE_FIELDS = ("row_type", "backbone", "confidence", "space")


@dataclass
class OuterFold:
    """What one outer fold chose and how it scored its test patients."""

    scope: str
    test_patients: list[str]
    train_counts: dict[str, int]
    selected: dict  # summary.json's `selected` (chosen on the fold's training patients)
    frames: pd.DataFrame  # its selected_predictions.csv
    level: str = "frame"  # its answer's level (evaluate.selection.level, resolved)
    video_score: str | None = None  # the video score chosen on its training videos
    video_backbone: str | None = None
    video_val_score: float | None = None  # its validation video `video_metric` (on training videos)
    video_metric: str = "qwk"  # lus_core.class_order.video_metric
    videos: pd.DataFrame | None = None  # its test videos: video, patient, label, pred

    @property
    def majority_class(self) -> int:
        """The most frequent score among the fold's training frames (ties: the lower class)."""
        counts = {int(c): int(n) for c, n in self.train_counts.items()}
        return max(sorted(counts), key=lambda c: counts[c])

    @property
    def recipe(self) -> str:
        return " / ".join(str(self.selected.get(f) or "-") for f in RECIPE_FIELDS)


def load_outer_folds(scopes: Sequence[str], summaries: Sequence, selected_csvs: Sequence, split: Mapping,
                     video_tables: Mapping[str, Mapping[str, str | os.PathLike]] | None = None) -> list[OuterFold]:
    """Every outer fold's choice and test predictions; checks that each fold's predictions are its
    test patients' and that the folds test every patient of the cohort exactly once."""
    folds = []
    for scope, summary_json, selected_csv in zip(scopes, summaries, selected_csvs, strict=True):
        part = scope_split(split, scope)
        test = sorted(map(str, part["test_patients"]))
        frames = read_selected_scores(selected_csv)
        got = sorted(set(frames["patient"]))
        if got != test:
            raise ValueError(f"{selected_csv}: patients {got} are not outer fold {scope}'s test patients {test}")
        summary = read_summary(summary_json)
        fold = OuterFold(scope, test, dict(part["train_counts"]), dict(summary["selected"]), frames,
                         level=str(summary.get("answer_level", "frame")))
        if video_tables:
            _choose_video_score(fold, summary, video_tables[scope], summary_json)
        folds.append(fold)
    tested = [p for f in folds for p in f.test_patients]
    everyone = sorted(map(str, split["deployed"]["train_patients"]))
    if sorted(tested) != everyone:
        raise ValueError(f"the outer folds test {len(tested)} patients ({len(set(tested))} distinct), the cohort has "
                         f"{len(everyone)}: every patient must be tested exactly once")
    return folds


def _choose_video_score(fold: OuterFold, summary: Mapping, tables: Mapping, summary_json) -> None:
    """The fold's video answer: at video level the one its evaluate chose among every backbone
    (`video_answer`), else the best video score of its selected backbone (both on training videos)."""
    answer = summary.get("video_answer")
    metric = video_metric(summary.get("class_order", "ordinal"))
    if answer:
        backbone, how, val = answer["backbone"], answer["video_score"], answer.get("validation_score")
    else:
        backbone = fold.selected["backbone"]
        rows = (summary.get("video_level") or {}).get(backbone)
        if not rows:
            raise ValueError(f"{summary_json}: no video-level scores of the selected backbone {backbone}")
        best = chosen_video_score(rows, metric)
        how, val = best["video_score"], best.get(f"val_{metric}")
    fold.video_score, fold.video_backbone, fold.video_metric = str(how), backbone, metric
    fold.video_val_score = float("nan") if val is None else float(val)
    table = read_video_table(tables[backbone], fold.test_patients)
    test = table[table["split"] == "test"]
    fold.videos = pd.DataFrame({"video": test["video"].to_numpy(), "patient": test["patient"].to_numpy(),
                                "label": test["label"].to_numpy(np.int64),
                                "pred": test[fold.video_score].to_numpy(np.int64)})


def pooled_frames(folds: Sequence[OuterFold]) -> pd.DataFrame:
    """Every patient's frames, scored by the fold that held them out (and that fold's baseline)."""
    parts = [f.frames.assign(outer=f.scope, majority=f.majority_class) for f in folds]
    return pd.concat(parts, ignore_index=True).sort_values("frame_id", kind="stable").reset_index(drop=True)


def pooled_videos(folds: Sequence[OuterFold]) -> pd.DataFrame | None:
    if any(f.videos is None for f in folds):
        return None
    parts = [f.videos.assign(outer=f.scope, video_score=f.video_score, majority=f.majority_class) for f in folds]
    return pd.concat(parts, ignore_index=True).sort_values(["patient", "video"], kind="stable").reset_index(drop=True)


def _level_metrics(y, pred, patients, others: Mapping[str, np.ndarray], n_classes: int, n_boot: int, ci: float,
                   seed: int) -> dict:
    """Each main metric with its patient interval, and its paired difference to each of `others`."""
    out = {}
    for m in MAIN_METRICS:
        out[m] = M.bootstrap_ci(m, y, pred, patients, n_boot, ci, seed, n_classes).as_dict()
        for name, other in others.items():
            out[f"{m}_minus_{name}"] = M.paired_bootstrap_diff(m, y, pred, other, patients, n_boot, ci, seed,
                                                               n_classes).as_dict()
    return out


def _fold_row(fold: OuterFold, n_classes: int, n_boot: int, ci: float, seed: int) -> dict:
    f = fold.frames
    row = {"scope": fold.scope, "test_patients": fold.test_patients, "n_frames": int(len(f)),
           "config_id": fold.selected["config_id"], "recipe": fold.recipe,
           "criterion": fold.selected.get("criterion"), "validation_score": fold.selected.get("validation_score")}
    for m in ("accuracy", "balanced_accuracy", "qwk"):
        row[m] = M.bootstrap_ci(m, f["label"], f["final"], f["patient"], n_boot, ci, seed, n_classes).as_dict()
    if fold.videos is not None:
        v = fold.videos
        row.update({"video_backbone": fold.video_backbone, "video_score": fold.video_score,
                    "video_metric": fold.video_metric, "video_val_score": fold.video_val_score, "n_videos": int(len(v))})
        for m in dict.fromkeys(("qwk", fold.video_metric)):
            row[f"video_{m}"] = M.bootstrap_ci(m, v["label"], v["pred"], v["patient"], n_boot, ci, seed,
                                               n_classes).as_dict()
    return row


def choice_stability(folds: Sequence[OuterFold]) -> dict:
    """How often the folds, each on its own training patients, chose the same thing."""
    def most_common(values: list) -> dict:
        value, count = Counter(values).most_common(1)[0]
        return {"most_common": value, "n_folds": count, "of": len(values), "distinct": len(set(values))}

    out = {"configuration": most_common([f.selected["config_id"] for f in folds]),
           "recipe": most_common([f.recipe for f in folds]),
           "backbone": most_common([f.selected["backbone"] for f in folds])}
    if all(f.video_score for f in folds):
        out["video_score"] = most_common([f"{f.video_backbone} · {f.video_score}" for f in folds])
    return out


def nested_estimate(folds: Sequence[OuterFold], n_classes: int, n_boot: int, ci: float, seed: int,
                    order: str = "ordinal") -> dict:
    """estimate.json's content: pooled frame (and video) metrics with intervals over all patients,
    each fold's choice and score, and the stability of the choice."""
    frames = pooled_frames(folds)
    y, patients = frames["label"].to_numpy(np.int64), frames["patient"].to_numpy()
    others = {"cnn": frames["cnn"].to_numpy(np.int64), "majority": frames["majority"].to_numpy(np.int64)}
    levels = {f.level for f in folds}
    out = {
        "level": "video" if levels == {"video"} else "frame", "class_order": order,
        "n_outer_folds": len(folds), "n_patients": int(frames["patient"].nunique()), "n_frames": int(len(frames)),
        "n_bootstrap": int(n_boot), "ci": float(ci), "seed": int(seed),
        "frame": _level_metrics(y, frames["final"].to_numpy(np.int64), patients, others, n_classes, n_boot, ci, seed),
        "frame_cnn": _level_metrics(y, others["cnn"], patients, {}, n_classes, n_boot, ci, seed),
        "frame_fallback_rate": float(1 - frames["trusted"].astype(bool).mean()),
        "folds": [_fold_row(f, n_classes, n_boot, ci, seed) for f in folds],
        "stability": choice_stability(folds),
    }
    videos = pooled_videos(folds)
    if videos is not None:
        vy, vp = videos["label"].to_numpy(np.int64), videos["patient"].to_numpy()
        out["n_videos"] = int(len(videos))
        out["video"] = _level_metrics(vy, videos["pred"].to_numpy(np.int64), vp,
                                      {"majority": videos["majority"].to_numpy(np.int64)}, n_classes, n_boot, ci, seed)
    return out


def headline_metric(estimate: Mapping) -> tuple[str, str]:
    """(level, metric) of the headline: video QWK (balanced accuracy for nominal classes) at video
    level, else frame accuracy (balanced accuracy)."""
    nominal = estimate.get("class_order", "ordinal") == "nominal"
    if estimate.get("level") == "video" and "video" in estimate:
        return "video", video_metric(estimate.get("class_order", "ordinal"))
    return "frame", "balanced_accuracy" if nominal else "accuracy"


def shown_metrics(estimate: Mapping, metrics) -> list:
    """The metrics worth showing: QWK weighs class distances, which unordered classes do not have."""
    nominal = estimate.get("class_order", "ordinal") == "nominal"
    return [m for m in metrics if not (nominal and m == "qwk")]


def video_fold_metric(estimate: Mapping) -> str:
    """The video metric the folds' rows show beside QWK (balanced accuracy for nominal classes)."""
    return video_metric(estimate.get("class_order", "ordinal"))


def headline(estimate: Mapping, classes: Sequence | None = None) -> str:
    """The report's first sentence: the estimate of the procedure on new patients."""
    level, metric = headline_metric(estimate)
    e = estimate[level][metric]
    what = f"{level} {METRIC_NAMES[metric]}"
    pct = int(round(100 * float(estimate["ci"])))
    return (f"The estimate of this procedure on new patients is {what} {e['estimate']:.3f} "
            f"[{e['lo']:.3f}, {e['hi']:.3f}] ({pct}% interval over patients), from nested cross-validation "
            f"over {estimate['n_patients']} patients in {estimate['n_outer_folds']} outer folds.")


def folds_figure(estimate: Mapping, path) -> Path:
    """Every outer fold's score of its test patients and the pooled estimate, with intervals."""
    from lus_core import plotting

    level, metric = headline_metric(estimate)
    key = f"video_{metric}" if level == "video" else metric
    rows = [(f"{f['scope']} ({len(f['test_patients'])} patients)", f[key]) for f in estimate["folds"]]
    pooled = estimate[level][metric]
    rows.append((f"pooled ({estimate['n_patients']} patients)", pooled))
    labels = [r[0] for r in rows]
    est, lo, hi = ([r[1][k] for r in rows] for k in ("estimate", "lo", "hi"))
    colors = ["tab:gray"] * (len(rows) - 1) + ["tab:blue"]
    xlabel = f"{level} {METRIC_NAMES[metric]}"
    fig = plotting.forest(labels, est, lo, hi, colors, xlabel, title="Nested cross-validation: each outer fold",
                          bold=[False] * (len(rows) - 1) + [True])
    return plotting.save_png(fig, path)


def run_nested_estimate(scopes: Sequence[str], summaries: Sequence, selected_csvs: Sequence, split_json,
                        config: Mapping, out_json, out_frames_csv, out_videos_csv, out_png,
                        video_tables: Mapping[str, Mapping[str, str | os.PathLike]] | None = None) -> dict:
    """Step `nested_estimate`: pool the outer folds, write estimate.json, the pooled predictions
    and the folds figure. `config`: the step's slice (seed, classes, evaluate.n_bootstrap, ci)."""
    split = read_json(split_json)
    if "outer" not in split:
        raise ValueError(f"{split_json}: not a nested split (split.outer_folds 1)")
    folds = load_outer_folds(scopes, summaries, selected_csvs, split, video_tables)
    ev = config["evaluate"]
    estimate = nested_estimate(folds, len(config["classes"]), int(ev["n_bootstrap"]), float(ev["ci"]),
                               int(config["seed"]), class_order(config))
    estimate["classes"] = list(config["classes"])
    estimate["headline"] = headline(estimate)
    with atomic_path(out_frames_csv) as tmp:
        pooled_frames(folds).to_csv(tmp, index=False)
    videos = pooled_videos(folds)
    with atomic_path(out_videos_csv) as tmp:
        (videos if videos is not None else pd.DataFrame(columns=["video", "patient", "label", "pred"])).to_csv(
            tmp, index=False)
    folds_figure(estimate, out_png)
    write_json(out_json, clean_json(estimate))
    log.info("nested_estimate: %s", estimate["headline"])
    return estimate
