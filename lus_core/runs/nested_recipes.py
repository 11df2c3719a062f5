"""Recipes compared by nested cross-validation: `lus summarize --recipes` over nested runs
(split.outer_folds > 1) of one cohort.

With nested runs a recipe is a whole run's procedure (what trains, then everything each outer
fold chose on its training patients), and its score is the pooled one: every patient's video
answer from the outer fold that held them out (`nested/videos.csv`). The runs must hold the same
videos with the same labels and the same outer test groups; the paired difference against the
reference recipe resamples all patients, the same resamples for every recipe.

The recipe to deploy is the one whose deployed scope has the best validation video score (its
video answer chosen on every patient's out-of-fold predictions: training data only); the pooled
estimate then shows how that procedure does on patients it never saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lus_core.class_order import video_metric
from lus_core.evaluation.answer_level import METRIC_NAMES
from lus_core.metrics import CM_METRICS, bootstrap_ci, confusion_matrix, paired_bootstrap_diff
from lus_core.runs.reader import FinishedRun
from lus_core.runs.recipes import Recipe, interval_text, pair_lines, row_marks
from lus_core.runs.run_time import read_full_run
from lus_core.videolevel.table import chosen_video_score

METRICS = ("accuracy", "balanced_accuracy", "qwk")


def _pooled_videos(run: FinishedRun) -> pd.DataFrame:
    videos = run.nested_videos()
    if videos.empty:
        raise ValueError(f"{run.layout.nested_videos()}: no pooled video answers (the run has no video scores); recipes are compared "
                         "on video scores")
    if "seed" not in videos:  # a run from before train.seeds: its one seed
        videos = videos.assign(seed=int(run.nested["seed"]))
    return videos.set_index(["seed", "video"]).sort_index()


def _deployed_choice(run: FinishedRun, metric: str) -> tuple[str, float]:
    """The deployed scope's video answer and its validation score (every patient, out of fold)."""
    answer = run.summary.get("video_answer")
    if answer:
        return f"{answer['backbone']} · {answer['video_score']}", float(answer.get("validation_score",
                                                                               answer.get("validation_qwk")))
    backbone = run.selected()["backbone"]
    best = chosen_video_score(run.video_level(backbone), metric)
    return f"{backbone} · {best['video_score']}", float(best[f"val_{metric}"])


def per_seed_scores(videos: pd.DataFrame, pred: np.ndarray, metric: str, n_classes: int) -> dict[int, float]:
    """The metric of each model seed's own video answers (point estimates: how far re-seeding moves
    a recipe, the doubt the pooled interval over patients does not hold)."""
    seeds = videos.index.get_level_values("seed").to_numpy()
    y = videos["label"].to_numpy(np.int64)
    return {int(s): float(CM_METRICS[metric](confusion_matrix(y[seeds == s], pred[seeds == s], n_classes)))
            for s in np.unique(seeds)}


def _outer_groups(run: FinishedRun) -> list[tuple[str, ...]]:
    return [tuple(sorted(map(str, o["test_patients"]))) for o in run.split["outer"]]


def compare_nested_recipes(runs: list[Path], reference: str | None = None, n_boot: int | None = None,
                           ci: float | None = None, seed: int | None = None,
                           pairs: list[tuple[str, str]] = ()) -> tuple[pd.DataFrame, dict]:
    """One row per nested run (its recipe: the run folder's name); `reference` one of those names,
    default the first; resamples, interval and seed default to the reference's nested estimate
    (so its row repeats that estimate). Returns (table, notes) shaped for `nested_recipes_markdown`."""
    finished = [FinishedRun(Path(r)) for r in runs]
    not_nested = [str(f.root) for f in finished if not f.is_nested]
    if not_nested:
        raise ValueError(f"{', '.join(not_nested)}: not nested (split.outer_folds 1); nested runs are compared "
                         "with nested runs only")
    names = [f.root.name for f in finished]
    if len(set(names)) != len(names):
        raise ValueError(f"two runs share a folder name: {names}")
    for name in [reference, *(n for pair in pairs for n in pair)]:
        if name and name not in names:
            raise ValueError(f"recipe {name!r} is none of {names}")
    ref = finished[names.index(reference)] if reference else finished[0]
    groups = {f.root.name: _outer_groups(f) for f in finished}
    if len({tuple(g) for g in groups.values()}) != 1:
        raise ValueError(f"the runs have different outer test groups: {groups}")
    n_boot = int(ref.nested["n_bootstrap"] if n_boot is None else n_boot)
    ci = float(ref.nested["ci"] if ci is None else ci)
    seed = int(ref.nested["seed"] if seed is None else seed)
    order = ref.summary.get("class_order", "ordinal")
    metric = video_metric(order)
    ref_videos = _pooled_videos(ref)
    n_classes = len(ref.config["classes"])
    y, patients = ref_videos["label"].to_numpy(np.int64), ref_videos["patient"].to_numpy()
    ref_pred = ref_videos["pred"].to_numpy(np.int64)
    rows, preds = [], {}
    for run in finished:
        videos = _pooled_videos(run)
        seeds = sorted(set(videos.index.get_level_values("seed")))
        if seeds != sorted(set(ref_videos.index.get_level_values("seed"))):
            raise ValueError(f"{run.root}: its model seeds {seeds} differ from {ref.root}'s (train.seeds): recipes "
                             "are compared seed by seed")
        if list(videos.index) != list(ref_videos.index) or not (videos["label"] == ref_videos["label"]).all():
            raise ValueError(f"{run.root}: its videos or labels differ from {ref.root}'s")
        pred = videos["pred"].to_numpy(np.int64)
        preds[run.root.name] = pred
        estimate = run.nested
        choice, val = _deployed_choice(run, metric)
        row = {"recipe": run.root.name,
               "description": " | ".join(Recipe(run, b).describe() for b in run.config["train"]["backbones"]),
               "deployed_video_answer": choice, "deployed_val_score": val,
               "frame_accuracy": estimate["frame"]["accuracy"]["estimate"],
               "video_scores_chosen": estimate["stability"].get("video_score", {}).get("distinct"),
               "n_folds": estimate["n_outer_folds"]}
        for m in METRICS:
            res = bootstrap_ci(m, y, pred, patients, n_boot, ci, seed, n_classes)
            row.update({f"video_{m}": res.estimate, f"video_{m}_lo": res.lo, f"video_{m}_hi": res.hi})
        diff = paired_bootstrap_diff(metric, y, pred, ref_pred, patients, n_boot, ci, seed, n_classes)
        row.update({"delta": diff.diff, "delta_lo": diff.lo, "delta_hi": diff.hi, "delta_significant": bool(diff.significant)})
        full = read_full_run(run.root)
        row["run_wall_minutes"] = full["wall_seconds"] / 60 if full else None
        row["per_seed"] = per_seed_scores(videos, pred, metric, n_classes)
        rows.append(row)
    table = pd.DataFrame(rows)
    chosen = table.loc[table["deployed_val_score"].idxmax(), "recipe"]  # first of equals: the listed order
    table["chosen"] = table["recipe"] == chosen
    seeds = sorted(set(ref_videos.index.get_level_values("seed")))
    notes = {"reference": ref.root.name, "metric": metric, "chosen": chosen, "n_seeds": len(seeds),
             "n_videos": int(ref_videos.index.get_level_values("video").nunique()),
             "n_patients": int(ref_videos["patient"].nunique()), "n_folds": len(groups[ref.root.name]),
             "ci": ci, "n_boot": n_boot, "pairs": []}
    for a, b in pairs:
        diff = paired_bootstrap_diff(metric, y, preds[a], preds[b], patients, n_boot, ci, seed, n_classes)
        notes["pairs"].append({"recipe": a, "other": b, **diff.as_dict()})
    return table, notes


def nested_recipes_markdown(table: pd.DataFrame, notes: dict) -> str:
    ci = f"{round(100 * notes['ci'])}%"
    name = METRIC_NAMES[notes["metric"]]

    lines = [
        f"Every recipe's whole procedure by nested cross-validation on the same {notes['n_folds']} outer test groups: "
        f"each patient's video answer comes from the outer fold that held them out ({notes['n_videos']} videos of "
        f"{notes['n_patients']} patients"
        + (f", every model seed's answers pooled ({notes['n_seeds']} seeds)" if notes["n_seeds"] > 1 else "")
        + f"; {ci} intervals from resampling all patients; Δ is paired against "
        f"{notes['reference']} on the same resamples). Chosen on the deployed scope's validation video {name} "
        f"(every patient, out of fold; no pooled test score is read): **{notes['chosen']}**.", "",
        f"| recipe | what trains | deployed video answer (validation {name}) | video accuracy | video balanced accuracy "
        f"| video QWK | Δ video {name} vs {notes['reference']} | pooled frame accuracy | distinct video scores over "
        "the folds | run wall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        wall, delta, mark = row_marks(r, notes, "delta")
        lines.append(
            f"| {r['recipe']}{mark} | {r['description']} | {r['deployed_video_answer']} ({r['deployed_val_score']:.3f}) "
            f"| {interval_text(r, 'video_accuracy')} | {interval_text(r, 'video_balanced_accuracy')} | {interval_text(r, 'video_qwk')} | {delta} "
            f"| {r['frame_accuracy']:.3f} | {r['video_scores_chosen']} of {r['n_folds']} | {wall} |")
    lines += ["", "\\* the interval excludes 0.", ""]
    lines += pair_lines(notes["pairs"], f"pooled video {name}")
    if notes["n_seeds"] > 1:
        lines += per_seed_lines(table, notes, name)
    return "\n".join(lines)


def per_seed_lines(table: pd.DataFrame, notes: dict, name: str) -> list[str]:
    """Each recipe's video score for each model seed alone, with its difference to the reference
    recipe's same seed: a difference that changes sign between seeds is not evidence."""
    reference = table.set_index("recipe").loc[notes["reference"], "per_seed"]
    seeds = sorted(reference)
    lines = [f"Each model seed alone (video {name}; in brackets, minus {notes['reference']} with the same seed):", "",
             "| recipe | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for _, r in table.iterrows():
        cells = [f"{r['per_seed'][s]:.3f}" + ("" if r["recipe"] == notes["reference"]
                                              else f" ({r['per_seed'][s] - reference[s]:+.3f})") for s in seeds]
        lines.append(f"| {r['recipe']} | " + " | ".join(cells) + " |")
    return [*lines, ""]
