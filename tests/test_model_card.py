"""The model card: written by the report step from the run's files, the same by `lus model-card`,
and every number in it one of the run's."""

from __future__ import annotations

import copy
import hashlib
import re

import pytest

from lus_core.frames.store import read_frame_index
from lus_core.io_utils import config_json
from lus_core.runs.model_card import model_card_text, render, store_facts
from lus_core.runs.page_output import marker
from lus_core.runs.reader import FinishedRun
from tests.workflow_helpers import lus

pytestmark = pytest.mark.slow


def _inputs(run: FinishedRun):
    index = read_frame_index(run.layout.frame_index())
    return run.summary, run.split, index, store_facts(run.verified_stores(index["h5"].unique()).values()), run.config


def test_the_report_step_writes_the_card_of_the_runs_files(tiny_run):
    run = FinishedRun(tiny_run.results)
    card = (tiny_run.results / "report" / "model_card.md").read_text()
    assert card == model_card_text(run)  # the report step's and lus model-card's are one card
    sel, summary, index = run.selected(), run.summary, read_frame_index(run.layout.frame_index())
    for section in ("Intended use", "Not intended use", "Data", "Recipe", "Selection rule",
                    "Patient-level estimate", "Findings AUROC", "Failure detection", "Known limits", "Code and config"):
        assert f"## {section}" in card
    assert sel["config_id"] in card
    qwk = sel["test"]["qwk"]
    assert f"| QWK | {sel['validation']['qwk']:.3f} | {qwk['estimate']:.3f} [{qwk['lo']:.3f}, {qwk['hi']:.3f}] |" in card
    assert f"{index['patient'].nunique()} patients, {index['video'].nunique()} videos, {len(index)} frames" in card
    for r in summary["findings"]:
        if r["backbone"] == sel["backbone"]:
            assert f"| {r['finding']} | {r['level']} | {r['auroc']:.3f} [" in card
    for r in summary["confidence_methods"]:
        if r["backbone"] == sel["backbone"]:
            assert re.search(rf"\| {r['method']}( \(deployed\))? \| {r['augrc']:.4f} \|", card)
    assert f"{summary['winners_curse']['gap']:.3f} above" in card
    assert hashlib.sha256(config_json(run.config).encode()).hexdigest() in card
    assert "synthetic cohort" in card and "External shift: not measured" in card


def test_every_number_comes_from_the_run(tiny_run):
    """A changed figure in the run's summary is a changed figure in the card (nothing is hard-coded)."""
    run = FinishedRun(tiny_run.results)
    summary, split, index, stores, config = _inputs(run)
    before = render(summary, split, index, stores, config, "x", "t")
    changed = copy.deepcopy(summary)
    changed["selected"]["test"]["qwk"]["estimate"] = 0.123456
    changed["winners_curse"]["gap"] = 0.654321
    after = render(changed, split, index, stores, config, "x", "t")
    assert "0.123 [" in after and "0.123 [" not in before
    assert "0.654 above" in after


def test_lus_model_card(tiny_run, tmp_path):
    res = lus("model-card", "--run", tiny_run.results, "--out", tmp_path / "card.md")
    assert res.returncode == 0, res.stderr
    # the report step's card, below the line that marks the page as lus model-card's (lus_core.runs.page_output)
    marked, card = (tmp_path / "card.md").read_text().split("\n", 1)
    assert marked == marker("lus model-card") and card == (tiny_run.results / "report" / "model_card.md").read_text()
