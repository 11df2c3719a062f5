"""The sections of the report, each a function of the evaluation's files (summary, matrix, split,
config) that returns its HTML."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from lus_core.evaluation.findings import DISPLAY_HEADER, DISPLAY_NOTE, display_rows
from lus_core.evaluation.summary import fmt_p
from lus_core.report.forest import forest_png, main_rows
from lus_core.report.markup import (
    ROW_TYPE_LABEL,
    Raw,
    ci_pct,
    csv_table,
    esc,
    figure,
    fmt,
    fmt_ci,
    isnan,
    kv,
    pct,
    resolve,
    table,
)


def section_run(config: Mapping, summary: Mapping) -> str:
    c = summary.get("counts", {})
    data = c.get("dataset", {}) or {}
    classes = summary.get("classes") or config["classes"]
    synthetic = bool(config["dataset"]["synthetic"]["enabled"])
    data_src = ("embedded synthetic LUS cohort" if synthetic
                else ", ".join(map(str, config["dataset"]["video_dirs"])) or "-")
    run = [
        ("data", data_src),
        ("results folder", config["results"]),
        ("classes (scores)", classes),
        ("frames / videos / patients", f"{data.get('n_frames', '-')} / {data.get('n_videos', '-')} / "
                                       f"{data.get('n_patients', '-')}"),
        ("frames per class (all)", data.get("all_frames_per_class", "-")),
        ("frame size, stride", f"{config['frames']['size']} px, "
                               f"every {config['frames']['stride']} frame(s)"),
        ("backbones", c.get("backbones") or config["train"]["backbones"]),
        ("weights, fine-tuning", f"{config['train']['weights']}, "
                                 f"{config['train']['finetune']}"),
        ("epochs, batch size, lr", f"{config['train']['epochs']}, "
                                   f"{config['train']['batch_size']}, "
                                   f"{config['train']['lr']}"),
        ("confidence methods", c.get("confidence_methods") or config["confidence"]["methods"]),
        ("threshold rule", config["confidence"]["threshold_rule"]),
        ("similarity spaces", c.get("spaces") or config["similarity"]["spaces"]),
        ("k (neighbours)", c.get("k") or config["similarity"]["k"]),
        ("fallback modes", c.get("fallback_modes") or config["similarity"]["fallback"]),
        ("distance", config["similarity"]["metric"]),
        ("bootstrap", f"{summary.get('n_bootstrap', '-')} patient resamples, "
                      f"{ci_pct(summary.get('ci'))} intervals, seed {summary.get('seed', '-')}"),
        ("fallback scoring function", summary.get("fallback_function", "-")),
    ]
    return "<h2>What was run</h2>" + kv(run)


def section_split(split: Mapping, summary: Mapping) -> str:
    classes = summary.get("classes") or []
    c = summary.get("counts", {})
    data = c.get("dataset", {}) or {}
    rows = []
    for name, key in (("test", "test_counts"), ("train", "train_counts")):
        counts = split.get(key)
        if isinstance(counts, Mapping):
            counts = [counts.get(str(i), counts.get(i, 0)) for i in range(len(classes))]
        if counts is None:
            counts = data.get(f"{name}_frames_per_class", [])
        rows.append([name, len(split.get(f"{name}_patients", [])), data.get(f"{name}_videos", "-"),
                     *[fmt(x) for x in counts]])
    head = ["part", "patients", "videos", *[f"score {x}" for x in classes]]
    folds = split.get("folds", [])
    info = [
        ("test patients", ", ".join(map(str, split.get("test_patients", [])))),
        ("method", split.get("method", "-")),
        ("objective", f"{split.get('objective', '-')} = {fmt(split.get('objective_value'), 4)}"),
        ("combinations searched", split.get("n_combinations", "-")),
        ("cross-validation folds", len(folds)),
        ("test frames scored", f"{c.get('n_test_frames', '-')} frames, {c.get('n_test_videos', '-')} videos"),
    ]
    return ("<h2>The split</h2><p>Every number below is measured on the test patients only; no test "
            "patient was used in training, fold validation, confidence fitting or a similarity index.</p>"
            + kv(info) + "<p>Frames per class:</p>" + table(head, rows))


METRIC_LABEL = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
                "qwk": "QWK"}


def signed_ci(est, lo, hi) -> str:
    if isnan(est):
        return "-"
    return f"{float(est):+.3f}" + ("" if isnan(lo) or isnan(hi) else f" [{float(lo):+.3f}, {float(hi):+.3f}]")


def section_selected(summary: Mapping) -> str:
    """The headline: the configuration chosen on the training patients, its one test score."""
    sel = summary.get("selected")
    if not sel:
        return ""
    crit = sel["criterion"]
    n_boot = int(summary.get("n_bootstrap") or 1000)
    ci = ci_pct(summary.get("ci"))
    rows = []
    for m, label in METRIC_LABEL.items():
        t = sel["test"].get(m, {})
        d = (sel.get("delta_vs_cnn") or {}).get(m, {})
        delta = "reference" if sel["row_type"] == "cnn" else (
            f"{signed_ci(d.get('diff'), d.get('lo'), d.get('hi'))}, {fmt_p(d.get('p'), n_boot)}"
            + (" *" if d.get("significant") else ""))
        rows.append([label + (" (criterion)" if m == crit else ""), fmt((sel.get("validation") or {}).get(m), 3),
                     fmt_ci(t.get("estimate"), t.get("lo"), t.get("hi"), 3), delta])
    out = [
        "<h2>The selected configuration</h2>",
        f'<div class="answer"><b>{esc(sel["config_id"])}</b>: the best validation {esc(METRIC_LABEL[crit])} '
        f'({fmt(sel.get("validation_score"), 3)}) of {sel.get("n_candidates", "-")} deployable configurations validated out of fold, '
        f"chosen on {esc(sel['chosen_on'])}. Ties: {esc(sel.get('tie_break', '-'))}. Its score on the test "
        f"patients below is reported once; `lus predict` uses this configuration by default.</div>",
        table(["metric", "validation (training patients, out of fold)", f"test patients ({ci} CI)",
                f"difference to the CNN alone of {sel['backbone']} (paired, {ci} CI)"], rows, left=(0,)),
        "<p class='small'>* the interval excludes 0. Intervals: percentile bootstrap over test patients.</p>",
    ]
    wc = summary.get("winners_curse")
    if wc:
        out.append(
            f"<p>Winner's curse: the deployable configuration with the highest test {esc(METRIC_LABEL[wc['metric']])}"
            f" is {esc(wc['test_best_config_id'])} ({fmt(wc['test_best_score'], 3)}; validation "
            f"{fmt(wc.get('test_best_validation_score'), 3)}), {fmt(wc['gap'], 3)} above the selected "
            "configuration's test score. A configuration picked on the test patients would have claimed that "
            "gap; the selected one was not picked on them.</p>")
    return "".join(out)


def selected(summary: Mapping) -> Mapping | None:
    """The configuration the run recommends: chosen on the training patients (summary.json ``selected``)."""
    return summary.get("selected")


def section_headline(summary: Mapping, matrix: pd.DataFrame) -> str:
    """The first screen: the selected configuration, its interval, and the forest plot of the main rows."""
    sel = selected(summary)
    ci = summary.get("ci", 0.95)
    box = ['<div class="headline"><h2>The answer</h2>']
    if sel:
        cnn = (summary.get("cnn_alone") or {}).get(sel.get("backbone"), {})
        crit = sel["criterion"]
        test = sel.get("test") or {}
        box += [
            f"<p>Selected on the training patients (out of fold, best validation {esc(METRIC_LABEL[crit])} "
            f"{fmt(sel.get('validation_score'), 3)}): <b>{esc(sel.get('config_id', '-'))}</b></p>",
            *(f'<p class="big">{esc(METRIC_LABEL[m])} {fmt_ci(*(test.get(m, {}).get(k) for k in ("estimate", "lo", "hi")))}</p>'
              for m in dict.fromkeys([crit, "accuracy"])),
            f"<p class='small'>On the test patients, reported once; {ci_pct(ci)} patient-bootstrap intervals.</p>",
        ]
        if cnn:
            box.append(f"<p>CNN alone ({esc(sel.get('backbone'))}): accuracy "
                       f"{fmt_ci(cnn.get('accuracy'), cnn.get('accuracy_lo'), cnn.get('accuracy_hi'))}</p>")
        d = (sel.get("delta_vs_cnn") or {}).get("accuracy") or {}
        if sel.get("row_type") != "cnn" and not isnan(d.get("diff")):
            box.append(f"<p>Accuracy difference to the CNN alone: {signed_ci(d.get('diff'), d.get('lo'), d.get('hi'))}"
                       " (paired)</p>")
    else:
        box.append("<p>No configuration was selected.</p>")
    box.append("</div>")
    rows = main_rows(matrix, sel)
    fig = ""
    if len(rows):
        fig = figure(forest_png(rows, (sel or {}).get("config_id"), float(ci)), "Main rows",
                      "Test accuracy with its interval: the CNN alone of each backbone (blue, dotted lines), "
                      "the selected configuration (▶) and the best other configurations.")
    return '<section class="top">' + "".join(box) + fig + "</section>"


def section_answer(summary: Mapping) -> str:
    sig = summary.get("significance", {}) or {}
    out = ["<h2>Exploratory: does any combination beat the classifier alone on the test patients?</h2>",
           f'<div class="answer">{esc(sig.get("statement", "-"))}</div>']
    cnn = summary.get("cnn_alone", {}) or {}
    if cnn:
        rows = [[b, fmt_ci(r.get("accuracy"), r.get("accuracy_lo"), r.get("accuracy_hi")),
                 fmt_ci(r.get("macro_f1"), r.get("macro_f1_lo"), r.get("macro_f1_hi")),
                 fmt_ci(r.get("qwk"), r.get("qwk_lo"), r.get("qwk_hi"))] for b, r in cnn.items()]
        out.append("<p>The classifier alone:</p>" + table(["backbone", "accuracy", "macro-F1", "QWK"], rows))
    n = sig.get("n_configurations")
    if n:
        out.append(
            f"<p>Of {n} combined configurations, {sig.get('n_significantly_better', 0)} are significantly "
            f"better than the CNN alone of their backbone and {sig.get('n_significantly_worse', 0)} significantly "
            "worse (paired patient bootstrap, interval excludes 0, no correction for the number of "
            "configurations).</p>")
    return "".join(out)


MATRIX_COLS = [
    ("rank", "#"),
    ("config_id", "configuration"),
    ("row_type", "kind"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced acc."),
    ("macro_f1", "macro-F1"),
    ("qwk", "QWK"),
    ("delta_accuracy", "Δ accuracy vs CNN"),
    ("_val", "validation (train OOF)"),
    ("fallback_rate", "fallback rate"),
    ("frames_fixed", "fixed / broken"),
    ("video_majority_accuracy", "video acc. (majority)"),
]


def matrix_rows(df: pd.DataFrame, best_rank, n_boot: int = 1000, criterion: str = "qwk"
                 ) -> tuple[list[list], list[str]]:
    rows, classes = [], []
    for r in df.to_dict("records"):
        d = r.get("delta_accuracy")
        if r["row_type"] == "cnn":
            delta = Raw('<span class="ns">reference</span>')
        elif isnan(d):
            delta = "-"
        else:
            s = bool(r.get("delta_accuracy_significant"))
            txt = (f"{float(d):+.3f} [{float(r['delta_accuracy_lo']):+.3f}, {float(r['delta_accuracy_hi']):+.3f}]"
                   f" {fmt_p(float(r['delta_accuracy_p']), n_boot).replace(' ', '')}")
            delta = Raw(f'<span class="{"sig" if s else "ns"}">{esc(txt)}{" *" if s else ""}</span>')
        vmaj = r.get("video_majority_accuracy")
        rows.append([
            r["rank"], r["config_id"], ROW_TYPE_LABEL.get(r["row_type"], r["row_type"]),
            fmt_ci(r["accuracy"], r.get("accuracy_lo"), r.get("accuracy_hi")),
            fmt_ci(r["balanced_accuracy"], r.get("balanced_accuracy_lo"), r.get("balanced_accuracy_hi")),
            fmt_ci(r["macro_f1"], r.get("macro_f1_lo"), r.get("macro_f1_hi")),
            fmt_ci(r["qwk"], r.get("qwk_lo"), r.get("qwk_hi")),
            delta,
            fmt(r.get(f"val_{criterion}"), 3),
            pct(r.get("fallback_rate")),
            f"{int(r.get('frames_fixed', 0))} / {int(r.get('frames_broken', 0))}",
            fmt_ci(vmaj, r.get("video_majority_accuracy_lo"), r.get("video_majority_accuracy_hi")),
        ])
        rt = r["row_type"]
        classes.append(" ".join(filter(None, [
            "oracle" if rt.startswith("oracle") else rt,
            "best" if bool(r.get("selected")) else ""])))
    return rows, classes


def section_matrix(matrix: pd.DataFrame, summary: Mapping, top: int) -> str:
    crit = (summary.get("selected") or {}).get("criterion", "qwk")
    comb = matrix[matrix["row_type"] == "combined"].head(top)
    framing = [matrix[matrix["row_type"] == "cnn"]]
    if "selected" in matrix:
        framing.append(matrix[matrix["selected"].astype(bool)])
    for t in ("fallback_only", "oracle_detector", "oracle_fallback"):
        sub = matrix[matrix["row_type"] == t]
        framing.append(sub.groupby("backbone", sort=False).head(1))
    shown = pd.concat([comb, *framing]).drop_duplicates("rank").sort_values("rank")
    n_boot = int(summary.get("n_bootstrap") or 1000)
    rows, classes = matrix_rows(shown, None, n_boot, crit)
    head = [h if key != "_val" else f"validation {METRIC_LABEL.get(crit, crit)} (train OOF)"
            for key, h in MATRIX_COLS]
    n_all = len(matrix)
    ci = summary.get("ci", 0.95)
    out = [
        "<h2>All configurations (exploratory)</h2>",
        f"<p>{n_all} rows sorted by <b>test</b> accuracy, best first: an exploratory view; picking from it "
        "would carry the winner's curse (the deployed configuration is the selected one above, in bold, "
        "chosen on its validation score). Shown: the "
        f"{len(comb)} best combined configurations, every CNN-alone row, the selected row and the best "
        f"fallback-only, oracle-detector and oracle-fallback row of each backbone. Brackets: {ci_pct(ci)} "
        "bootstrap interval over test patients. Δ accuracy: difference to the CNN alone of the same backbone on "
        "the same patient resamples (paired), <span class='sig'>* = interval excludes 0</span>. Validation: the "
        "same configuration on the training patients, out of fold. Oracle rows (grey) are bounds, not methods: "
        "an oracle detector trusts exactly the frames the CNN gets right; an oracle fallback gives untrusted "
        "frames their true score. Fixed / broken: untrusted frames the fallback turned right / wrong.</p>",
        f"<details><summary>The {len(shown)} rows above</summary>",
        table(head, rows, classes, left=(1, 2)),
        "</details>",
        f"<details><summary>Full matrix ({n_all} rows; every column is in "
        f"{esc(summary.get('matrix_csv', 'matrix.csv'))})</summary>",
    ]
    rows_all, classes_all = matrix_rows(matrix, None, n_boot, crit)
    out += [table(head, rows_all, classes_all, left=(1, 2)), "</details>"]
    return "".join(out)


VIDEO_SCORE_LABELS = {
    "max": "max of frame scores", "mean": "mean of frame scores (rounded)", "majority": "majority of frame scores",
    "confident_mean": "mean of the most confident frames (Khan et al. 2023)",
    "attention": "learned: attention pooling (out of fold)",
}


# what the video answer shows first: QWK for ordered scores, balanced accuracy for diagnoses
VIDEO_ANSWER_METRICS = {"ordinal": (("qwk", "QWK"), ("accuracy", "accuracy")),
                        "nominal": (("balanced_accuracy", "balanced accuracy"), ("accuracy", "accuracy"))}


def section_video_answer(summary: Mapping) -> str:
    """At video level (evaluate.selection.level), the first screen: the video score chosen on the
    training patients' videos, with its test scores (the frame tables follow)."""
    answer = summary.get("video_answer")
    if summary.get("answer_level") != "video" or not answer:
        return ""
    test = answer.get("test") or {}
    how = VIDEO_SCORE_LABELS.get(answer["video_score"], answer["video_score"])
    return ('<div class="headline"><h2>The answer per video</h2>'
            f"<p>The labels are per video: the answer is a score per video. Chosen on the training patients' videos "
            f"(out of fold, best {esc(answer.get('criterion', 'validation video QWK'))} "
            f"{fmt(answer.get('validation_score', answer.get('validation_qwk')), 3)}): "
            f"<b>{esc(answer['backbone'])}, {esc(how)}</b></p>"
            + "".join(f'<p class="big">video {label} {fmt_ci(*(test.get(m, {}).get(k) for k in ("estimate", "lo", "hi")))}'
                      "</p>" for m, label in VIDEO_ANSWER_METRICS[summary.get("class_order", "ordinal")])
            + f"<p class='small'>On {esc(answer.get('n_test_videos', '-'))} test videos, reported once; "
            f"{ci_pct(summary.get('ci'))} intervals over test patients. Frame-level results follow.</p></div>")


def section_video_level(summary: Mapping) -> str:
    """The video-level table: fixed aggregations and the learned score, per backbone."""
    levels = summary.get("video_level") or {}
    if not levels:
        return ""
    rows = []
    for b, records in levels.items():
        for r in records:
            rows.append([b, VIDEO_SCORE_LABELS.get(r["video_score"], r["video_score"]),
                         fmt_ci(r.get("accuracy"), r.get("accuracy_lo"), r.get("accuracy_hi")),
                         fmt_ci(r.get("qwk"), r.get("qwk_lo"), r.get("qwk_hi")),
                         fmt(r.get("val_accuracy")), fmt(r.get("val_qwk"))])
    n = next(iter(levels.values()))[0].get("n_test_videos", "-")
    return ("<h2>Video-level scores</h2><p>One score per video, the unit real datasets label. Test columns: "
            f"{esc(n)} test videos, 95% bootstrap intervals over test patients; validation columns: the training "
            "patients' videos, out of fold (what a choice of aggregation may look at).</p>"
            + table(["backbone", "video score", "test accuracy", "test QWK", "validation accuracy",
                      "validation QWK"], rows, left=(0, 1)))


def section_findings(summary: Mapping) -> str:
    """AUROC of the auxiliary finding outputs, when the run trained any."""
    records = summary.get("findings") or []
    if not records:
        return ""
    return (f"<h2>Auxiliary findings</h2><p>{esc(DISPLAY_NOTE)}</p>"
            + table(DISPLAY_HEADER, display_rows(records, fmt_ci), left=(0, 1, 2)))


def section_confidence(summary: Mapping) -> str:
    """One table, one value per (method, metric), every metric from lus_core.confidence.failure_metrics."""
    tab = summary.get("confidence_methods") or []
    if not tab:
        return ""
    rows = []
    for r in sorted(tab, key=lambda r: (r["backbone"], r.get("augrc") if r.get("augrc") is not None else 1.0,
                                        r["method"])):
        rows.append([r["backbone"], r["method"], fmt(r.get("augrc"), 4), fmt(r.get("auroc"), 3),
                     fmt(r.get("aurc"), 3), fmt(r.get("eaurc"), 3), fmt(r.get("threshold"), 3),
                     pct(r.get("coverage")), pct(r.get("acc_trusted")), pct(r.get("acc_rejected")),
                     fmt(r.get("mean_set_size"), 2)])
    head = ["backbone", "method", "AUGRC", "failure AUROC", "AURC", "E-AURC", "threshold", "coverage",
            "CNN acc. trusted", "CNN acc. rejected", "mean set size"]
    rep_keys = sorted({k for r in tab for k in (r.get("reported") or {})})
    extra = ""
    if rep_keys:
        rrows = [[r["backbone"], r["method"], *[fmt((r.get("reported") or {}).get(k), 3) for k in rep_keys]]
                 for r in tab]
        extra = ("<details><summary>More test metrics from the confidence step (not shown above)</summary>"
                 + table(["backbone", "method", *rep_keys], rrows, left=(0, 1)) + "</details>")
    return ("<h2>Confidence methods</h2><p>How well each method tells right from wrong CNN scores on the "
            "test frames, sorted by AUGRC (area under the generalized risk-coverage curve, Traub et al. 2024: "
            "the share of frames accepted and wrong, integrated over coverage; lower is better). Failure "
            "AUROC: higher is better; AURC, E-AURC: lower is better; tied confidences count as one threshold "
            "step. Coverage: share of test frames trusted at the fitted threshold.</p>"
            + table(head, rows, left=(0, 1)) + extra)


def section_figures(items: Sequence[Mapping], base: Path, heading: str, intro: str = "") -> str:
    parts = []
    for it in items:
        p = resolve(base, it["file"])
        if p.exists():
            parts.append(figure(p, it.get("title", p.stem), it.get("caption", "")))
    if not parts:
        return ""
    return f"<h2>{esc(heading)}</h2>" + (f"<p>{esc(intro)}</p>" if intro else "") + "".join(parts)


def section_galleries(gals: Sequence[Mapping], gradcam: Sequence[Mapping], base: Path) -> str:
    """Each gallery with the Grad-CAM map of its query frame beside it (when one was made)."""
    cams = {str(c["gallery"]): c for c in gradcam}
    parts = []
    for g in gals:
        p = resolve(base, g["file"])
        if not p.exists():
            continue
        pair = figure(p, g.get("title", p.stem), g.get("caption", ""))
        cam = cams.get(str(g["file"]))
        if cam is not None and Path(cam["file"]).exists():
            pair += figure(Path(cam["file"]), cam.get("title", "Grad-CAM"), cam.get("caption", ""))
        parts.append(f'<div class="pair">{pair}</div>')
    if not parts:
        return ""
    return ("<h2>The most uncertain test frames and their nearest training frames</h2><p>For the selected "
            "configuration: the test frames its confidence model trusts least, each beside the training frames "
            "(other patients) the fallback scored it from, and where the CNN looked (Grad-CAM).</p>"
            + "".join(parts))


def section_tables(items: Sequence[Mapping], base: Path) -> str:
    parts = []
    for it in items:
        p = resolve(base, it["file"])
        if p.exists():
            cap = f"<p class='small'>{esc(it.get('caption', ''))}</p>" if it.get("caption") else ""
            parts.append(f"<details><summary>{esc(it.get('title', p.stem))}</summary>{cap}{csv_table(p)}</details>")
    return "<h2>More tables</h2>" + "".join(parts) if parts else ""


def section_burned_in(videos) -> str:
    """DICOM videos whose header declares burned-in annotation (store attribute burned_in_annotation)."""
    if not videos:
        return ""
    return (f"<h2>Burned-in annotation ({len(videos)})</h2><p>These DICOM videos declare "
            "<code>BurnedInAnnotation</code> YES: text, possibly identifying, is part of their pixels, and the "
            "CNN saw it. Check them before sharing any frame or gallery.</p>"
            + table(["video"], [[v] for v in videos], left=(0,)))


def section_skipped(summary: Mapping) -> str:
    """Videos left out with dataset.on_bad_video: skip (summary.json's skipped_videos)."""
    skipped = summary.get("skipped_videos") or {}
    if not skipped.get("count"):
        return ""
    rows = [[v["video"], v["reason"]] for v in skipped["videos"]]
    return (f"<h2>Skipped videos ({skipped['count']})</h2><p>Left out of every result because "
            "<code>dataset.on_bad_video</code> is <code>skip</code>; fix or remove them and run again to "
            "use them.</p>" + table(["video", "reason"], rows, left=(0, 1)))
