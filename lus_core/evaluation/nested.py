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

With several model seeds (`train.seeds`) every outer fold has one replica per seed, each with its
own models and the choice made on the mean over the seeds (lus_core.evaluation.seeds). The
estimate pools every seed's predictions: a resampled patient brings all of its seeds' rows, so
the interval is over patients and the estimate is the procedure's over its seeds; `seeds` gives
each seed's own pooled estimate and their spread, beside the patient interval.

Writes `nested/estimate.json`, `nested/predictions.csv` (frames), `nested/videos.csv` (videos,
when the run fits video models), both with the model seed of every row, and `nested/folds.png`
(every fold and the pooled estimate).
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
from lus_core.split.scopes import scope_split, split_scope
from lus_core.videolevel.table import chosen_video_score, read_video_table

log = logging.getLogger(__name__)

# what a "recipe" is when the stability of the choice is counted: the configuration without its
# neighbour count and fallback details (which the folds may tune differently around one idea)
RECIPE_FIELDS = ("row_type", "backbone", "confidence", "space")


@dataclass
class OuterFold:
    """What one outer fold chose and how it scored its test patients."""

    scope: str  # the outer fold (outer{o}); its seed replica's scope name is `replica`
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
    seed: int = 0  # the model seed of its replica (train.seeds)
    replica: str = ""  # the replica's scope name (lus_core.split.scopes)

    @property
    def majority_class(self) -> int:
        """The most frequent score among the fold's training frames (ties: the lower class)."""
        counts = {int(c): int(n) for c, n in self.train_counts.items()}
        return max(sorted(counts), key=lambda c: counts[c])

    @property
    def recipe(self) -> str:
        return " / ".join(str(self.selected.get(f) or "-") for f in RECIPE_FIELDS)


def load_outer_folds(scopes: Sequence[str], summaries: Sequence, selected_csvs: Sequence, split: Mapping,
                     video_tables: Mapping[str, Mapping[str, str | os.PathLike]] | None = None,
                     seeds: Sequence[int] | None = None) -> list[OuterFold]:
    """Every outer fold's (every seed replica's) choice and test predictions; checks that each
    fold's predictions are its test patients', that each seed's folds test every patient of the
    cohort exactly once, and that a fold's replicas chose the same (they choose on one mean)."""
    folds = []
    seeds = list(seeds) if seeds is not None else [0] * len(scopes)
    for replica, seed, summary_json, selected_csv in zip(scopes, seeds, summaries, selected_csvs, strict=True):
        scope = split_scope(replica)[0]
        part = scope_split(split, scope)
        test = sorted(map(str, part["test_patients"]))
        frames = read_selected_scores(selected_csv)
        got = sorted(set(frames["patient"]))
        if got != test:
            raise ValueError(f"{selected_csv}: patients {got} are not outer fold {scope}'s test patients {test}")
        summary = read_summary(summary_json)
        fold = OuterFold(scope, test, dict(part["train_counts"]), dict(summary["selected"]), frames,
                         level=str(summary.get("answer_level", "frame")), seed=int(seed), replica=replica)
        if video_tables:
            _choose_video_score(fold, summary, video_tables[replica], summary_json)
        folds.append(fold)
    everyone = sorted(map(str, split["deployed"]["train_patients"]))
    for seed, own in by_seed(folds).items():
        tested = [p for f in own for p in f.test_patients]
        if sorted(tested) != everyone:
            raise ValueError(f"the outer folds of seed {seed} test {len(tested)} patients ({len(set(tested))} "
                             f"distinct), the cohort has {len(everyone)}: every patient must be tested exactly once")
    for scope, own in by_scope(folds).items():
        chosen = {(f.selected["config_id"], f.video_backbone, f.video_score) for f in own}
        if len(chosen) > 1:
            raise ValueError(f"outer fold {scope}'s seed replicas chose differently ({sorted(map(str, chosen))}); "
                             "they choose on the mean over the seeds: were they made with one config?")
    return folds


def by_seed(folds: Sequence[OuterFold]) -> dict[int, list[OuterFold]]:
    out: dict[int, list[OuterFold]] = {}
    for f in folds:
        out.setdefault(f.seed, []).append(f)
    return out


def by_scope(folds: Sequence[OuterFold]) -> dict[str, list[OuterFold]]:
    """The outer folds in order, each with its seed replicas."""
    out: dict[str, list[OuterFold]] = {}
    for f in folds:
        out.setdefault(f.scope, []).append(f)
    return out


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
    parts = [f.frames.assign(outer=f.scope, majority=f.majority_class, seed=f.seed) for f in folds]
    return pd.concat(parts, ignore_index=True).sort_values(["frame_id", "seed"], kind="stable").reset_index(drop=True)


def pooled_videos(folds: Sequence[OuterFold]) -> pd.DataFrame | None:
    if any(f.videos is None for f in folds):
        return None
    parts = [f.videos.assign(outer=f.scope, video_score=f.video_score, majority=f.majority_class, seed=f.seed)
             for f in folds]
    return pd.concat(parts, ignore_index=True).sort_values(["patient", "video", "seed"],
                                                          kind="stable").reset_index(drop=True)


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


def _fold_row(replicas: Sequence[OuterFold], n_classes: int, n_boot: int, ci: float, seed: int) -> dict:
    """One outer fold's choice and its test scores, its seed replicas pooled."""
    fold = replicas[0]
    f = pd.concat([r.frames for r in replicas], ignore_index=True)
    row = {"scope": fold.scope, "test_patients": fold.test_patients, "n_frames": int(len(fold.frames)),
           "config_id": fold.selected["config_id"], "recipe": fold.recipe,
           "criterion": fold.selected.get("criterion"), "validation_score": fold.selected.get("validation_score")}
    for m in ("accuracy", "balanced_accuracy", "qwk"):
        row[m] = M.bootstrap_ci(m, f["label"], f["final"], f["patient"], n_boot, ci, seed, n_classes).as_dict()
    if fold.videos is not None:
        v = pd.concat([r.videos for r in replicas], ignore_index=True)
        row.update({"video_backbone": fold.video_backbone, "video_score": fold.video_score,
                    "video_metric": fold.video_metric, "video_val_score": fold.video_val_score, "n_videos": int(len(fold.videos))})
        for m in dict.fromkeys(("qwk", fold.video_metric)):
            row[f"video_{m}"] = M.bootstrap_ci(m, v["label"], v["pred"], v["patient"], n_boot, ci, seed,
                                               n_classes).as_dict()
    return row


def choice_stability(folds: Sequence[OuterFold]) -> dict:
    """How often the folds, each on its own training patients, chose the same thing (a fold's
    seed replicas choose together: one choice per fold)."""
    folds = [own[0] for own in by_scope(folds).values()]
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
        "n_outer_folds": len(by_scope(folds)), "n_patients": int(frames["patient"].nunique()),
        "n_frames": int(frames["frame_id"].nunique()),
        "n_bootstrap": int(n_boot), "ci": float(ci), "seed": int(seed),
        "frame": _level_metrics(y, frames["final"].to_numpy(np.int64), patients, others, n_classes, n_boot, ci, seed),
        "frame_cnn": _level_metrics(y, others["cnn"], patients, {}, n_classes, n_boot, ci, seed),
        "frame_fallback_rate": float(1 - frames["trusted"].astype(bool).mean()),
        "folds": [_fold_row(own, n_classes, n_boot, ci, seed) for own in by_scope(folds).values()],
        "stability": choice_stability(folds),
    }
    videos = pooled_videos(folds)
    if videos is not None:
        vy, vp = videos["label"].to_numpy(np.int64), videos["patient"].to_numpy()
        out["n_videos"] = int(len(videos.drop_duplicates(["patient", "video"])))
        out["video"] = _level_metrics(vy, videos["pred"].to_numpy(np.int64), vp,
                                      {"majority": videos["majority"].to_numpy(np.int64)}, n_classes, n_boot, ci, seed)
    if len(by_seed(folds)) > 1:
        out["seeds"] = seed_spread(frames, videos, n_classes)
    return out


def seed_spread(frames: pd.DataFrame, videos: pd.DataFrame | None, n_classes: int) -> dict:
    """Each model seed's own pooled estimate (every patient, that seed's models) of the main
    metrics, and their spread over the seeds: what a re-seeded run of the procedure moves by."""
    tables = {"frame": (frames, "final"), **({"video": (videos, "pred")} if videos is not None else {})}
    per_seed = []
    for seed in sorted(frames["seed"].unique()):
        row = {"seed": int(seed)}
        for level, (table, column) in tables.items():
            own = table[table["seed"] == seed]
            cm = M.confusion_matrix(own["label"].to_numpy(np.int64), own[column].to_numpy(np.int64), n_classes)
            row.update({f"{level}_{m}": float(M.CM_METRICS[m](cm)) for m in MAIN_METRICS})
        per_seed.append(row)
    spread = {}
    for key in (k for k in per_seed[0] if k != "seed"):
        values = np.array([r[key] for r in per_seed], np.float64)
        spread[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)), "min": float(values.min()),
                       "max": float(values.max())}
    return {"n_seeds": len(per_seed), "per_seed": per_seed, "spread": spread}


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
    seeds = ""
    if "seeds" in estimate:
        sp = estimate["seeds"]["spread"][f"{level}_{metric}"]
        seeds = (f", its {estimate['seeds']['n_seeds']} model seeds pooled (each seed alone: {sp['min']:.3f} to "
                 f"{sp['max']:.3f}, sd {sp['sd']:.3f})")
    return (f"The estimate of this procedure on new patients is {what} {e['estimate']:.3f} "
            f"[{e['lo']:.3f}, {e['hi']:.3f}] ({pct}% interval over patients), from nested cross-validation "
            f"over {estimate['n_patients']} patients in {estimate['n_outer_folds']} outer folds{seeds}.")


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
                        video_tables: Mapping[str, Mapping[str, str | os.PathLike]] | None = None,
                        seeds: Sequence[int] | None = None) -> dict:
    """Step `nested_estimate`: pool the outer folds (every seed replica of each: `scopes`, with
    their model `seeds`), write estimate.json, the pooled predictions and the folds figure.
    `config`: the step's slice (seed, classes, evaluate.n_bootstrap, ci)."""
    split = read_json(split_json)
    if "outer" not in split:
        raise ValueError(f"{split_json}: not a nested split (split.outer_folds 1)")
    folds = load_outer_folds(scopes, summaries, selected_csvs, split, video_tables,
                             seeds if seeds is not None else [int(config["seed"])] * len(scopes))
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


def seed_table(estimate: Mapping) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the model seeds' own pooled estimates and their spread (the report and the
    results pages show it beside the patient interval); no rows for a run with one seed."""
    seeds = estimate.get("seeds")
    if not seeds:
        return [], []
    level, metric = headline_metric(estimate)
    keys = [f"{lv}_{m}" for lv in ("video", "frame") for m in shown_metrics(estimate, MAIN_METRICS)
            if f"{lv}_{m}" in seeds["spread"]]
    keys.sort(key=lambda k: k != f"{level}_{metric}")  # the headline metric first
    header = ["model seed", *(f"{k.split('_', 1)[0]} {METRIC_NAMES[k.split('_', 1)[1]]}" for k in keys)]
    rows = [[str(r["seed"]), *(f"{r[k]:.3f}" for k in keys)] for r in seeds["per_seed"]]
    for stat in ("mean", "sd"):
        rows.append([f"{stat} over {seeds['n_seeds']} seeds", *(f"{seeds['spread'][k][stat]:.3f}" for k in keys)])
    pooled = estimate[level][metric]
    rows.append(["all seeds pooled (the estimate)",
                 *(f"{pooled['estimate']:.3f} [{pooled['lo']:.3f}, {pooled['hi']:.3f}]" if k == f"{level}_{metric}"
                   else "" for k in keys)])
    return header, rows
