"""End to end: the tiny synthetic config through the real Snakefile, then `lus predict` on its run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from lus_core.metrics import accuracy
from lus_core.runs.export import cnn_input, onnx_session
from lus_core.runs.readme_blocks import block_text
from tests.workflow_helpers import REPO, lus, planned_jobs, run_ok

pytestmark = pytest.mark.slow
POCUS = REPO.parent / "shared" / "data" / "pocus-formats"
LUS = str(Path(sys.executable).with_name("lus"))


def test_report_and_matrix_exist_and_match_predictions(tiny_run):
    results, _ = tiny_run
    html = (results / "report" / "index.html").read_text()
    assert "<table" in html and "data:image/png;base64" in html
    matrix = pd.read_csv(results / "eval" / "matrix.csv")
    split = json.loads((results / "split.json").read_text())
    with h5py.File(results / "predictions" / "scratch.h5") as f:
        test = f["split"][:].astype(str) == "test"
        patients = set(f["patient"][:].astype(str)[test])
        cnn_acc = accuracy(f["label"][:][test], f["softmax"][:][test].argmax(1))
    assert patients == set(split["test_patients"])
    cnn_row = matrix[matrix.row_type == "cnn"].iloc[0]
    assert cnn_row.accuracy == pytest.approx(cnn_acc)
    # every configuration of the tiny config is in the matrix: 2 backbones x 5 methods x 3 spaces x 1 k x 2 modes
    assert (matrix.row_type == "combined").sum() == 2 * 5 * 3 * 1 * 2
    summary = json.loads((results / "eval" / "summary.json").read_text())
    sel = summary["selected"]
    assert sel["criterion"] == "qwk" and "training patients" in sel["chosen_on"]
    assert matrix.loc[matrix.selected, "config_id"].tolist() == [sel["config_id"]]
    assert sel["validation_score"] == pytest.approx(matrix.loc[matrix.selected, "val_qwk"].item())
    assert summary["winners_curse"]["gap"] >= 0
    assert all("augrc" in r for r in summary["confidence_methods"])
    assert pd.read_csv(results / "confidence" / "scratch" / "metrics.csv").columns[2] == "augrc"
    assert html.index("The selected configuration") < html.index("All configurations")
    cams = json.loads((results / "gradcam" / "index.json").read_text())
    galleries = json.loads((results / "eval" / "summary.json").read_text())["galleries"]
    assert [c["gallery"] for c in cams] == [g["file"] for g in galleries]
    assert html.count('alt="Grad-CAM, test frame') == len(cams)


def test_the_run_trains_and_reports_the_auxiliary_findings(tiny_run):
    """configs/tiny.yaml names the synthetic labels' A-line and B-line flags as findings: they
    reach the predictions, the summary's AUROC table (frame and video level) and the report."""
    results, _ = tiny_run
    with h5py.File(results / "predictions" / "scratch.h5") as f:
        assert json.loads(f.attrs["finding_names"]) == ["a_lines", "b_lines"]
        probs, labels = f["findings"][()], f["finding_labels"][()]
    assert probs.shape == labels.shape and set(np.unique(labels)) <= {-1, 0, 1}
    summary = json.loads((results / "eval" / "summary.json").read_text())
    rows = {(r["finding"], r["level"]): r for r in summary["findings"]}
    assert set(rows) == {(f, lvl) for f in ("a_lines", "b_lines") for lvl in ("frame", "video")}
    assert rows[("b_lines", "frame")]["n_test"] > 0
    html = (results / "report" / "index.html").read_text()
    assert "Auxiliary findings" in html and "b_lines" in html


def test_the_frozen_encoder_embeds_every_video_once_and_trains_its_head_from_the_cache(tiny_run):
    """configs/tiny.yaml's frozen efficientnet_lite0: every video embedded once (one file per video,
    train.embedding_jobs jobs), nothing for the backbone that trains end to end, and its output
    layer trained on the cached features."""
    results, _ = tiny_run
    n_videos = len(list((results / "frames").glob("*.h5")))
    assert len(list((results / "embeddings" / "efficientnet_lite0").glob("*.h5"))) == n_videos
    assert len(list((results / "benchmarks" / "embed" / "efficientnet_lite0").glob("*.tsv"))) == 3
    assert not (results / "embeddings" / "scratch").exists()
    import torch

    meta = torch.load(results / "models/efficientnet_lite0/all.pt", weights_only=True)
    assert meta["trained_from"] == "embedding_cache" and meta["loss"] == "sord"
    assert torch.load(results / "models/scratch/all.pt", weights_only=True)["trained_from"] == "frames"


def test_second_run_runs_nothing(tiny_run):
    _, args = tiny_run
    assert planned_jobs(*args) == {}


def test_a_full_run_records_its_wall_time(tiny_run):
    results, _ = tiny_run
    record = json.loads((results / "logs" / "full_run.json").read_text())
    n_benchmarks = len(list((results / "benchmarks").rglob("*.tsv")))
    assert record["full"] and record["jobs_run"] == n_benchmarks and record["cores"] == 2
    assert 0 < record["job_seconds"] and 0 < record["wall_seconds"]
    assert sum(r["jobs"] for r in record["per_rule"].values()) == n_benchmarks


def test_changing_epochs_reruns_training_not_extraction(tiny_run, tmp_path):
    more_epochs = tmp_path / "epochs.yaml"
    more_epochs.write_text("train: {epochs: 2}\n")
    jobs = planned_jobs(*tiny_run.with_configs(str(more_epochs)))
    # scratch's 2 folds and all, the frozen encoder's output layers in one job; its embeddings are not made again
    assert jobs.get("train") == 3 and jobs.get("train_heads") == 1 and "embed" not in jobs
    assert "extract_frames" not in jobs and "balance_split" not in jobs
    assert {"infer", "fit_confidence", "evaluate", "report"} <= set(jobs)


def test_no_test_patient_in_training_confidence_or_index(tiny_run):
    results, _ = tiny_run
    split = json.loads((results / "split.json").read_text())
    test = set(split["test_patients"])
    for fold in split["folds"]:
        assert not test & (set(fold["train_patients"]) | set(fold["val_patients"]))
    for ids in (results / "index" / "scratch").glob("*.ids.csv"):
        assert not test & set(pd.read_csv(ids, dtype={"patient": str}).patient)


def _test_video(results: Path) -> tuple[str, Path]:
    split = json.loads((results / "split.json").read_text())
    index = pd.read_csv(results / "frame_index.csv", dtype={"patient": str})
    video = sorted(index[index.patient == split["test_patients"][0]].video.unique())[0]
    return video, results / "synthetic" / "videos" / f"{video}.mp4"


def test_predict_writes_the_video_scores_the_run_evaluated(tiny_run, tmp_path):
    """A test video's learned (attention) and confident-mean scores from `lus predict` equal the
    ones the workflow's video table holds for it (the same frames, model and softmax)."""
    results, _ = tiny_run
    video, path = _test_video(results)
    out = tmp_path / "video"
    run = subprocess.run([LUS, "predict", str(path), "--run", str(results), "--out", str(out),
                          "--config-name", "scratch · CNN alone", "--no-galleries"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    got = json.loads((out / "summary.json").read_text())["videos"][path.stem]
    row = pd.read_csv(results / "video" / "scratch.csv", dtype={"video": str}).set_index("video").loc[video]
    assert row["split"] == "test"
    np.testing.assert_allclose([got["p_attention"][str(c)] for c in range(4)], [row[f"p_{c}"] for c in range(4)],
                               atol=2e-3)
    assert got["score_attention"] == int(row["attention"]) and got["score_confident_mean"] == int(row["confident_mean"])


def test_predict_reproduces_stored_predictions(tiny_run, tmp_path):
    results, _ = tiny_run
    video, path = _test_video(results)
    out = tmp_path / "pred"
    proc = lus("predict", str(path), "--run", str(results), "--out", str(out),
                           "--config-name", "scratch · CNN alone")
    assert proc.returncode == 0, proc.stderr
    frames = pd.read_csv(out / "frames.csv")
    with h5py.File(results / "predictions" / "scratch.h5") as f:
        rows = f["video"][:].astype(str) == video
        stored = f["softmax"][:][rows]
        findings = f["findings"][:][rows]
    np.testing.assert_allclose(frames[[f"p_{c}" for c in range(4)]].to_numpy(), stored, atol=1e-5)
    np.testing.assert_allclose(frames[["p_finding_a_lines", "p_finding_b_lines"]].to_numpy(), findings, atol=1e-5)


def test_predict_best_configuration_writes_galleries(tiny_run, tmp_path):
    results, _ = tiny_run
    _, path = _test_video(results)
    out = tmp_path / "pred"
    run = lus("predict", str(path), "--run", str(results), "--out", str(out), "--gradcam")
    assert run.returncode == 0, run.stderr
    frames = pd.read_csv(out / "frames.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert set(frames.final_score) <= {0, 1, 2, 3}
    assert summary["videos"][path.stem]["n_frames"] == len(frames)
    selected = json.loads((results / "eval" / "summary.json").read_text())["selected"]
    assert summary["configuration"]["config_id"] == selected["config_id"]  # the default is the selected one
    untrusted = (~frames.trusted).sum()
    if summary["configuration"]["row_type"] != "cnn" and untrusted:  # one gallery per video
        assert [p.name for p in (out / "galleries").glob("*.png")] == [f"{path.stem}.png"]
        assert summary["videos"][path.stem]["gallery"] == f"galleries/{path.stem}.png"


def test_predict_galleries_can_be_capped_or_switched_off_and_show_one_neighbour_per_video(tiny_run, tmp_path):
    import cv2

    from lus_core.runs.predict import Predictor, choose_configuration, gallery_frames
    from lus_core.runs.reader import FinishedRun

    results, _ = tiny_run
    _, path = _test_video(results)
    name = "scratch · fallback only · embedding · k=3 · mean"  # every frame untrusted: a row each
    heights = {}
    for rows in (2, 4):
        out = tmp_path / f"rows{rows}"
        run = lus("predict", str(path), "--run", str(results), "--out", str(out),
                              "--config-name", name, "--max-gallery-rows", str(rows))
        assert run.returncode == 0, run.stderr
        heights[rows] = cv2.imread(str(out / "galleries" / f"{path.stem}.png")).shape[0]
    assert heights[4] > heights[2] + 100
    out = tmp_path / "cam"  # --gradcam: the same rows, one tile wider (where the CNN looked)
    run = lus("predict", str(path), "--run", str(results), "--out", str(out), "--config-name", name,
                          "--max-gallery-rows", "4", "--gradcam")
    assert run.returncode == 0, run.stderr
    cam = cv2.imread(str(out / "galleries" / f"{path.stem}.png"))
    plain = cv2.imread(str(tmp_path / "rows4" / "galleries" / f"{path.stem}.png"))
    assert cam.shape[1] > plain.shape[1]  # a Grad-CAM tile in every row
    out = tmp_path / "none"
    run = lus("predict", str(path), "--run", str(results), "--out", str(out),
                          "--config-name", name, "--no-galleries")
    assert run.returncode == 0, run.stderr
    assert (out / "frames.csv").exists() and not (out / "galleries").exists()

    run = FinishedRun(results)
    predictor = Predictor(run, choose_configuration(run, name), "cpu")
    assert predictor.gallery_diversity == "video" and predictor.choice.diversity == "none"
    res = predictor.score(predictor.load_video(path).frames)
    shown = gallery_frames(res, 8)
    ids, _, _ = predictor.gallery_neighbors(res, shown)
    video_of = predictor.frame_index.set_index("frame_id")["video"]
    def videos(rows):
        return [video_of.loc[r[r >= 0]].tolist() for r in rows]
    assert len(shown) == 8 and all(len(v) == 3 and len(set(v)) == 3 for v in videos(ids))
    assert any(len(set(v)) < len(v) for v in videos(res["neighbors"][shown]))  # the plain list repeats videos


def test_videos_scored_in_one_batch_equal_videos_scored_one_by_one(tiny_run):
    """`lus predict` places the untrusted frames of several videos on the t-SNE map in one call;
    a frame's place, neighbours and fallback do not depend on the other videos of its batch."""
    from lus_core.runs.predict import Predictor, choose_configuration
    from lus_core.runs.reader import FinishedRun

    results, _ = tiny_run
    name = "scratch · fallback only · tsne · k=3 · mean"  # every frame untrusted, placed on the map
    run = FinishedRun(results)
    predictor = Predictor(run, choose_configuration(run, name), "cpu")
    paths = sorted((results / "synthetic" / "videos").iterdir())[:3]
    videos = [predictor.load_video(p).frames for p in paths]
    together = predictor.score_videos(videos)
    for frames, batched in zip(videos, together, strict=True):
        alone = predictor.score(frames)
        assert len(alone["asked"]) == len(frames)
        np.testing.assert_array_equal(batched["vectors"], alone["vectors"])
        for key in ("neighbors", "fallback", "final"):
            np.testing.assert_array_equal(batched[key], alone[key])


@pytest.mark.skipif(not POCUS.exists(), reason="../shared/data not present")
def test_predict_on_a_real_pocus_video(tiny_run, tmp_path):
    results, _ = tiny_run
    out = tmp_path / "pocus"
    video = POCUS / "videos" / "Cov-Atlas-Day+2.gif"
    run = lus("predict", str(video), "--run", str(results), "--out", str(out),
                          "--config-name", "scratch · fallback only · embedding · k=3 · mean")
    assert run.returncode == 0, run.stderr
    frames = pd.read_csv(out / "frames.csv")
    assert len(frames) > 10 and frames.final_score.isin([0, 1, 2, 3]).all()
    assert len(list((out / "galleries").glob("*.png"))) >= 1


@pytest.mark.parametrize("problem", ["unreadable", "incomplete_run", "tampered", "unknown_config"])
def test_predict_bad_input(tiny_run, tmp_path, problem):
    results, _ = tiny_run
    _, video = _test_video(results)
    run_dir = results
    config_name = "selected"
    if problem == "unreadable":
        video = tmp_path / "broken.mp4"
        video.write_bytes(b"\x00" * 100)
    elif problem == "incomplete_run":
        run_dir = tmp_path / "run"
        (run_dir / "eval").mkdir(parents=True)
        (run_dir / "eval" / "summary.json").write_text((results / "eval" / "summary.json").read_text())
    elif problem == "tampered":
        import shutil

        run_dir = tmp_path / "run"
        shutil.copytree(results, run_dir)
        with open(run_dir / "models" / "scratch" / "all.pt", "ab") as f:
            f.write(b"x")
        config_name = "scratch · CNN alone"
    elif problem == "unknown_config":
        config_name = "resnet50 · magic"
    out = tmp_path / "out"
    run = lus("predict", str(video), "--run", str(run_dir), "--out", str(out),
                          "--config-name", config_name)
    expected = {"unreadable": "broken.mp4", "incomplete_run": "manifest.json", "tampered": "checksum",
                "unknown_config": "no configuration named"}[problem]
    assert expected in run.stderr
    if problem == "unreadable":  # a video that cannot be used is listed, the command says some failed
        assert run.returncode == 3 and list(json.loads((out / "summary.json").read_text())["failed"]) == ["broken"]
        return
    assert run.returncode == 2 and "error" in run.stderr  # the run folder: nothing can be scored
    assert not out.exists()


def test_snakemake_report_has_the_figures(tiny_run, tmp_path):
    _, args = tiny_run
    out = tmp_path / "report.html"
    run_ok("--report", str(out), *args, timeout=600)
    assert out.stat().st_size > 100_000


def test_summarize_writes_markdown_results(tiny_run, tmp_path):
    results, _ = tiny_run
    out = tmp_path / "results.md"
    # --recipes with the run itself: the section is built from the run's files (same split by construction)
    proc = lus("summarize", str(results), "--out", str(out), "--title", "Tiny", "--recipes", str(results))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "# Tiny" in text and "scratch · CNN alone" in text and "Video level" in text
    assert (tmp_path / "results-figures" / "forest_accuracy.png").exists()
    assert "## The selected configuration" in text and "| method | AUGRC |" in text
    assert "## Recipes" in text and f"scratch @ {results.name}" in text and f"efficientnet_lite0 @ {results.name}" in text
    # one recipe chosen (the run is given twice here, as the run and as a recipe run: its rows twice)
    assert len(set(re.findall(r"^\| (\S+ @ \S+) \(chosen\) \|", text, re.M))) == 1
    assert "The last full run of this results folder took" in text
    assert "Grad-CAM, test frame" in text and any((tmp_path / "results-figures").glob("gradcam_*.png"))
    assert "## Auxiliary findings" in text and "| scratch | b_lines | video |" in text
    assert "auxiliary findings a_lines, b_lines" in text  # the recipe says what it trained


def test_summarize_rewrites_the_readme_block_from_the_run(tiny_run, tmp_path):
    from lus_core.runs.markdown import BLOCK, default_run_block

    results, _ = tiny_run
    readme = tmp_path / "README.md"
    readme.write_text("intro 1.0\n<!-- BEGIN default-run (generated by: lus summarize) -->\nold\n"
                      "<!-- END default-run -->\noutro 2.0\n")
    proc = lus("summarize", str(results), "--readme", str(readme), "--images", str(tmp_path / "img"))
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert text.startswith("intro 1.0\n<!-- BEGIN") and text.endswith("<!-- END default-run -->\noutro 2.0\n")
    assert block_text(text, BLOCK) == default_run_block(results)
    selected = json.loads((results / "eval" / "summary.json").read_text())["selected"]["config_id"]
    assert f"**{selected}**" in text
    assert (tmp_path / "img" / "risk_coverage_scratch.png").exists()


def _predict(*args):
    return lus("predict", *map(str, args))


def test_predict_keeps_a_users_files_in_out(tiny_run, tmp_path):
    results, _ = tiny_run
    _, video = _test_video(results)
    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "mine" / "draft.md").write_text("draft")
    refused = _predict(video, "--run", results, "--out", out, "--config-name", "scratch · CNN alone")
    assert refused.returncode != 0 and "not empty" in refused.stderr and "--overwrite" in refused.stderr
    assert not (out / "frames.csv").exists()
    with_overwrite = _predict(video, "--run", results, "--out", out, "--config-name", "scratch · CNN alone",
                              "--overwrite")
    # a folder that lus predict never wrote into is not replaced, even with --overwrite
    assert with_overwrite.returncode != 0 and ".lus_predict.json" in with_overwrite.stderr
    fresh = tmp_path / "fresh"
    for _ in range(2):  # the second run replaces only what the first wrote
        run = _predict(video, "--run", results, "--out", fresh, "--config-name", "scratch · CNN alone", "--overwrite")
        assert run.returncode == 0, run.stderr
        (fresh / "notes.txt").write_text("my notes")
    assert (fresh / "frames.csv").exists() and (fresh / "notes.txt").read_text() == "my notes"
    assert (out / "notes.txt").read_text() == "my notes" and (out / "mine" / "draft.md").read_text() == "draft"


def test_predict_refuses_the_input_folder_as_out(tiny_run, tmp_path):
    results, _ = tiny_run
    _, video = _test_video(results)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / video.name).write_bytes(video.read_bytes())
    run = _predict(videos, "--run", results, "--out", videos, "--overwrite")
    assert run.returncode != 0 and "input" in run.stderr
    assert sorted(p.name for p in videos.iterdir()) == [video.name]


def test_predict_refuses_a_tampered_frame_store(tiny_run, tmp_path):
    import shutil

    results, _ = tiny_run
    _, video = _test_video(results)
    run_dir = tmp_path / "run"
    shutil.copytree(results, run_dir)
    store = sorted((run_dir / "frames").glob("*.h5"))[0]
    store.write_bytes(b"\x00" * store.stat().st_size)
    run = _predict(video, "--run", run_dir, "--out", tmp_path / "out", "--config-name", "scratch · CNN alone")
    assert run.returncode != 0 and store.name in run.stderr and "checksum" in run.stderr


def test_an_ensemble_run_scores_test_videos_like_lus_predict(tiny_run, tmp_path):
    """train.ensemble: folds reruns inference and what follows it, not training (the fold models
    exist), and `lus predict` scores a test video with the same ensemble as the workflow did."""
    overlay = tmp_path / "ensemble.yaml"
    overlay.write_text("train: {ensemble: folds}\n")
    jobs = planned_jobs(*tiny_run.with_configs(str(overlay)))
    assert "infer" in jobs and not {"train", "train_heads", "embed", "extract_frames"} & set(jobs)
    run = tiny_run.copy(tmp_path / "run")
    run_ok("--cores", "2", *run.with_configs(str(overlay)), timeout=1500)
    video, path = _test_video(run.results)
    out = tmp_path / "pred"
    proc = lus("predict", str(path), "--run", str(run.results), "--out", str(out), "--config-name", "scratch · CNN alone")
    assert proc.returncode == 0, proc.stderr
    frames = pd.read_csv(out / "frames.csv")
    with h5py.File(run.results / "predictions" / "scratch.h5") as f, \
            h5py.File(tiny_run.results / "predictions" / "scratch.h5") as single:
        assert json.loads(f.attrs["test_scored_by"]) == ["all", "0", "1"]
        rows = f["video"][:].astype(str) == video
        stored, alone = f["softmax"][:][rows], single["softmax"][:][rows]
        findings = f["findings"][:][rows]
    assert not np.allclose(stored, alone, atol=1e-4)  # the fold models took part
    np.testing.assert_allclose(frames[[f"p_{c}" for c in range(4)]].to_numpy(), stored, atol=1e-5)
    np.testing.assert_allclose(frames[["p_finding_a_lines", "p_finding_b_lines"]].to_numpy(), findings, atol=1e-5)
    # the ONNX export holds the same ensemble: its softmax is lus predict's on the video's stored frames
    export = lus("export", "--run", str(run.results), "--out", str(tmp_path / "onnx"), "--config-name", "scratch · CNN alone")
    assert export.returncode == 0, export.stderr
    contract = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert contract["model"]["ensemble"]["members"] == ["all", "0", "1"] and contract["parity"]["same_class"]
    with h5py.File(run.results / "predictions" / "scratch.h5") as f:
        frame_ids = f["frame_id"][:][rows]
    index = pd.read_csv(run.results / "frame_index.csv").set_index("frame_id").loc[frame_ids]
    with h5py.File(run.results / "frames" / f"{video}.h5") as f:
        stored_frames = f["frames"][()][index["row"].to_numpy()]
    size = contract["input"]["shape"][-1]
    onnx_softmax = onnx_session(tmp_path / "onnx" / "model.onnx").run(None, {"frames": cnn_input(stored_frames, size)})[1]
    np.testing.assert_allclose(onnx_softmax, stored, atol=1e-4)  # the workflow's ensemble, not the all model alone
