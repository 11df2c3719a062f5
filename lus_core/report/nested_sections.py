"""The report of a nested run (split.outer_folds K > 1): the estimate of the procedure from every
patient first (lus_core.evaluation.nested), then what each outer fold chose, how stable that
choice was, and the configuration deployed (chosen on every patient, out of fold)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lus_core.evaluation.answer_level import METRIC_NAMES
from lus_core.evaluation.nested import seed_table, shown_metrics, video_fold_metric
from lus_core.report.markup import ci_pct, esc, figure, fmt, fmt_ci, kv, table
from lus_core.report.sections import METRIC_LABEL, signed_ci

LEVEL_LABEL = {"video": "per video (the video score each fold chose)", "frame": "per frame (the selected configuration)",
               "frame_cnn": "per frame, CNN alone"}


def _ci(d: Mapping | None) -> str:
    d = d or {}
    return fmt_ci(d.get("estimate"), d.get("lo"), d.get("hi"), 3)


def _diff(d: Mapping | None) -> str:
    d = d or {}
    return signed_ci(d.get("diff"), d.get("lo"), d.get("hi")) + (" *" if d.get("significant") else "")


def section_nested_headline(estimate: Mapping, figure_png: str | Path | None) -> str:
    """The first screen: the headline sentence, the pooled metrics, each fold beside the pooled one."""
    rows = []
    for level in ("video", "frame", "frame_cnn"):
        if level not in estimate:
            continue
        for m in shown_metrics(estimate, METRIC_LABEL):
            label = METRIC_LABEL[m]
            res = estimate[level]
            rows.append([LEVEL_LABEL[level], label, _ci(res.get(m)),
                         _diff(res.get(f"{m}_minus_cnn")) if f"{m}_minus_cnn" in res else "",
                         _diff(res.get(f"{m}_minus_majority")) if f"{m}_minus_majority" in res else ""])
    n_videos = f", {estimate['n_videos']} videos" if "n_videos" in estimate else ""
    box = [
        '<div class="headline"><h2>The answer</h2>',
        f'<p class="big">{esc(estimate["headline"])}</p>',
        f"<p class='small'>Every patient's score comes from the outer fold that held them out: that fold trained its "
        f"models and chose its configuration without them. {estimate['n_frames']} frames{n_videos}; "
        f"{ci_pct(estimate.get('ci'))} intervals from {estimate['n_bootstrap']} resamples of all "
        f"{estimate['n_patients']} patients; differences are paired (the same resamples); * the interval excludes "
        "0.</p></div>",
        table(["level", "metric", "estimate", "minus the CNN alone", "minus the majority class"], rows),
    ]
    header, rows = seed_table(estimate)
    if rows:
        box += ["<p>The model seeds (train.seeds): each seed's own estimate over every patient, and their spread. "
                "The interval above is over patients, with every seed's models pooled; the spread below is what "
                "re-seeding the procedure moves it by.</p>", table(header, rows)]
    if figure_png and Path(figure_png).exists():
        box.append(figure(Path(figure_png), "Each outer fold and the pooled estimate",
                          "Each fold scored on its own test patients (few: wide intervals), and all patients pooled."))
    return "\n".join(box)


def section_nested_folds(estimate: Mapping) -> str:
    """What each outer fold chose on its training patients, its score, and how stable the choice was."""
    vm = video_fold_metric(estimate)
    second = "qwk" if shown_metrics(estimate, ["qwk"]) else "balanced_accuracy"  # no QWK for unordered classes
    rows = []
    for f in estimate["folds"]:
        rows.append([f["scope"], ", ".join(map(str, f["test_patients"])), f["config_id"],
                     fmt(f.get("validation_score"), 3), _ci(f.get("accuracy")), _ci(f.get(second)),
                     f.get("video_score") or "-", _ci(f.get(f"video_{vm}")) if f"video_{vm}" in f else "-"])
    stab = estimate.get("stability") or {}
    pairs = [(f"same {what.replace('_', ' ')}", f"{s['n_folds']} of {s['of']} folds ({s['distinct']} distinct): {s['most_common']}")
             for what, s in stab.items()]
    return ("<h2>The outer folds</h2><p>Each fold chose on its training patients only (out of fold); its test "
            "patients were scored once, with what it chose.</p>"
            + table(["fold", "test patients", "configuration chosen", "validation score", "frame accuracy",
                     f"frame {METRIC_NAMES[second]}", "video score chosen", f"video {METRIC_NAMES[vm]}"], rows)
            + "<p>Stability of the choice:</p>" + kv(pairs))


def section_deployed(summary: Mapping) -> str:
    """The configuration `lus predict` uses: the same rule on every patient's out-of-fold scores."""
    sel = summary.get("selected")
    if not sel:
        return ""
    val = sel.get("validation") or {}
    rows = [(METRIC_LABEL[m] + (" (criterion)" if m == sel["criterion"] else ""), fmt(val.get(m), 3))
            for m in METRIC_LABEL if m in val]
    return ("<h2>The deployed configuration</h2>"
            f"<p>Chosen by the same rule on the out-of-fold scores of all patients and trained on all of them: "
            f"<b>{esc(sel['config_id'])}</b>. This is what <code>lus predict</code> uses. Its validation scores "
            "below chose it and are optimistic; its expected score on new patients is the nested estimate above.</p>"
            + kv(rows))


def section_nested_split(split: Mapping, classes) -> str:
    rows = []
    for entry in split.get("outer") or []:
        counts = entry.get("test_counts") or {}
        rows.append([entry["outer"], len(entry["test_patients"]), ", ".join(map(str, entry["test_patients"])),
                     entry.get("method", "-"), *[counts.get(str(i), "-") for i in range(len(classes))]])
    return ("<h2>The split</h2><p>Every patient is in exactly one outer fold's test group; each group chosen by the "
            "balanced search among the patients not yet tested (the last one is what remained).</p>"
            + table(["fold", "patients", "test patients", "method", *[f"score {c}" for c in classes]], rows))
