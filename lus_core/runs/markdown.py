"""`lus summarize`: a finished run as Markdown, from the run's own files only.

- :func:`results_markdown` / :func:`write_results_markdown`: a whole page (split, the selected
  configuration, the exploratory matrix head, video level, confidence methods, figures), for
  docs and papers.
- :func:`default_run_block` / :func:`write_readme_block`: the README's default-run block,
  rewritten in place between ``<!-- BEGIN default-run ...-->`` and ``<!-- END default-run -->``
  (``lus summarize results/synthetic --readme README.md``); nothing outside the markers changes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from lus_core.evaluation.answer_level import METRIC_NAMES
from lus_core.evaluation.findings import DISPLAY_HEADER, DISPLAY_NOTE, display_rows
from lus_core.io_utils import atomic_path
from lus_core.runs.nested_markdown import nested_markdown
from lus_core.runs.nested_recipes import compare_nested_recipes, nested_recipes_markdown
from lus_core.runs.page_output import check_page_out, write_page
from lus_core.runs.reader import FinishedRun
from lus_core.runs.readme_blocks import block_names, rewrite_blocks
from lus_core.runs.recipes import compare_recipes, recipes_markdown
from lus_core.runs.run_time import run_time_line

FIGURES = ("forest_accuracy.png", "confusion_selected.png", "gallery_00.png")
BLOCK = "default-run"
RUN_TIME_BLOCK = "run-time"
SUMMARIZE = "lus summarize"  # the tool its pages name (lus_core.runs.page_output)
METRIC_LABEL = {"qwk": "QWK", "accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy"}


def _ci(row, key: str) -> str:
    return f"{row[key]:.3f} [{row[key + '_lo']:.3f}, {row[key + '_hi']:.3f}]"


def _matrix_head(matrix: pd.DataFrame, n: int) -> pd.DataFrame:
    deployable = matrix[matrix.row_type.isin(["cnn", "combined", "fallback_only"])]
    return pd.concat([matrix[matrix.row_type == "cnn"], deployable.head(n)]).drop_duplicates("config_id")


def results_markdown(run_dir: str | Path, title: str, command: str, n_rows: int = 8,
                     figures_dir: str | Path | None = None, preamble: str = "", epilogue: str = "",
                     recipes: list[Path] | None = None, reference_recipe: str | None = None,
                     pairs: list[tuple[str, str]] = ()) -> str:
    run = Path(run_dir)
    if FinishedRun(run).is_nested:
        recipes_text = ""
        if recipes:
            table, notes = compare_nested_recipes([run, *map(Path, recipes)], reference_recipe, pairs=list(pairs))
            recipes_text = nested_recipes_markdown(table, notes)
        return nested_markdown(run, title, command, figures_dir, preamble, epilogue, recipes_text)
    summary, split, matrix = _load(run)
    counts = summary["counts"]["dataset"]
    classes = summary.get("classes", list(range(len(counts["test_frames_per_class"]))))
    lines = [f"# {title}", "", preamble, "", "## How it was made", "", "```bash", command, "```", ""]
    lines += [run_time_block(run), ""]
    # the manifest is written last, with the config of the final outputs
    finished = FinishedRun(run)
    cfg = finished.config if Path(finished.layout.manifest()).exists() else {}
    if cfg:
        lines += ["Settings (from the run's own records):", ""]
        lines += [f"- `{k}`: `{json.dumps(cfg[k])}`" for k in ("frames", "split", "train") if k in cfg]
        lines.append("")
    lines += [
        "## Data and split", "",
        f"{counts['n_patients']} patients, {counts['n_videos']} videos, {counts['n_frames']} frames "
        f"(per score {', '.join(f'{c}: {n}' for c, n in zip(classes, counts['all_frames_per_class'], strict=False))}).",
        "",
        f"Test patients ({len(split['test_patients'])}, exact search over {split['n_combinations']:,} combinations, "
        f"{split['method']}, {split['seconds']:.2f} s): **{', '.join(split['test_patients'])}**; test frames per "
        f"score {', '.join(str(v) for v in split['test_counts'].values())}.",
        f"{len(split['folds'])} patient-grouped folds on the {len(split['train_patients'])} training patients give "
        "the out-of-fold predictions that the confidence models are fitted on.", "",
        *video_answer_lines(summary),
        "## The selected configuration", "",
        *selected_lines(summary),
        "## Frame level, exploratory (test patients, 95% bootstrap intervals over patients)", "",
        "| configuration | accuracy | macro-F1 | QWK | Δ accuracy vs CNN alone | fallback rate |",
        "|---|---|---|---|---|---|",
    ]
    head = _matrix_head(matrix, n_rows)
    for _, r in head.iterrows():
        delta = "—" if r.row_type == "cnn" else (
            f"{r.delta_accuracy:+.3f} [{r.delta_accuracy_lo:+.3f}, {r.delta_accuracy_hi:+.3f}]"
            + (" *" if r.delta_accuracy_significant else ""))
        lines.append(f"| {r.config_id} | {_ci(r, 'accuracy')} | {_ci(r, 'macro_f1')} | {_ci(r, 'qwk')} | {delta} "
                     f"| {r.fallback_rate:.2f} |")
    lines += ["", "\\* the interval excludes 0.", "", "## Video level (majority of a video's frames)", "",
              "| configuration | accuracy | macro-F1 | QWK |", "|---|---|---|---|"]
    for _, r in head.iterrows():
        lines.append(f"| {r.config_id} | {_ci(r, 'video_majority_accuracy')} | {r.video_majority_macro_f1:.3f} "
                     f"| {r.video_majority_qwk:.3f} |")
    sig = summary["significance"]
    lines += ["", "## Exploratory: does any configuration beat the CNN alone on the test patients?", "",
              sig["statement"], "",
              f"Configurations significantly better than the CNN alone: {sig['n_significantly_better']}; "
              f"significantly worse: {sig['n_significantly_worse']} (of {sig['n_configurations']}).", ""]
    if recipes:
        table, notes = compare_recipes([run, *recipes], reference_recipe, summary["n_bootstrap"], summary["ci"],
                                       summary["seed"], pairs)
        lines += ["## Recipes (which training recipe to deploy, chosen on the training patients)", "",
                  recipes_markdown(table, notes)]
    for each in [run, *(recipes or [])]:
        lines += findings_lines(each, with_run=bool(recipes))
    lines += ["## Confidence methods (failure detection on test patients)", "", *confidence_lines(summary)]
    if figures_dir is not None:
        figures_dir = Path(figures_dir)
        figures_dir.mkdir(parents=True, exist_ok=True)
        lines += ["## Figures", ""]
        for name in FIGURES:
            src = run / "eval" / "figures" / name
            if src.exists():
                shutil.copy(src, figures_dir / name)
                lines += [f"![{name}]({figures_dir.name}/{name})", ""]
            if name.startswith("gallery_"):
                lines += _gradcam_lines(run, f"figures/{name}", figures_dir)
    lines += [epilogue, ""]
    return "\n".join(lines)


def findings_lines(run: Path, with_run: bool = False) -> list[str]:
    """The run's auxiliary-finding AUROC table (nothing when it trained no findings)."""
    records = FinishedRun(run).findings()
    if not records:
        return []
    title = "## Auxiliary findings" + (f" ({run.name})" if with_run else "")
    rows = display_rows(records, lambda est, lo, hi: f"{_f(est)} [{_f(lo)}, {_f(hi)}]")
    return [title, "", DISPLAY_NOTE, "", "| " + " | ".join(DISPLAY_HEADER) + " |",
            "|" + "---|" * len(DISPLAY_HEADER), *("| " + " | ".join(r) + " |" for r in rows), ""]


def _gradcam_lines(run: Path, gallery: str, figures_dir: Path) -> list[str]:
    """The Grad-CAM of a gallery's query frame (step gradcam), copied beside it, with its caption."""
    index = run / "gradcam" / "index.json"
    entries = [e for e in (json.loads(index.read_text()) if index.exists() else []) if e["gallery"] == gallery]
    lines = []
    for e in entries:
        shutil.copy(run / "gradcam" / e["file"], figures_dir / e["file"])
        lines += [f"![{e['title']}]({figures_dir.name}/{e['file']}) {e['title']}: {e['caption']}", ""]
    return lines


def write_results_markdown(run_dir, out_md, title: str, command: str, preamble: str = "", epilogue: str = "",
                           overwrite: bool = False, **recipes) -> Path:
    """The page at `out_md` and its figures in the folder `{stem}-figures` beside it; an existing
    file is replaced only where `lus summarize` wrote it, or with `overwrite` (lus_core.runs.page_output)."""
    out_md = Path(out_md)
    figures = out_md.parent / (out_md.stem + "-figures")
    check_page_out(out_md, SUMMARIZE, overwrite, [run_dir, *(recipes.get("recipes") or [])], figures)
    return write_page(out_md, SUMMARIZE, lambda folder: results_markdown(
        run_dir, title, command, figures_dir=folder, preamble=preamble, epilogue=epilogue, **recipes), figures)


# --------------------------------------------------------------------------- shared pieces


def _load(run: Path) -> tuple[dict, dict, pd.DataFrame]:
    finished = FinishedRun(run)
    finished.selected()  # a run without a selection cannot be summarised
    return finished.summary, finished.split, finished.matrix


def _f(x, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else f"{x:.{digits}f}"


def _ci3(d: dict, signed: bool = False) -> str:
    fmt = "+.3f" if signed else ".3f"
    if d.get("estimate", d.get("diff")) is None:
        return "-"
    est = d.get("estimate", d.get("diff"))
    if d.get("lo") is None:
        return format(est, fmt)
    return f"{format(est, fmt)} [{format(d['lo'], fmt)}, {format(d['hi'], fmt)}]"


def video_answer_lines(summary: dict) -> list[str]:
    """At video level (evaluate.selection.level), the video answer first."""
    answer = summary.get("video_answer")
    if summary.get("answer_level") != "video" or not answer:
        return []
    test = answer["test"]
    metric = answer.get("metric", "qwk")
    name = METRIC_NAMES[metric]
    return ["## The answer per video", "",
            f"The labels are per video. Chosen on the training patients' videos (best validation video {name} "
            f"{_f(answer.get('validation_score', answer.get('validation_qwk')))}): **{answer['backbone']}, "
            f"{answer['video_score']}**: test video {name} **{_ci3(test[metric])}**, accuracy {_ci3(test['accuracy'])} "
            f"on {answer['n_test_videos']} test videos (reported once; 95% intervals over test patients).", ""]


def split_lines(split: dict) -> list[str]:
    tc = split["test_counts"]
    counts = " / ".join(str(v) for v in (tc.values() if isinstance(tc, dict) else tc))
    return [f"Test patients **{', '.join(map(str, split['test_patients']))}** (test frames per score {counts}), "
            f"chosen exactly among {split['n_combinations']:,} combinations.", ""]


def selected_lines(summary: dict) -> list[str]:
    """The selected configuration: how it was chosen, its validation and its one test score."""
    sel = summary["selected"]
    crit = sel["criterion"]
    v = sel["validation"]
    ci = f"{round(100 * summary['ci'])}%"
    lines = [
        f"**Selected configuration** (the default of `lus predict`): **{sel['config_id']}**, the best validation "
        f"{METRIC_LABEL[crit]} of {sel['n_candidates']} deployable configurations validated out of fold on {v['n_patients']} training "
        f"patients ({v['n_frames']} frames, out of fold; ties: {sel['tie_break']}). Its test score is "
        f"reported once ({ci} bootstrap intervals over test patients; difference paired on the same resamples):",
        "",
        f"| metric | validation (training patients, out of fold) | test patients [{ci} CI] "
        f"| Δ vs {sel['backbone']} CNN alone [{ci} CI] |",
        "|---|---|---|---|",
    ]
    for m, label in METRIC_LABEL.items():
        delta = "—" if sel["row_type"] == "cnn" else _ci3(sel["delta_vs_cnn"][m], signed=True) + (
            " *" if sel["delta_vs_cnn"][m].get("significant") else "")
        lines.append(f"| {label}{' (criterion)' if m == crit else ''} | {_f(v[m])} | {_ci3(sel['test'][m])} | {delta} |")
    wc = summary["winners_curse"]
    lines += ["", "\\* the interval excludes 0.", "",
              f"Winner's curse: the deployable configuration with the best *test* {METRIC_LABEL[wc['metric']]} is "
              f"{wc['test_best_config_id']} ({_f(wc['test_best_score'])}, validation "
              f"{_f(wc['test_best_validation_score'])}), {_f(wc['gap'])} above the selected configuration's test "
              f"{METRIC_LABEL[wc['metric']]}: what a pick on the test patients would have claimed.", ""]
    return lines


def matrix_head_lines(summary: dict, matrix: pd.DataFrame, n_rows: int) -> list[str]:
    crit = summary["selected"]["criterion"]
    lines = [f"Exploratory, sorted on the test patients (do not pick from it): the CNN-alone rows and the {n_rows} "
             "deployable rows with the best test accuracy in the run's `eval/matrix.csv`:", "",
             f"| configuration | validation {METRIC_LABEL[crit]} | accuracy [95% CI] | macro-F1 | QWK "
             "| Δ accuracy vs CNN [95% CI] | fallback rate |",
             "|---|---|---|---|---|---|---|"]
    for _, r in _matrix_head(matrix, n_rows).iterrows():
        delta = "—" if r.row_type == "cnn" else (
            f"{r.delta_accuracy:+.3f} [{r.delta_accuracy_lo:+.3f}, {r.delta_accuracy_hi:+.3f}]"
            + (" *" if r.delta_accuracy_significant else ""))
        mark = " (selected)" if bool(r.get("selected")) else ""
        lines.append(f"| {r.config_id}{mark} | {_f(r.get(f'val_{crit}'))} | {_ci(r, 'accuracy')} | {r.macro_f1:.3f} "
                     f"| {r.qwk:.3f} | {delta} | {r.fallback_rate:.2f} |")
    return lines + [""]


def confidence_lines(summary: dict) -> list[str]:
    """Per backbone, every method's failure-detection metrics on the test patients, AUGRC first."""
    rows = summary.get("confidence_methods") or []
    lines = ["Confidence methods (fitted on out-of-fold predictions of training patients only; failure detection "
             "measured on the test patients; AUGRC: area under the generalized risk-coverage curve, lower is "
             "better):", ""]
    for b in sorted({r["backbone"] for r in rows}):
        lines += [f"**{b}**", "", "| method | AUGRC | failure AUROC | AURC | E-AURC | trusted |",
                  "|:--|--:|--:|--:|--:|--:|"]
        sub = sorted((r for r in rows if r["backbone"] == b),
                     key=lambda r: (r["augrc"] if r["augrc"] is not None else 1.0, r["method"]))
        for r in sub:
            lines.append(f"| {r['method']} | {_f(r['augrc'], 4)} | {_f(r['auroc'])} | {_f(r['aurc'])} "
                         f"| {_f(r['eaurc'])} | {_f(r['coverage'], 2)} |")
        lines.append("")
    return lines


# --------------------------------------------------------------------------- README block


def default_run_block(run_dir: str | Path, n_rows: int = 5) -> str:
    """The README's default-run block (Markdown) from a run's split.json and eval/ files."""
    summary, split, matrix = _load(Path(run_dir))
    lines = [*split_lines(split), *selected_lines(summary), *matrix_head_lines(summary, matrix, n_rows),
             *confidence_lines(summary)]
    return "\n".join(lines).rstrip() + "\n"


def copy_figures(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Copy the README's figures of a run (first gallery, t-SNE and risk-coverage of each backbone)
    from ``eval/figures`` into ``out_dir``; returns the files written."""
    src = Path(run_dir) / "eval" / "figures"
    summary = FinishedRun(run_dir).summary
    names = ["gallery_00.png"] + [f"{kind}_{b}.png" for b in summary["counts"]["backbones"]
                                  for kind in ("tsne", "risk_coverage")]
    out = []
    for name in names:
        if (src / name).exists():
            dst = Path(out_dir) / name
            with atomic_path(dst) as tmp:
                shutil.copyfile(src / name, tmp)
            out.append(dst)
    return out


def run_time_block(run_dir: str | Path) -> str:
    """The README's run-time block: the wall time of the run's last full run, from its record."""
    return run_time_line(run_dir) + "\n"


def write_readme_block(run_dir: str | Path, readme: str | Path, name: str = BLOCK, **kw) -> Path:
    """Rewrite only the blocks between the markers in ``readme`` (atomically): the default-run
    block, and the run-time block where the README has one (kept apart: a rerun changes the
    time, not the results)."""
    blocks = {name: default_run_block(run_dir, **kw)}
    if RUN_TIME_BLOCK in block_names(Path(readme).read_text(encoding="utf-8")):
        blocks[RUN_TIME_BLOCK] = run_time_block(run_dir)
    return rewrite_blocks(readme, blocks)
