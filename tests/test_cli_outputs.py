"""`lus model-card` and `lus summarize` write pages, never over a file they did not write; every
command says in one line what is wrong with a folder that is not a finished run (no traceback)."""

from __future__ import annotations

import pytest

from lus_core.runs.page_output import marker
from tests.workflow_helpers import lus

pytestmark = pytest.mark.slow


def test_model_card_replaces_its_own_page_and_refuses_any_other_file(tiny_run, tmp_path):
    card = tmp_path / "card.md"
    assert lus("model-card", "--run", tiny_run.results, "--out", card).returncode == 0
    written = card.read_text()
    assert written.splitlines()[0] == marker("lus model-card")
    card.write_text(written.replace("Model card", "Model card (stale)"))
    assert lus("model-card", "--run", tiny_run.results, "--out", card).returncode == 0  # its own: replaced
    assert card.read_text() == written

    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    res = lus("model-card", "--run", tiny_run.results, "--out", notes)
    assert res.returncode == 2 and "not written by `lus model-card`" in res.stderr and "--overwrite" in res.stderr
    assert notes.read_text() == "my notes\n"
    assert lus("model-card", "--run", tiny_run.results, "--out", notes, "--overwrite").returncode == 0
    assert notes.read_text() == written

    res = lus("model-card", "--run", tiny_run.results, "--out", tmp_path)
    assert res.returncode == 2 and "is a folder" in res.stderr


def test_a_page_never_lands_inside_the_run_it_reads(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path / "run").results
    manifest = (run / "manifest.json").read_bytes()
    for args in (("model-card", "--run", run), ("summarize", run)):
        res = lus(*args, "--out", run / "manifest.json", "--overwrite")
        assert res.returncode == 2 and "inside the run folder" in res.stderr
    assert (run / "manifest.json").read_bytes() == manifest
    # nor inside a run it compares (--recipes)
    res = lus("summarize", tiny_run.results, "--out", run / "eval" / "page.md", "--recipes", run)
    assert res.returncode == 2 and "inside the run folder" in res.stderr and not (run / "eval" / "page.md").exists()


def test_summarize_keeps_a_users_page_and_figures(tiny_run, tmp_path):
    page, figures = tmp_path / "page.md", tmp_path / "page-figures"
    figures.mkdir()
    (figures / "forest_accuracy.png").write_bytes(b"my figure")
    res = lus("summarize", tiny_run.results, "--out", page)
    assert res.returncode == 2 and "page-figures" in res.stderr
    assert not page.exists() and (figures / "forest_accuracy.png").read_bytes() == b"my figure"

    page.write_text("my page\n")
    res = lus("summarize", tiny_run.results, "--out", page)
    assert res.returncode == 2 and page.read_text() == "my page\n"
    assert lus("summarize", tiny_run.results, "--out", page, "--overwrite").returncode == 0
    assert page.read_text().splitlines()[0] == marker("lus summarize")
    assert (figures / "forest_accuracy.png").read_bytes() == (tiny_run.results / "eval" / "figures" / "forest_accuracy.png").read_bytes()
    # its own page (and figures) again, without --overwrite; no staging folder is left beside it
    assert lus("summarize", tiny_run.results, "--out", page, "--title", "Again").returncode == 0
    assert "# Again" in page.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page-figures", "page.md"]


def test_a_folder_that_is_not_a_finished_run_is_named_with_what_is_wrong(tiny_run, tmp_path):
    unfinished = tiny_run.copy(tmp_path / "unfinished").results
    (unfinished / "manifest.json").unlink()  # the workflow writes it last
    for args in (("predict", tiny_run.results / "synthetic" / "videos", "--run", unfinished, "--out", tmp_path / "p"),
                 ("export", "--run", unfinished, "--out", tmp_path / "e"),
                 ("model-card", "--run", unfinished, "--out", tmp_path / "c.md"),
                 ("summarize", unfinished, "--out", tmp_path / "s.md")):
        res = lus(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert f"{unfinished}: no manifest.json; not the results folder of a finished workflow run" in res.stderr, res.stderr
    assert not any((tmp_path / name).exists() for name in ("p", "e", "c.md", "s.md"))

    broken = tiny_run.copy(tmp_path / "broken").results
    (broken / "manifest.json").write_text("# not JSON\n")
    res = lus("model-card", "--run", broken, "--out", tmp_path / "c.md")
    assert res.returncode == 2 and f"{broken / 'manifest.json'}: not valid JSON" in res.stderr


def test_predict_names_a_missing_device_and_a_deployable_configuration(tiny_run, tmp_path):
    videos = tiny_run.results / "synthetic" / "videos"
    res = lus("predict", videos, "--run", tiny_run.results, "--out", tmp_path / "p", "--device", "tpu")
    assert res.returncode == 2 and "'tpu' is not a device" in res.stderr
    res = lus("predict", videos, "--run", tiny_run.results, "--out", tmp_path / "p", "--config-name", "nothing")
    assert res.returncode == 2 and "no configuration named 'nothing'" in res.stderr
    suggested = res.stderr.split("e.g. ", 1)[1].split("'")[1]
    assert "ORACLE" not in suggested and lus("predict", videos, "--run", tiny_run.results, "--out", tmp_path / "q",
                                             "--config-name", suggested).returncode in (0, 3)
