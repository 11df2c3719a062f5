"""`lus summarize`: a finished run as a Markdown page (split, matrix head with intervals,
frame- and video-level metrics, significance, confidence methods, figures), for docs and papers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from lus_core.io_utils import atomic_path

FIGURES = ("forest_accuracy.png", "confusion_best.png", "gallery_00.png")


def _ci(row, key: str) -> str:
    return f"{row[key]:.3f} [{row[key + '_lo']:.3f}, {row[key + '_hi']:.3f}]"


def _matrix_head(matrix: pd.DataFrame, n: int) -> pd.DataFrame:
    deployable = matrix[matrix.row_type.isin(["cnn", "combined", "fallback_only"])]
    return pd.concat([matrix[matrix.row_type == "cnn"], deployable.head(n)]).drop_duplicates("config_id")


def results_markdown(run_dir: str | Path, title: str, command: str, n_rows: int = 8,
                     figures_dir: str | Path | None = None, preamble: str = "", epilogue: str = "") -> str:
    run = Path(run_dir)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    split = json.loads((run / "split.json").read_text())
    matrix = pd.read_csv(run / "eval" / "matrix.csv")
    counts = summary["counts"]["dataset"]
    classes = summary.get("classes", list(range(len(counts["test_frames_per_class"]))))
    lines = [f"# {title}", "", preamble, "", "## How it was made", "", "```bash", command, "```", ""]
    bench = sorted((run / "benchmarks").rglob("*.tsv"))
    if bench:
        total = sum(float(pd.read_csv(b, sep="\t")["s"].iloc[0]) for b in bench)
        lines += [f"Sum of the benchmarked steps' wall time: {total / 60:.0f} min ({len(bench)} jobs).", ""]
    # the manifest is written last, with the config of the final outputs (split.json may be
    # older: it is kept when only training settings change)
    manifest = run / "manifest.json"
    cfg = json.loads(manifest.read_text()).get("config", {}) if manifest.exists() else split.get("config", {})
    cfg = json.loads(cfg) if isinstance(cfg, str) else cfg
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
        "## Frame level (test patients, 95% bootstrap intervals over patients)", "",
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
    lines += ["", "## Does any configuration beat the CNN alone?", "", sig["statement"], "",
              f"Configurations significantly better than the CNN alone: {sig['n_significantly_better']}; "
              f"significantly worse: {sig['n_significantly_worse']} (of {sig['n_configurations']}).", ""]
    conf_tables = sorted((run / "confidence").glob("*/metrics.csv"))
    if conf_tables:
        lines += ["## Confidence methods (failure detection on test patients)", ""]
        for table in conf_tables:
            t = pd.read_csv(table)
            lines += [f"**{table.parent.name}**", "", "| method | AUROC | AURC | risk at 80% coverage | trusted |",
                      "|---|---|---|---|---|"]
            for _, r in t.iterrows():
                lines.append(f"| {r.method} | {r.auroc:.3f} | {r.aurc:.3f} | {r['selective_risk@0.8']:.3f} | {r.coverage:.2f} |")
            lines.append("")
    if figures_dir is not None:
        figures_dir = Path(figures_dir)
        figures_dir.mkdir(parents=True, exist_ok=True)
        lines += ["## Figures", ""]
        for name in FIGURES:
            src = run / "eval" / "figures" / name
            if src.exists():
                shutil.copy(src, figures_dir / name)
                lines += [f"![{name}]({figures_dir.name}/{name})", ""]
    lines += [epilogue, ""]
    return "\n".join(lines)


def write_results_markdown(run_dir, out_md, title: str, command: str, preamble: str = "", epilogue: str = "") -> Path:
    out_md = Path(out_md)
    figures = out_md.parent / (out_md.stem + "-figures")
    text = results_markdown(run_dir, title, command, figures_dir=figures, preamble=preamble, epilogue=epilogue)
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    return out_md
