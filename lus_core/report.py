"""The report a person opens: one self-contained ``report/index.html`` (step `report`).

Everything is inline: CSS in a <style> block, figures as base64 data URIs, no script.  The
page can be mailed, archived or opened offline.  It is built only from the files of the
`evaluate` step (``eval/summary.json``, ``eval/matrix.csv``, ``eval/figures/*.png``), the
`gradcam` step (``gradcam/index.json`` and its pngs) plus ``split.json`` and the config, so it
says exactly how each number was made.

Layout (checked in headless Chromium by tests/test_report_browser.py): the answer first (the
selected configuration, its interval, a forest plot of the main rows), then the pictures
(galleries beside their Grad-CAM maps, figures), then the long tables, collapsed; wide tables
scroll inside their own box so the page never scrolls sideways.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from lus_core.config import config_get as _cfg
from lus_core.evaluation.summary import fmt_p
from lus_core.io_utils import atomic_path, read_json

__all__ = ["run_report", "fmt_ci", "render_html"]

ROW_TYPE_LABEL = {
    "cnn": "CNN alone",
    "fallback_only": "fallback only",
    "combined": "combined",
    "oracle_detector": "oracle detector",
    "oracle_fallback": "oracle fallback",
}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:1em 2em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}
td.l,th.l{text-align:left}
tr.cnn td{background:#eef5fb}tr.oracle td{color:#777;font-style:italic}tr.fallback_only td{background:#fbf7ee}
tr.best td{font-weight:bold}
.sig{color:#b2182b;font-weight:bold}.ns{color:#666}
.answer{background:#f7f7f7;border-left:4px solid #2c7bb6;padding:.6em 1em;margin:1em 0}
.answer.yes{border-left-color:#b2182b}
figure{display:inline-block;margin:.6em;vertical-align:top;max-width:100%;box-sizing:border-box}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#444;max-width:720px}
.kv td:first-child{text-align:left;color:#555}.kv td{text-align:left}
details{margin:.6em 0}summary{cursor:pointer;color:#2c7bb6}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
.small{font-size:.85em;color:#555}
.scroll{overflow-x:auto;max-width:100%}
td,th{overflow-wrap:anywhere}
.top{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.headline{flex:1 1 340px;min-width:0}.headline .big{font-size:1.5em;font-weight:bold;margin:.1em 0}
.top figure{flex:1 1 520px;margin:0;min-width:0}
.pair{display:flex;flex-wrap:wrap;align-items:flex-start}.pair figure{flex:0 1 auto}
details>summary{font-weight:bold}
"""


# --------------------------------------------------------------------------- formatting


def _isnan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def fmt_ci(est, lo, hi, digits: int = 2) -> str:
    """``0.61 [0.55, 0.67]``; ``-`` for a missing estimate, no interval when it is missing."""
    if _isnan(est):
        return "-"
    s = f"{float(est):.{digits}f}"
    if _isnan(lo) or _isnan(hi):
        return s
    return f"{s} [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def _fmt(x, digits: int = 2) -> str:
    if _isnan(x):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x) -> str:
    return "-" if _isnan(x) else f"{100 * float(x):.1f}%"


def _ci_pct(ci) -> str:
    return "-" if _isnan(ci) else f"{100 * float(ci):g}%"


def _e(x) -> str:
    return html.escape(str(x))


def _table(header: Sequence[str], rows: Iterable[Sequence], row_classes: Sequence[str] | None = None,
           left: Sequence[int] = (0,), cls: str = "") -> str:
    out = [f'<div class="scroll"><table class="{cls}"><thead><tr>']
    out += [f'<th class="{"l" if i in left else ""}">{_e(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for j, row in enumerate(rows):
        rc = row_classes[j] if row_classes else ""
        out.append(f'<tr class="{rc}">')
        for i, v in enumerate(row):
            raw = isinstance(v, _Raw)
            out.append(f'<td class="{"l" if i in left else ""}">{v if raw else _e(v)}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


class _Raw(str):
    """Already-escaped HTML inside a table cell."""


def _kv(pairs: Iterable[tuple[str, object]]) -> str:
    return _table(["", ""], [(k, _fmt(v) if not isinstance(v, (list, dict)) else _json_short(v))
                             for k, v in pairs], cls="kv")


def _json_short(v) -> str:
    if isinstance(v, list) and all(not isinstance(x, (list, dict)) for x in v):
        return ", ".join(map(str, v))
    return json.dumps(v, sort_keys=True)


def _img(path: Path | bytes) -> str:
    raw = path if isinstance(path, bytes) else Path(path).read_bytes()
    return f"data:image/png;base64,{base64.b64encode(raw).decode('ascii')}"


def _figure(path: Path | bytes, title: str, caption: str) -> str:
    return (f'<figure><img alt="{_e(title)}" src="{_img(path)}"><figcaption><b>{_e(title)}.</b> '
            f"{_e(caption)}</figcaption></figure>")


# --------------------------------------------------------------------------- sections




def _section_run(config: Mapping, summary: Mapping) -> str:
    c = summary.get("counts", {})
    ds = c.get("dataset", {}) or {}
    classes = summary.get("classes") or _cfg(config, "classes", default=[])
    synthetic = bool(_cfg(config, "dataset", "synthetic", "enabled", default=False))
    data_src = ("embedded synthetic LUS cohort" if synthetic
                else ", ".join(map(str, _cfg(config, "dataset", "video_dirs", default=[]) or [])) or "-")
    run = [
        ("data", data_src),
        ("results folder", _cfg(config, "results", default="-")),
        ("classes (scores)", classes),
        ("frames / videos / patients", f"{ds.get('n_frames', '-')} / {ds.get('n_videos', '-')} / "
                                       f"{ds.get('n_patients', '-')}"),
        ("frames per class (all)", ds.get("all_frames_per_class", "-")),
        ("frame size, stride", f"{_cfg(config, 'frames', 'size', default='-')} px, "
                               f"every {_cfg(config, 'frames', 'stride', default='-')} frame(s)"),
        ("backbones", c.get("backbones") or _cfg(config, "train", "backbones", default=[])),
        ("weights, fine-tuning", f"{_cfg(config, 'train', 'weights', default='-')}, "
                                 f"{_cfg(config, 'train', 'finetune', default='-')}"),
        ("epochs, batch size, lr", f"{_cfg(config, 'train', 'epochs', default='-')}, "
                                   f"{_cfg(config, 'train', 'batch_size', default='-')}, "
                                   f"{_cfg(config, 'train', 'lr', default='-')}"),
        ("confidence methods", c.get("confidence_methods") or _cfg(config, "confidence", "methods", default=[])),
        ("threshold rule", _cfg(config, "confidence", "threshold_rule", default="-")),
        ("similarity spaces", c.get("spaces") or _cfg(config, "similarity", "spaces", default=[])),
        ("k (neighbours)", c.get("k") or _cfg(config, "similarity", "k", default=[])),
        ("fallback modes", c.get("fallback_modes") or _cfg(config, "similarity", "fallback", default=[])),
        ("distance", _cfg(config, "similarity", "metric", default="-")),
        ("bootstrap", f"{summary.get('n_bootstrap', '-')} patient resamples, "
                      f"{_ci_pct(summary.get('ci'))} intervals, seed {summary.get('seed', '-')}"),
        ("fallback scoring function", summary.get("fallback_function", "-")),
    ]
    return "<h2>What was run</h2>" + _kv(run)


def _section_split(split: Mapping, summary: Mapping) -> str:
    classes = summary.get("classes") or []
    c = summary.get("counts", {})
    ds = c.get("dataset", {}) or {}
    rows = []
    for name, key in (("test", "test_counts"), ("train", "train_counts")):
        counts = split.get(key)
        if isinstance(counts, Mapping):
            counts = [counts.get(str(i), counts.get(i, 0)) for i in range(len(classes))]
        if counts is None:
            counts = ds.get(f"{name}_frames_per_class", [])
        rows.append([name, len(split.get(f"{name}_patients", [])), ds.get(f"{name}_videos", "-"),
                     *[_fmt(x) for x in counts]])
    head = ["part", "patients", "videos", *[f"score {x}" for x in classes]]
    folds = split.get("folds", [])
    info = [
        ("test patients", ", ".join(map(str, split.get("test_patients", [])))),
        ("method", split.get("method", "-")),
        ("objective", f"{split.get('objective', '-')} = {_fmt(split.get('objective_value'), 4)}"),
        ("combinations searched", split.get("n_combinations", "-")),
        ("cross-validation folds", len(folds)),
        ("test frames scored", f"{c.get('n_test_frames', '-')} frames, {c.get('n_test_videos', '-')} videos"),
    ]
    return ("<h2>The split</h2><p>Every number below is measured on the test patients only; no test "
            "patient was used in training, fold validation, confidence fitting or a similarity index.</p>"
            + _kv(info) + "<p>Frames per class:</p>" + _table(head, rows))


METRIC_LABEL = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
                "qwk": "QWK"}


def _signed_ci(est, lo, hi) -> str:
    if _isnan(est):
        return "-"
    return f"{float(est):+.3f}" + ("" if _isnan(lo) or _isnan(hi) else f" [{float(lo):+.3f}, {float(hi):+.3f}]")


def _section_selected(summary: Mapping) -> str:
    """The headline: the configuration chosen on the training patients, its one test score."""
    sel = summary.get("selected")
    if not sel:
        return ""
    crit = sel["criterion"]
    n_boot = int(summary.get("n_bootstrap") or 1000)
    ci = _ci_pct(summary.get("ci"))
    rows = []
    for m, label in METRIC_LABEL.items():
        t = sel["test"].get(m, {})
        d = (sel.get("delta_vs_cnn") or {}).get(m, {})
        delta = "reference" if sel["row_type"] == "cnn" else (
            f"{_signed_ci(d.get('diff'), d.get('lo'), d.get('hi'))}, {fmt_p(d.get('p'), n_boot)}"
            + (" *" if d.get("significant") else ""))
        rows.append([label + (" (criterion)" if m == crit else ""), _fmt((sel.get("validation") or {}).get(m), 3),
                     fmt_ci(t.get("estimate"), t.get("lo"), t.get("hi"), 3), delta])
    out = [
        "<h2>The selected configuration</h2>",
        f'<div class="answer"><b>{_e(sel["config_id"])}</b>: the best validation {_e(METRIC_LABEL[crit])} '
        f'({_fmt(sel.get("validation_score"), 3)}) of {sel.get("n_candidates", "-")} deployable configurations validated out of fold, '
        f"chosen on {_e(sel['chosen_on'])}. Ties: {_e(sel.get('tie_break', '-'))}. Its score on the test "
        f"patients below is reported once; `lus predict` uses this configuration by default.</div>",
        _table(["metric", "validation (training patients, out of fold)", f"test patients ({ci} CI)",
                f"difference to the CNN alone of {sel['backbone']} (paired, {ci} CI)"], rows, left=(0,)),
        "<p class='small'>* the interval excludes 0. Intervals: percentile bootstrap over test patients.</p>",
    ]
    wc = summary.get("winners_curse")
    if wc:
        out.append(
            f"<p>Winner's curse: the deployable configuration with the highest test {_e(METRIC_LABEL[wc['metric']])}"
            f" is {_e(wc['test_best_config_id'])} ({_fmt(wc['test_best_score'], 3)}; validation "
            f"{_fmt(wc.get('test_best_validation_score'), 3)}), {_fmt(wc['gap'], 3)} above the selected "
            "configuration's test score. A configuration picked on the test patients would have claimed that "
            "gap; the selected one was not picked on them.</p>")
    return "".join(out)


def _selected(summary: Mapping) -> Mapping | None:
    """The configuration the run recommends: chosen on the training patients (summary.json ``selected``)."""
    return summary.get("selected")


def _section_headline(summary: Mapping, matrix: pd.DataFrame) -> str:
    """The first screen: the selected configuration, its interval, and the forest plot of the main rows."""
    from lus_core.report_forest import forest_png, main_rows

    sel = _selected(summary)
    ci = summary.get("ci", 0.95)
    box = ['<div class="headline"><h2>The answer</h2>']
    if sel:
        cnn = (summary.get("cnn_alone") or {}).get(sel.get("backbone"), {})
        crit = sel["criterion"]
        test = sel.get("test") or {}
        box += [
            f"<p>Selected on the training patients (out of fold, best validation {_e(METRIC_LABEL[crit])} "
            f"{_fmt(sel.get('validation_score'), 3)}): <b>{_e(sel.get('config_id', '-'))}</b></p>",
            *(f'<p class="big">{_e(METRIC_LABEL[m])} {fmt_ci(*(test.get(m, {}).get(k) for k in ("estimate", "lo", "hi")))}</p>'
              for m in dict.fromkeys([crit, "accuracy"])),
            f"<p class='small'>On the test patients, reported once; {_ci_pct(ci)} patient-bootstrap intervals.</p>",
        ]
        if cnn:
            box.append(f"<p>CNN alone ({_e(sel.get('backbone'))}): accuracy "
                       f"{fmt_ci(cnn.get('accuracy'), cnn.get('accuracy_lo'), cnn.get('accuracy_hi'))}</p>")
        d = (sel.get("delta_vs_cnn") or {}).get("accuracy") or {}
        if sel.get("row_type") != "cnn" and not _isnan(d.get("diff")):
            box.append(f"<p>Accuracy difference to the CNN alone: {_signed_ci(d.get('diff'), d.get('lo'), d.get('hi'))}"
                       " (paired)</p>")
    else:
        box.append("<p>No configuration was selected.</p>")
    box.append("</div>")
    rows = main_rows(matrix, sel)
    fig = ""
    if len(rows):
        fig = _figure(forest_png(rows, (sel or {}).get("config_id"), float(ci)), "Main rows",
                      "Test accuracy with its interval: the CNN alone of each backbone (blue, dotted lines), "
                      "the selected configuration (▶) and the best other configurations.")
    return '<section class="top">' + "".join(box) + fig + "</section>"


def _section_answer(summary: Mapping) -> str:
    sig = summary.get("significance", {}) or {}
    out = ["<h2>Exploratory: does any combination beat the classifier alone on the test patients?</h2>",
           f'<div class="answer">{_e(sig.get("statement", "-"))}</div>']
    cnn = summary.get("cnn_alone", {}) or {}
    if cnn:
        rows = [[b, fmt_ci(r.get("accuracy"), r.get("accuracy_lo"), r.get("accuracy_hi")),
                 fmt_ci(r.get("macro_f1"), r.get("macro_f1_lo"), r.get("macro_f1_hi")),
                 fmt_ci(r.get("qwk"), r.get("qwk_lo"), r.get("qwk_hi"))] for b, r in cnn.items()]
        out.append("<p>The classifier alone:</p>" + _table(["backbone", "accuracy", "macro-F1", "QWK"], rows))
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


def _matrix_rows(df: pd.DataFrame, best_rank, n_boot: int = 1000, criterion: str = "qwk"
                 ) -> tuple[list[list], list[str]]:
    rows, classes = [], []
    for r in df.to_dict("records"):
        d = r.get("delta_accuracy")
        if r["row_type"] == "cnn":
            delta = _Raw('<span class="ns">reference</span>')
        elif _isnan(d):
            delta = "-"
        else:
            s = bool(r.get("delta_accuracy_significant"))
            txt = (f"{float(d):+.3f} [{float(r['delta_accuracy_lo']):+.3f}, {float(r['delta_accuracy_hi']):+.3f}]"
                   f" {fmt_p(float(r['delta_accuracy_p']), n_boot).replace(' ', '')}")
            delta = _Raw(f'<span class="{"sig" if s else "ns"}">{_e(txt)}{" *" if s else ""}</span>')
        vmaj = r.get("video_majority_accuracy")
        rows.append([
            r["rank"], r["config_id"], ROW_TYPE_LABEL.get(r["row_type"], r["row_type"]),
            fmt_ci(r["accuracy"], r.get("accuracy_lo"), r.get("accuracy_hi")),
            fmt_ci(r["balanced_accuracy"], r.get("balanced_accuracy_lo"), r.get("balanced_accuracy_hi")),
            fmt_ci(r["macro_f1"], r.get("macro_f1_lo"), r.get("macro_f1_hi")),
            fmt_ci(r["qwk"], r.get("qwk_lo"), r.get("qwk_hi")),
            delta,
            _fmt(r.get(f"val_{criterion}"), 3),
            _pct(r.get("fallback_rate")),
            f"{int(r.get('frames_fixed', 0))} / {int(r.get('frames_broken', 0))}",
            fmt_ci(vmaj, r.get("video_majority_accuracy_lo"), r.get("video_majority_accuracy_hi")),
        ])
        rt = r["row_type"]
        classes.append(" ".join(filter(None, [
            "oracle" if rt.startswith("oracle") else rt,
            "best" if bool(r.get("selected")) else ""])))
    return rows, classes


def _section_matrix(matrix: pd.DataFrame, summary: Mapping, top: int) -> str:
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
    rows, classes = _matrix_rows(shown, None, n_boot, crit)
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
        f"fallback-only, oracle-detector and oracle-fallback row of each backbone. Brackets: {_ci_pct(ci)} "
        "bootstrap interval over test patients. Δ accuracy: difference to the CNN alone of the same backbone on "
        "the same patient resamples (paired), <span class='sig'>* = interval excludes 0</span>. Validation: the "
        "same configuration on the training patients, out of fold. Oracle rows (grey) are bounds, not methods: "
        "an oracle detector trusts exactly the frames the CNN gets right; an oracle fallback gives untrusted "
        "frames their true score. Fixed / broken: untrusted frames the fallback turned right / wrong.</p>",
        f"<details><summary>The {len(shown)} rows above</summary>",
        _table(head, rows, classes, left=(1, 2)),
        "</details>",
        f"<details><summary>Full matrix ({n_all} rows; every column is in "
        f"{_e(summary.get('matrix_csv', 'matrix.csv'))})</summary>",
    ]
    rows_all, classes_all = _matrix_rows(matrix, None, n_boot, crit)
    out += [_table(head, rows_all, classes_all, left=(1, 2)), "</details>"]
    return "".join(out)


VIDEO_SCORE_LABELS = {
    "max": "max of frame scores", "mean": "mean of frame scores (rounded)", "majority": "majority of frame scores",
    "confident_mean": "mean of the most confident frames (Khan et al. 2023)",
    "attention": "learned: attention pooling (out of fold)",
}


def _section_video_level(summary: Mapping) -> str:
    """The video-level table: fixed aggregations and the learned score, per backbone."""
    levels = summary.get("video_level") or {}
    if not levels:
        return ""
    rows = []
    for b, table in levels.items():
        for r in table:
            rows.append([b, VIDEO_SCORE_LABELS.get(r["video_score"], r["video_score"]),
                         fmt_ci(r.get("accuracy"), r.get("accuracy_lo"), r.get("accuracy_hi")),
                         fmt_ci(r.get("qwk"), r.get("qwk_lo"), r.get("qwk_hi")),
                         _fmt(r.get("val_accuracy")), _fmt(r.get("val_qwk"))])
    n = next(iter(levels.values()))[0].get("n_test_videos", "-")
    return ("<h2>Video-level scores</h2><p>One score per video, the unit real datasets label. Test columns: "
            f"{_e(n)} test videos, 95% bootstrap intervals over test patients; validation columns: the training "
            "patients' videos, out of fold (what a choice of aggregation may look at).</p>"
            + _table(["backbone", "video score", "test accuracy", "test QWK", "validation accuracy",
                      "validation QWK"], rows, left=(0, 1)))


def _section_findings(summary: Mapping) -> str:
    """AUROC of the auxiliary finding outputs, when the run trained any."""
    from lus_core.evaluation.findings import DISPLAY_HEADER, DISPLAY_NOTE, display_rows

    records = summary.get("findings") or []
    if not records:
        return ""
    return (f"<h2>Auxiliary findings</h2><p>{_e(DISPLAY_NOTE)}</p>"
            + _table(DISPLAY_HEADER, display_rows(records, fmt_ci), left=(0, 1, 2)))


def _section_confidence(summary: Mapping) -> str:
    """One table, one value per (method, metric), every metric from lus_core.confidence.metrics."""
    tab = summary.get("confidence_methods") or []
    if not tab:
        return ""
    rows = []
    for r in sorted(tab, key=lambda r: (r["backbone"], r.get("augrc") if r.get("augrc") is not None else 1.0,
                                        r["method"])):
        rows.append([r["backbone"], r["method"], _fmt(r.get("augrc"), 4), _fmt(r.get("auroc"), 3),
                     _fmt(r.get("aurc"), 3), _fmt(r.get("eaurc"), 3), _fmt(r.get("threshold"), 3),
                     _pct(r.get("coverage")), _pct(r.get("acc_trusted")), _pct(r.get("acc_rejected")),
                     _fmt(r.get("mean_set_size"), 2)])
    head = ["backbone", "method", "AUGRC", "failure AUROC", "AURC", "E-AURC", "threshold", "coverage",
            "CNN acc. trusted", "CNN acc. rejected", "mean set size"]
    rep_keys = sorted({k for r in tab for k in (r.get("reported") or {})})
    extra = ""
    if rep_keys:
        rrows = [[r["backbone"], r["method"], *[_fmt((r.get("reported") or {}).get(k), 3) for k in rep_keys]]
                 for r in tab]
        extra = ("<details><summary>More test metrics from the confidence step (not shown above)</summary>"
                 + _table(["backbone", "method", *rep_keys], rrows, left=(0, 1)) + "</details>")
    return ("<h2>Confidence methods</h2><p>How well each method tells right from wrong CNN scores on the "
            "test frames, sorted by AUGRC (area under the generalized risk-coverage curve, Traub et al. 2024: "
            "the share of frames accepted and wrong, integrated over coverage; lower is better). Failure "
            "AUROC: higher is better; AURC, E-AURC: lower is better; tied confidences count as one threshold "
            "step. Coverage: share of test frames trusted at the fitted threshold.</p>"
            + _table(head, rows, left=(0, 1)) + extra)


def _resolve(base: Path, f: str) -> Path:
    p = Path(f)
    return p if p.is_absolute() else base / p


def _section_figures(items: Sequence[Mapping], base: Path, heading: str, intro: str = "") -> str:
    parts = []
    for it in items:
        p = _resolve(base, it["file"])
        if p.exists():
            parts.append(_figure(p, it.get("title", p.stem), it.get("caption", "")))
    if not parts:
        return ""
    return f"<h2>{_e(heading)}</h2>" + (f"<p>{_e(intro)}</p>" if intro else "") + "".join(parts)


def _section_galleries(gals: Sequence[Mapping], gradcam: Sequence[Mapping], base: Path) -> str:
    """Each gallery with the Grad-CAM map of its query frame beside it (when one was made)."""
    cams = {str(c["gallery"]): c for c in gradcam}
    parts = []
    for g in gals:
        p = _resolve(base, g["file"])
        if not p.exists():
            continue
        pair = _figure(p, g.get("title", p.stem), g.get("caption", ""))
        cam = cams.get(str(g["file"]))
        if cam is not None and Path(cam["file"]).exists():
            pair += _figure(Path(cam["file"]), cam.get("title", "Grad-CAM"), cam.get("caption", ""))
        parts.append(f'<div class="pair">{pair}</div>')
    if not parts:
        return ""
    return ("<h2>The most uncertain test frames and their nearest training frames</h2><p>For the selected "
            "configuration: the test frames its confidence model trusts least, each beside the training frames "
            "(other patients) the fallback scored it from, and where the CNN looked (Grad-CAM).</p>"
            + "".join(parts))


def _csv_table(path: Path, max_rows: int = 200) -> str:
    df = pd.read_csv(path)
    if len(df) > max_rows:
        df = df.head(max_rows)

    def cell(v):
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.3f}"
        return v

    text_cols = tuple(i for i, c in enumerate(df.columns) if df[c].dtype == object)
    return _table([str(c) for c in df.columns], [[cell(v) for v in row] for row in df.itertuples(index=False)],
                  left=text_cols or (0,))


def _section_tables(items: Sequence[Mapping], base: Path) -> str:
    parts = []
    for it in items:
        p = _resolve(base, it["file"])
        if p.exists():
            cap = f"<p class='small'>{_e(it.get('caption', ''))}</p>" if it.get("caption") else ""
            parts.append(f"<details><summary>{_e(it.get('title', p.stem))}</summary>{cap}{_csv_table(p)}</details>")
    return "<h2>More tables</h2>" + "".join(parts) if parts else ""


def _normalise_items(x) -> list[dict]:
    if not x:
        return []
    if isinstance(x, Mapping):
        return [{"file": str(v), "title": str(k), "caption": ""} for k, v in x.items()]
    out = []
    for it in x:
        if isinstance(it, Mapping):
            out.append({"title": Path(str(it["file"])).stem, "caption": "", **it, "file": str(it["file"])})
        else:
            out.append({"file": str(it), "title": Path(str(it)).stem, "caption": ""})
    return out


def _section_skipped(summary: Mapping) -> str:
    """Videos left out with dataset.on_bad_video: skip (summary.json's skipped_videos)."""
    skipped = summary.get("skipped_videos") or {}
    if not skipped.get("count"):
        return ""
    rows = [[v["video"], v["reason"]] for v in skipped["videos"]]
    return (f"<h2>Skipped videos ({skipped['count']})</h2><p>Left out of every result because "
            "<code>dataset.on_bad_video</code> is <code>skip</code>; fix or remove them and run again to "
            "use them.</p>" + _table(["video", "reason"], rows, left=(0, 1)))


# --------------------------------------------------------------------------- entry points


def render_html(summary: Mapping, matrix: pd.DataFrame, split: Mapping, config: Mapping, eval_dir: Path,
                extra: Mapping | None = None) -> str:
    extra = dict(extra or {})
    title = extra.get("title", "Lung-ultrasound scoring: CNN, confidence and similarity fallback")
    top = int(extra.get("top", 30))
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    figs = _normalise_items(summary.get("figures")) + _normalise_items(extra.get("figures"))
    gals = _normalise_items(summary.get("galleries")) + _normalise_items(extra.get("galleries"))
    notes = extra.get("notes") or []
    prov = extra.get("provenance") or {}
    # the answer and the pictures first; long tables below them, collapsed
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">Generated {now}. Results folder: {_e(_cfg(config, "results", default="-"))}.</p>',
        _section_headline(summary, matrix),
        _section_selected(summary),
        _section_answer(summary),
        _section_video_level(summary),
        _section_findings(summary),
        _section_skipped(summary),
        _section_galleries(gals, extra.get("gradcam") or [], eval_dir),
        _section_figures(figs, eval_dir, "Figures"),
        _section_matrix(matrix, summary, top),
        _section_confidence(summary),
        _section_tables(_normalise_items(extra.get("tables")), eval_dir),
        _section_run(config, summary),
        _section_split(split, summary),
    ]
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    body.append("<h2>Provenance</h2>")
    if prov:
        body.append(_kv(sorted(prov.items())))
    body.append("<details><summary>Full configuration</summary><pre>"
                + _e(json.dumps(config, indent=2, sort_keys=True, default=str)) + "</pre></details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


def run_report(eval_dir: str | os.PathLike, split_json: str | os.PathLike, config: Mapping,
               out_html: str | os.PathLike, extra: Mapping | None = None) -> Path:
    """Write the self-contained HTML report from the `evaluate` outputs in ``eval_dir``.

    ``extra`` (all optional): ``title``; ``top`` (combined rows shown, default 30); ``figures`` and
    ``galleries`` (more pngs: a list of paths or of {"file", "title", "caption"}, or a dict
    title -> path; relative paths are relative to ``eval_dir``); ``tables`` (csv files shown as
    tables, same forms, e.g. the confidence steps' metrics.csv); ``notes`` (list of str);
    ``provenance`` (dict shown as a table, e.g. code version, Snakemake version); ``gradcam``
    (the ``gradcam/index.json`` of the gradcam step: its maps are drawn beside their galleries).
    """
    eval_dir = Path(eval_dir)
    summary = read_json(eval_dir / "summary.json")
    matrix_path = _resolve(eval_dir, summary.get("matrix_csv", "matrix.csv"))
    matrix = pd.read_csv(matrix_path, keep_default_na=True)
    for col in ("confidence", "space", "fallback"):
        if col in matrix:
            matrix[col] = matrix[col].fillna("")
    split = read_json(split_json)
    extra = dict(extra or {})
    if extra.get("gradcam"):
        cam_index = Path(extra["gradcam"])
        extra["gradcam"] = [{**c, "file": str(cam_index.parent / c["file"])} for c in read_json(cam_index)]
    page = render_html(summary, matrix, split, config, eval_dir, extra)
    with atomic_path(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(out_html)
