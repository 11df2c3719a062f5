"""`lus summarize --out` for a nested run (split.outer_folds > 1): the estimate of the procedure
from every patient, what each outer fold chose, the stability of that choice, and the deployed
configuration, from the run's own files (nested/estimate.json, the deployed eval/summary.json,
split.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lus_core.evaluation.answer_level import METRIC_NAMES
from lus_core.evaluation.nested import seed_table, shown_metrics, video_fold_metric
from lus_core.runs.reader import FinishedRun
from lus_core.runs.run_time import run_time_line

METRIC_LABEL = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
                "qwk": "QWK"}
LEVELS = (("video", "per video (the video score each fold chose)"), ("frame", "per frame (selected configuration)"),
          ("frame_cnn", "per frame, CNN alone"))


def _ci(d: dict | None, signed: bool = False) -> str:
    if not d:
        return "—"
    est = d.get("estimate", d.get("diff"))
    if est is None:
        return "—"
    f = "+.3f" if signed else ".3f"
    text = format(est, f) if d.get("lo") is None else f"{format(est, f)} [{format(d['lo'], f)}, {format(d['hi'], f)}]"
    return text + (" *" if d.get("significant") else "")


def estimate_lines(estimate: dict) -> list[str]:
    """The headline sentence and the pooled metrics table."""
    lines = [f"**{estimate['headline']}**", "",
             f"Every patient's score comes from the outer fold that held them out (that fold trained its models and "
             f"chose its configuration without them): {estimate['n_frames']} frames"
             + (f", {estimate['n_videos']} videos" if "n_videos" in estimate else "")
             + f"; {int(round(100 * estimate['ci']))}% intervals from {estimate['n_bootstrap']} resamples of all "
             f"{estimate['n_patients']} patients; differences paired on the same resamples.", "",
             "| level | metric | estimate | minus the CNN alone | minus the majority class |", "|---|---|---|---|---|"]
    for level, label in LEVELS:
        if level not in estimate:
            continue
        res = estimate[level]
        for m in shown_metrics(estimate, METRIC_LABEL):
            name = METRIC_LABEL[m]
            lines.append(f"| {label} | {name} | {_ci(res[m])} | {_ci(res.get(f'{m}_minus_cnn'), True)} "
                         f"| {_ci(res.get(f'{m}_minus_majority'), True)} |")
    lines += ["", "\\* the interval excludes 0. The majority class is each fold's most frequent training score.", ""]
    header, rows = seed_table(estimate)
    if rows:
        lines += ["Each model seed's own estimate over every patient (train.seeds), and their spread over the seeds:",
                  "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                  *("| " + " | ".join(r) + " |" for r in rows), ""]
    return lines


def folds_lines(estimate: dict) -> list[str]:
    vm = video_fold_metric(estimate)
    lines = ["| outer fold | test patients | configuration chosen (training patients) | validation score "
             f"| frame accuracy | video score chosen | video {METRIC_NAMES[vm]} |", "|---|---|---|---|---|---|---|"]
    for f in estimate["folds"]:
        lines.append(f"| {f['scope']} | {', '.join(map(str, f['test_patients']))} | {f['config_id']} "
                     f"| {f['validation_score']:.3f} | {_ci(f['accuracy'])} | {f.get('video_score') or '—'} "
                     f"| {_ci(f.get(f'video_{vm}'))} |")
    lines += ["", "Stability of the choice across the outer folds:", ""]
    for what, s in estimate["stability"].items():
        lines.append(f"- same {what.replace('_', ' ')}: {s['n_folds']} of {s['of']} folds ({s['distinct']} distinct; "
                     f"most often `{s['most_common']}`)")
    return [*lines, ""]


def nested_markdown(run_dir: str | Path, title: str, command: str, figures_dir: str | Path | None = None,
                    preamble: str = "", epilogue: str = "", recipes_text: str = "") -> str:
    run = FinishedRun(run_dir)
    estimate, deployed = run.nested, run.selected()
    lines = [f"# {title}", "", preamble, "", "## How it was made", "", "```bash", command, "```", "",
             run_time_line(run.root), ""]
    if Path(run.layout.manifest()).exists():
        lines += ["Settings (from the run's own records):", ""]
        lines += [f"- `{k}`: `{json.dumps(run.config[k])}`" for k in ("frames", "split", "train") if k in run.config]
        lines.append("")
    lines += ["## The estimate of the procedure on new patients (nested cross-validation)", "", *estimate_lines(estimate),
              "## The outer folds", "", *folds_lines(estimate),
              "## The deployed configuration", "",
              f"The same rule on the out-of-fold scores of all {estimate['n_patients']} patients chose "
              f"**{deployed['config_id']}** (validation {deployed['criterion']} {deployed['validation_score']:.3f}, "
              "optimistic: it is what chose it); it is trained on every patient and is what `lus predict` uses. "
              "Its expected score on new patients is the estimate above.", ""]
    if recipes_text:
        lines += ["## Recipes (nested cross-validation)", "", recipes_text]
    if figures_dir is not None:
        figures_dir = Path(figures_dir)
        figures_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(run.layout.nested_figure(), figures_dir / "nested_folds.png")
        lines += ["## Figures", "", f"![each outer fold and the pooled estimate]({figures_dir.name}/nested_folds.png)",
                  ""]
    lines += [epilogue, ""]
    return "\n".join(lines)
