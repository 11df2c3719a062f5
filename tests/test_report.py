"""The HTML report: produced, self-contained, shows the matrix, the answer and the figures."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from test_evaluation import (  # tests/ is on sys.path under pytest's default import mode
    build_results,
    report_config,
)

from lus_core.evaluation.step import run_evaluate
from lus_core.report import html as R
from lus_core.report.markup import esc, fmt, fmt_ci


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    args = build_results(root, n_patients=6, frames_per_video=5, n_boot=100)
    run_evaluate(**args, figures=True)
    out = root / "report" / "index.html"
    (root / "conf_metrics.csv").write_text("method,auroc\nmsp,0.71234\n")
    extra = {"notes": ["a note for the reader"], "provenance": {"code_version": "0.1.0"},
             "tables": {"Confidence metrics scratch": root / "conf_metrics.csv"},
             "figures": [{"file": root / "eval" / "figures" / "confusion_selected.png", "title": "extra figure"}]}
    R.run_report(root / "eval", args["split_json"], report_config(args), out, extra)
    return args, out, out.read_text(encoding="utf-8")


def test_report_written_and_self_contained(report):
    _, out, page = report
    assert out.exists()
    assert page.startswith("<!DOCTYPE html>")
    # no external resources, no script
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(?!data:)[^"#]', page)
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(imgs) >= 5
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)


def test_report_shows_matrix_and_answer(report):
    args, _, page = report
    matrix = pd.read_csv(args["out_matrix_csv"])
    summary = json.loads(Path(args["out_summary_json"]).read_text())
    best = matrix[matrix["row_type"] == "combined"].iloc[0]
    assert "All configurations" in page
    assert esc(best["config_id"]) in page
    # CIs shown as "0.61 [0.55, 0.67]"
    assert fmt_ci(best["accuracy"], best["accuracy_lo"], best["accuracy_hi"]) in page
    assert re.search(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", page)
    for b in ("scratch", "resnet18"):
        assert f"{b} · CNN alone" in page
    assert "oracle detector" in page and "oracle fallback" in page
    assert esc(summary["significance"]["statement"]) in page
    assert "Confidence methods" in page and "failure AUROC" in page and "AUGRC" in page
    for p in json.loads(Path(args["split_json"]).read_text())["test_patients"]:
        assert p in page
    assert "a note for the reader" in page and "code_version" in page
    assert "Confidence metrics scratch" in page and "0.712" in page
    assert "extra figure" in page
    assert "uncertain test frames" in page


def test_report_headline_is_the_selected_configuration(report):
    args, _, page = report
    s = json.loads(Path(args["out_summary_json"]).read_text())
    sel = s["selected"]
    h2 = re.findall(r"<h2>(.*?)</h2>", page)
    assert h2[:2] == ["The answer", "The selected configuration"]
    start = page.index("<h2>The answer</h2>")
    headline = page[start:page.index("<h2>", start + 4)]
    t = sel["test"]["qwk"]
    assert esc(sel["config_id"]) in headline and "training patients" in headline
    assert fmt_ci(t["estimate"], t["lo"], t["hi"]) in headline  # the criterion's test score, once
    start = page.index("<h2>The selected configuration</h2>")
    first = page[start:page.index("<h2>", start + 4)]
    assert esc(sel["config_id"]) in first and "training patients" in first
    assert fmt_ci(t["estimate"], t["lo"], t["hi"], 3) in first
    assert "Winner" in first and fmt(s["winners_curse"]["gap"], 3) in first
    assert "All configurations (exploratory)" in page


def test_confidence_table_shows_each_metric_once(report):
    args, _, page = report
    s = json.loads(Path(args["out_summary_json"]).read_text())
    sec = page[page.index("<h2>Confidence methods</h2>"):]
    sec = sec[:sec.index("<h2>", 5)] if "<h2>" in sec[5:] else sec
    header = re.findall(r"<th[^>]*>(.*?)</th>", sec)
    assert header[2] == "AUGRC"  # the primary column
    for name in ("AUGRC", "failure AUROC", "AURC", "E-AURC"):
        assert header.count(name) == 1
    row = s["confidence_methods"][0]
    assert "auroc" not in row["reported"] and "aurc" not in row["reported"]


def test_fmt_ci():
    assert fmt_ci(0.6123, 0.55, 0.671) == "0.61 [0.55, 0.67]"
    assert fmt_ci(0.5, float("nan"), 0.6) == "0.50"
    assert fmt_ci(None, 0, 1) == "-"


def test_report_without_figures(tmp_path):
    args = build_results(tmp_path, n_patients=6, frames_per_video=3, n_boot=20)
    run_evaluate(**args, figures=False)
    out = R.run_report(tmp_path / "eval", args["split_json"], report_config(args), tmp_path / "r.html")
    page = out.read_text()
    # no evaluation figures: the only picture is the report's own forest plot of matrix.csv
    assert "All configurations" in page and page.count("data:image/png") == 1
