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

import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from lus_core.evaluation.matrix import read_matrix
from lus_core.evaluation.summary import read_summary
from lus_core.io_utils import atomic_path, read_json
from lus_core.report.markup import CSS, esc, kv, normalise_items, resolve
from lus_core.report.nested_sections import (
    section_deployed,
    section_nested_folds,
    section_nested_headline,
    section_nested_split,
)
from lus_core.report.sections import (
    section_answer,
    section_burned_in,
    section_confidence,
    section_figures,
    section_findings,
    section_galleries,
    section_headline,
    section_matrix,
    section_run,
    section_selected,
    section_skipped,
    section_split,
    section_tables,
    section_video_answer,
    section_video_level,
)
from lus_core.report.seed_sections import section_seed_replicas

__all__ = ["run_report", "render_html"]


def render_html(summary: Mapping, matrix: pd.DataFrame, split: Mapping, config: Mapping, eval_dir: Path,
                extra: Mapping | None = None) -> str:
    extra = dict(extra or {})
    title = extra.get("title", "Lung-ultrasound scoring: CNN, confidence and similarity fallback")
    top = int(extra.get("top", 30))
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    figs = normalise_items(summary.get("figures")) + normalise_items(extra.get("figures"))
    gals = normalise_items(summary.get("galleries")) + normalise_items(extra.get("galleries"))
    notes = extra.get("notes") or []
    prov = extra.get("provenance") or {}
    head = [f"<h1>{esc(title)}</h1>",
            f'<p class="sub">Generated {now}. Results folder: {esc(config["results"])}.</p>']
    nested = extra.get("nested")
    if nested:  # split.outer_folds > 1: the estimate from every patient, then what was deployed
        classes = summary.get("classes") or config["classes"]
        body = [
            *head,
            section_nested_headline(nested["estimate"], nested.get("figure")),
            section_nested_folds(nested["estimate"]),
            section_deployed(summary),
            section_skipped(summary),
            section_figures(figs, eval_dir, "Figures"),
            section_confidence(summary),
            section_run(config, summary),
            section_nested_split(split, classes),
        ]
        return _page(title, body, notes, prov, config)
    # the answer and the pictures first; long tables below them, collapsed
    body = [
        *head,
        section_video_answer(summary),
        section_headline(summary, matrix),
        section_selected(summary),
        section_seed_replicas(extra.get("seeds") or [], extra.get("seed_summaries") or []),
        section_answer(summary),
        section_video_level(summary),
        section_findings(summary),
        section_skipped(summary),
        section_burned_in(extra.get("burned_in")),
        section_galleries(gals, extra.get("gradcam") or [], eval_dir),
        section_figures(figs, eval_dir, "Figures"),
        section_matrix(matrix, summary, top),
        section_confidence(summary),
        section_tables(normalise_items(extra.get("tables")), eval_dir),
        section_run(config, summary),
        section_split(split, summary),
    ]
    return _page(title, body, notes, prov, config)


def _page(title: str, body: list[str], notes, prov: Mapping, config: Mapping) -> str:
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    body.append("<h2>Provenance</h2>")
    if prov:
        body.append(kv(sorted(prov.items())))
    body.append("<details><summary>Full configuration</summary><pre>"
                + esc(json.dumps(config, indent=2, sort_keys=True, default=str)) + "</pre></details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


def run_report(eval_dir: str | os.PathLike, split_json: str | os.PathLike, config: Mapping,
               out_html: str | os.PathLike, extra: Mapping | None = None) -> Path:
    """Write the self-contained HTML report from the `evaluate` outputs in ``eval_dir``.

    ``extra`` (all optional): ``title``; ``top`` (combined rows shown, default 30); ``figures`` and
    ``galleries`` (more pngs: a list of paths or of {"file", "title", "caption"}, or a dict
    title -> path; relative paths are relative to ``eval_dir``); ``tables`` (csv files shown as
    tables, same forms, e.g. the confidence steps' metrics.csv); ``notes`` (list of str);
    ``provenance`` (dict shown as a table, e.g. code version, Snakemake version); ``gradcam``
    (the ``gradcam/index.json`` of the gradcam step: its maps are drawn beside their galleries);
    ``nested`` ({"estimate": ``nested/estimate.json``, "figure": ``nested/folds.png``} of a nested
    run: the page opens with them); ``seeds`` and ``seed_summaries`` (several model seeds in a
    single-split run: each seed's replica's summary.json, the first seed's first); ``burned_in`` (ids of DICOM videos that declare burned-in annotation).
    """
    eval_dir = Path(eval_dir)
    summary = read_summary(eval_dir / "summary.json")
    matrix = read_matrix(resolve(eval_dir, summary["matrix_csv"]))
    for col in ("confidence", "space", "fallback"):
        if col in matrix:
            matrix[col] = matrix[col].fillna("")
    split = read_json(split_json)
    extra = dict(extra or {})
    if extra.get("nested"):
        extra["nested"] = {**extra["nested"], "estimate": read_json(extra["nested"]["estimate"])}
    if extra.get("seed_summaries"):
        extra["seed_summaries"] = [read_summary(p) for p in extra["seed_summaries"]]
    if extra.get("gradcam"):
        cam_index = Path(extra["gradcam"])
        extra["gradcam"] = [{**c, "file": str(cam_index.parent / c["file"])} for c in read_json(cam_index)]
    page = render_html(summary, matrix, split, config, eval_dir, extra)
    with atomic_path(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(out_html)
