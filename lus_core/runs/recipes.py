"""Training recipes compared across finished runs on the same split: `lus summarize --recipes`.

A recipe is one backbone of one run (its encoder, weights, what trains, the loss, the cached
views). For each, from the runs' own files: the CNN alone at frame level (validation QWK on the
training patients out of fold, test accuracy and QWK with patient intervals), its video score
chosen on the training patients (the fixed or learned aggregation with the best out-of-fold
video QWK), that score on the test videos, the paired difference of video QWK against a
reference recipe on the same test videos and patient resamples, and the time of the run.

The recipe to deploy is the one with the best validation video QWK: the labels are per video,
and nothing of the test patients is read to choose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lus_core.cnn.settings import (
    backbone_finetune,
    backbone_weights,
    cache_enabled,
    embedding_is_learned,
    ensemble_of,
    trained_blocks,
)
from lus_core.metrics import bootstrap_ci, paired_bootstrap_diff
from lus_core.runs.reader import FinishedRun
from lus_core.runs.run_time import benchmark_table, read_full_run
from lus_core.videolevel.table import chosen_video_score as best_video_score

CRITERION = "validation video QWK (training patients, out of fold)"


@dataclass
class Recipe:
    finished: FinishedRun
    backbone: str

    @property
    def run(self) -> Path:
        return self.finished.root

    @property
    def config(self) -> dict:
        return self.finished.config

    @property
    def name(self) -> str:
        return f"{self.backbone} @ {self.run.name}"

    def describe(self) -> str:
        """What was trained, in words, from the run's recorded config."""
        tc = self.config["train"]
        weights = backbone_weights(self.config, self.backbone)
        frozen = not embedding_is_learned(self.config, self.backbone)
        blocks = trained_blocks(backbone_finetune(self.config, self.backbone))
        cached = cache_enabled(self.config, self.backbone)
        parts = [f"{self.backbone}, {'ImageNet' if weights == 'imagenet' else weights} weights"
                 if weights != "none" else f"{self.backbone} from random weights"]
        if frozen:
            parts.append("frozen encoder + new output layer (cached embeddings)")
        elif blocks:
            parts.append(f"last {blocks} block(s) + new output layer fine-tuned"
                         + (" (on cached activations)" if cached else ""))
        else:
            parts.append("trained end to end")
        parts.append(f"SORD (alpha {tc['sord_alpha']})" if tc["loss"] == "sord" else "cross-entropy")
        if cached and int(tc["cache_views"]):
            parts.append(f"{tc['cache_views']} augmented views per frame")
        findings = list(self.config["dataset"]["findings"])
        if findings:
            parts.append(f"auxiliary findings {', '.join(findings)} (loss weight {tc['findings_weight']})")
        parts.append(f"{tc['image_size']} px, {tc['epochs']} epochs")
        if ensemble_of(self.config):
            parts.append(f"test patients scored by the mean of the all and {self.config['split']['n_folds']} fold models")
        video = video_model_words(self.config["video_model"])
        if video:
            parts.append(video)
        return "; ".join(parts)


def video_model_words(vm: dict) -> str:
    """The learned video score's settings that differ from the default one, in words ("" for the default)."""
    if not vm["enabled"]:
        return "no learned video score"
    words = []
    if vm["input"] != "softmax":
        words.append(f"on the frames' {vm['input']}s")
    if vm["motion"]:
        words.append("with their motion")
    if vm["dropout"]:
        words.append(f"dropout {vm['dropout']:g}")
    if vm["early_stopping"]:
        words.append("early stopping on inner folds")
    return f"video score {', '.join(words)}" if words else ""


def recipes_of(runs: list[Path]) -> list[Recipe]:
    out = []
    for run in runs:
        finished = FinishedRun(run)
        out += [Recipe(finished, b) for b in finished.config["train"]["backbones"]]
    return out


def _frame_row(recipe: Recipe) -> pd.Series:
    matrix = recipe.finished.matrix
    rows = matrix[(matrix.row_type == "cnn") & (matrix.backbone == recipe.backbone)]
    if len(rows) != 1:
        raise ValueError(f"{recipe.finished.layout.matrix()}: expected one CNN-alone row of {recipe.backbone}")
    return rows.iloc[0]


def _video_table(recipe: Recipe) -> pd.DataFrame:
    return recipe.finished.video_table(recipe.backbone)


def chosen_video_score(recipe: Recipe) -> tuple[str, float]:
    """The video score with the best out-of-fold validation QWK (ties: the listed order of
    eval/summary.json, i.e. fixed aggregations before the learned one)."""
    try:
        rows = recipe.finished.video_level(recipe.backbone)
    except ValueError as exc:
        raise ValueError(f"{exc}; recipes are compared on video scores") from exc
    best = best_video_score(rows)
    return best["video_score"], float(best["val_qwk"])


def _minutes(recipe: Recipe, jobs: pd.DataFrame) -> tuple[float | None, float]:
    """(wall minutes of the run's last full run or None, job-minutes of this backbone's jobs
    plus the jobs every backbone shares); `jobs`: the run's benchmark table."""
    full = read_full_run(recipe.run)
    other = set(recipe.config["train"]["backbones"]) - {recipe.backbone}
    # benchmarks/{rule}/{backbone}/... or benchmarks/{rule}/{backbone}.tsv: another backbone's job
    others = other | {f"{b}.tsv" for b in other}
    mine = jobs["file"].map(lambda f: not others.intersection(f.split("/")[1:]))
    return (full["wall_seconds"] / 60 if full else None), float(jobs.loc[mine, "s"].sum() / 60)


def compare_recipes(runs: list[Path], reference: str | None = None, n_boot: int = 1000, ci: float = 0.95,
                    seed: int = 0, pairs: list[tuple[str, str]] = ()) -> tuple[pd.DataFrame, dict]:
    """One row per recipe of `runs` (same split required); `reference` is a recipe name
    (`backbone @ run`), default the first recipe. `pairs`: (recipe, other) whose paired video QWK
    difference is wanted too (e.g. with and without one change), in notes["pairs"].
    Returns (table, notes)."""
    recipes = recipes_of([Path(r) for r in runs])
    splits = {r.run: r.finished.split["test_patients"] for r in recipes}
    if len({tuple(sorted(v)) for v in splits.values()}) != 1:
        raise ValueError(f"the runs have different test patients: {splits}")
    names = [r.name for r in recipes]
    for name in [reference, *(n for pair in pairs for n in pair)]:
        if name and name not in names:
            raise ValueError(f"recipe {name!r} is none of {names}")
    ref = recipes[names.index(reference)] if reference else recipes[0]
    jobs = {run: benchmark_table(run) for run in dict.fromkeys(r.run for r in recipes)}  # read once per run
    ref_how, _ = chosen_video_score(ref)
    ref_table = _video_table(ref)
    ref_test = ref_table[ref_table.split == "test"].set_index("video")
    n_classes = len(ref.config["classes"])
    rows, scores = [], {}
    for r in recipes:
        frame = _frame_row(r)
        how, val_qwk = chosen_video_score(r)
        table = _video_table(r)
        test = table[table.split == "test"].set_index("video")
        if set(test.index) != set(ref_test.index) or not (test.loc[ref_test.index, "label"] == ref_test["label"]).all():
            raise ValueError(f"{r.name}: its test videos or labels differ from {ref.name}'s")
        test = test.loc[ref_test.index]
        scores[r.name] = test[how]
        acc = bootstrap_ci("accuracy", test["label"], test[how], test["patient"], n_boot, ci, seed, n_classes)
        qwk = bootstrap_ci("qwk", test["label"], test[how], test["patient"], n_boot, ci, seed, n_classes)
        diff = paired_bootstrap_diff("qwk", test["label"], test[how], ref_test[ref_how], test["patient"],
                                     n_boot, ci, seed, n_classes)
        wall, job_minutes = _minutes(r, jobs[r.run])
        rows.append({
            "recipe": r.name, "description": r.describe(),
            "frame_val_qwk": float(frame["val_qwk"]),
            "frame_accuracy": float(frame["accuracy"]), "frame_accuracy_lo": float(frame["accuracy_lo"]),
            "frame_accuracy_hi": float(frame["accuracy_hi"]),
            "frame_qwk": float(frame["qwk"]), "frame_qwk_lo": float(frame["qwk_lo"]), "frame_qwk_hi": float(frame["qwk_hi"]),
            "video_score": how, "video_val_qwk": val_qwk,
            "video_accuracy": acc.estimate, "video_accuracy_lo": acc.lo, "video_accuracy_hi": acc.hi,
            "video_qwk": qwk.estimate, "video_qwk_lo": qwk.lo, "video_qwk_hi": qwk.hi,
            "delta_video_qwk": diff.diff, "delta_video_qwk_lo": diff.lo, "delta_video_qwk_hi": diff.hi,
            "delta_video_qwk_significant": bool(diff.significant),
            "run_wall_minutes": wall, "job_minutes": job_minutes,
        })
    table = pd.DataFrame(rows)
    chosen = table.loc[table["video_val_qwk"].idxmax(), "recipe"]  # first of equals: the listed order
    table["chosen"] = table["recipe"] == chosen
    notes = {"reference": ref.name, "reference_video_score": ref_how, "chosen": chosen, "criterion": CRITERION,
             "n_test_videos": len(ref_test), "n_test_patients": int(ref_test["patient"].nunique()),
             "ci": ci, "n_boot": n_boot, "pairs": []}
    for a, b in pairs:  # the same test videos, labels and patient resamples as the Δ column
        diff = paired_bootstrap_diff("qwk", ref_test["label"], scores[a], scores[b], ref_test["patient"],
                                     n_boot, ci, seed, n_classes)
        notes["pairs"].append({"recipe": a, "other": b, **diff.as_dict()})
    return table, notes


def interval_text(row, key: str, signed: bool = False) -> str:
    """`row[key]` with its interval (`key_lo`, `key_hi`), 3 decimals."""
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(row[key])} [{f.format(row[key + '_lo'])}, {f.format(row[key + '_hi'])}]"


def row_marks(row, notes: dict, delta_key: str) -> tuple[str, str, str]:
    """(run wall time, Δ against the reference with its interval, the chosen mark) of a table row."""
    minutes = row["run_wall_minutes"]
    wall = "—" if minutes is None or pd.isna(minutes) else f"{minutes:.1f} min"
    delta = "—" if row["recipe"] == notes["reference"] else interval_text(row, delta_key, signed=True) + (
        " *" if row[f"{delta_key}_significant"] else "")
    return wall, delta, " (chosen)" if row["chosen"] else ""


def pair_lines(pairs: list[dict], what: str) -> list[str]:
    """The notes' paired differences (recipe − other) as a list, `what` naming the metric."""
    if not pairs:
        return []
    return [f"Paired differences of {what}, on the same patient resamples:", "",
            *(f"- {p['recipe']} − {p['other']}: {p['diff']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}]"
              + (" (the interval excludes 0)" if p["significant"] else " (the interval includes 0)") for p in pairs),
            ""]


def recipes_markdown(table: pd.DataFrame, notes: dict) -> str:
    ci = f"{round(100 * notes['ci'])}%"

    lines = [
        f"Every recipe on the same split: frame level is the CNN alone; the video score of each recipe is "
        f"the aggregation (max, mean, majority, mean of the most confident frames, learned attention) with "
        f"the best out-of-fold video QWK on the training patients. Test: {notes['n_test_videos']} videos of "
        f"{notes['n_test_patients']} patients, {ci} intervals from resampling patients; Δ is paired against "
        f"{notes['reference']} ({notes['reference_video_score']}) on the same resamples. Chosen on the "
        f"{notes['criterion']}: **{notes['chosen']}**.", "",
        "| recipe | what trains | frame val QWK | frame accuracy | frame QWK | video score | video val QWK "
        f"| video accuracy | video QWK | Δ video QWK vs {notes['reference']} | run wall / recipe job time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        wall, delta, mark = row_marks(r, notes, "delta_video_qwk")
        lines.append(
            f"| {r['recipe']}{mark} | {r['description']} | {r['frame_val_qwk']:.3f} | {interval_text(r, 'frame_accuracy')} "
            f"| {interval_text(r, 'frame_qwk')} | {r['video_score']} | {r['video_val_qwk']:.3f} | {interval_text(r, 'video_accuracy')} "
            f"| {interval_text(r, 'video_qwk')} | {delta} | {wall} / {r['job_minutes']:.1f} job-min |")
    lines += ["", "\\* the interval excludes 0. Run wall: the whole run (all its backbones) from its "
              "`logs/full_run.json`; recipe job time: the jobs of this backbone plus the shared ones "
              "(extraction, split, evaluation), summed over jobs.", ""]
    lines += pair_lines(notes.get("pairs"), "test video QWK (each recipe's chosen video score)")
    return "\n".join(lines)
