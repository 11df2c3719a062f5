"""Auxiliary findings (A-lines, B-lines, ...): from the labels table to the frame index, the loss,
the trained heads, the predictions file and their AUROC with patient intervals."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_frames import make_frame_store, make_split, small_config
from sklearn.metrics import roc_auc_score

from lus_core.cnn.infer import predict_index, run_infer
from lus_core.cnn.losses import ScoreAndFindingsLoss, make_criterion
from lus_core.cnn.model_file import load_model
from lus_core.cnn.predictions import Predictions, read_predictions, write_predictions
from lus_core.cnn.train import run_train
from lus_core.confidence.failure_metrics import failure_auroc
from lus_core.config import validate_config
from lus_core.evaluation.findings import auroc_with_interval, findings_table, weighted_auroc
from lus_core.frames.extract import extract_video, run_frame_index
from lus_core.frames.labels import DatasetError, build_video_table
from lus_core.frames.store import read_frame_index
from lus_core.metrics import patient_resample_counts
from tests.video_helpers import fan_frames, write_video

BLUES = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-blues"
FINDINGS = {"a_lines": "A lines", "b_lines": "B lines"}


def _config(vids, labels, **dataset):
    return validate_config({"dataset": {"video_dirs": [str(vids)], "labels": str(labels), **dataset},
                            "frames": {"size": 32}})


@pytest.fixture
def videos(tmp_path):
    vids = tmp_path / "vids"
    write_video(vids / "patient_A_1.mp4", fan_frames(8, seed=1))
    write_video(vids / "patient_B_1.mp4", fan_frames(6, seed=2))
    return vids


def _labels(tmp_path, rows: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text("video,score,start_frame,end_frame,A lines,B lines\n" + rows)
    return path


def test_findings_go_from_label_cells_to_every_frame_of_their_range(videos, tmp_path):
    # spaces and case as real tables have them (COVID-BLUES writes "yes " on some rows); empty is unknown
    labels = _labels(tmp_path, "patient_A_1.mp4,0,0,3, Yes,no \npatient_A_1.mp4,2,4,,NO,yes \npatient_B_1,3,,,,TRUE\n")
    cfg = _config(videos, labels, findings=FINDINGS)
    stores = []
    for entry in build_video_table(cfg["dataset"], cfg["classes"]):
        stores.append(tmp_path / "frames" / f"{entry.video}.h5")
        extract_video(entry, stores[-1], cfg)
    index = run_frame_index(stores, tmp_path / "index.csv", tmp_path / "frames.h5", tmp_path / "skipped.csv", cfg)
    a = index[index.video == "patient_A_1"].sort_values("frame")
    assert list(a.finding_a_lines) == [1] * 4 + [0] * 4 and list(a.finding_b_lines) == [0] * 4 + [1] * 4
    b = index[index.video == "patient_B_1"]
    assert set(b.finding_a_lines) == {-1} and set(b.finding_b_lines) == {1}
    pd.testing.assert_frame_equal(read_frame_index(tmp_path / "index.csv"), index, check_dtype=False)
    with h5py.File(stores[0]) as f:
        assert f["findings"].dtype == np.int8 and f["findings"].shape == (8, 2)


def test_without_findings_nothing_changes_in_the_store_or_index(videos, tmp_path):
    labels = _labels(tmp_path, "patient_A_1.mp4,0,,,yes,no\npatient_B_1,3,,,no,no\n")
    cfg = _config(videos, labels)
    entry = build_video_table(cfg["dataset"], cfg["classes"])[0]
    extract_video(entry, tmp_path / "a.h5", cfg)
    with h5py.File(tmp_path / "a.h5") as f:
        assert "findings" not in f and "finding_names" not in f.attrs
    index = run_frame_index([tmp_path / "a.h5"], tmp_path / "i.csv", tmp_path / "f.h5", tmp_path / "s.csv", cfg)
    assert not [c for c in index.columns if c.startswith("finding_")]


@pytest.mark.parametrize("cell, message", [("maybe", "row 3 (video patient_B_1.mp4) column 'B lines': finding value 'maybe'"),
                                           ("2", "is not yes/no")])
def test_a_finding_value_that_is_not_yes_no_names_the_file_row_and_column(videos, tmp_path, cell, message):
    labels = _labels(tmp_path, f"patient_A_1.mp4,0,,,yes,no\npatient_B_1,3,,,no,{cell}\n")
    cfg = _config(videos, labels, findings=FINDINGS)
    with pytest.raises(DatasetError, match="labels.csv") as err:
        build_video_table(cfg["dataset"], cfg["classes"])
    assert message in str(err.value)


def test_a_missing_finding_column_and_a_bad_finding_name_are_refused(videos, tmp_path):
    labels = _labels(tmp_path, "patient_A_1.mp4,0,,,yes,no\npatient_B_1,3,,,no,no\n")
    cfg = _config(videos, labels, findings={"pleura": "Pleura"})
    with pytest.raises(DatasetError, match=r"labels.csv: missing column 'Pleura' \(dataset.findings.pleura\)"):
        build_video_table(cfg["dataset"], cfg["classes"])
    with pytest.raises(Exception, match="findings"):
        _config(videos, labels, findings={"B lines": "B lines"})  # names become column names


@pytest.mark.skipif(not BLUES.exists(), reason="../shared/data not present")
def test_covid_blues_flags_reach_the_frame_index_with_their_trailing_spaces_stripped(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    table = pd.read_csv(BLUES / "severity.csv", dtype=str)
    padded = table[table["B-lines"].str.endswith(" ")]["video_file"]
    assert len(padded)  # the real table has "yes " / "no " cells
    picked = sorted(set(padded.str.extract(r"patient_(\d+)_")[0]))[:1]
    for src in sorted((BLUES / "lus_videos").glob(f"patient_{picked[0]}_*.mp4")):
        (videos / src.name).symlink_to(src)
    cfg = validate_config({"dataset": {"video_dirs": [str(videos)], "labels": str(BLUES / "severity.csv"),
                                       "label_columns": {"video": "video_file", "score": "Severity Score"},
                                       "patient_regex": r"patient_(\d+)_",
                                       "findings": {"a_lines": "A-lines", "b_lines": "B-lines"}},
                           "frames": {"size": 32, "stride": 8}})
    stores = []
    for entry in build_video_table(cfg["dataset"], cfg["classes"]):
        stores.append(tmp_path / "frames" / f"{entry.video}.h5")
        extract_video(entry, stores[-1], cfg)
    index = run_frame_index(stores, tmp_path / "i.csv", tmp_path / "f.h5", tmp_path / "s.csv", cfg)
    expected = table.set_index("video_file")
    for video, rows in index.groupby("video"):
        for name, column in (("a_lines", "A-lines"), ("b_lines", "B-lines")):
            assert set(rows[f"finding_{name}"]) == {int(expected.loc[video, column].strip() == "yes")}


# --- the loss ------------------------------------------------------------------------------------


def test_the_findings_loss_adds_the_weighted_bce_of_known_findings_only():
    torch.manual_seed(0)
    outputs = torch.randn(6, 4 + 2, requires_grad=True)
    targets = torch.tensor([[0, 1, 0], [1, -1, 1], [2, 0, -1], [3, 1, 1], [1, -1, -1], [2, 0, 0]])
    score_loss = make_criterion({"loss": "sord", "sord_alpha": 1.0}, 4)
    loss = ScoreAndFindingsLoss(score_loss, 4, weight=0.7)(outputs, targets)
    known = targets[:, 1:] >= 0
    p = torch.sigmoid(outputs[:, 4:].detach())[known].numpy().astype(np.float64)
    y = targets[:, 1:][known].numpy()
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))  # written out, not torch's BCE
    expected = float(score_loss(outputs.detach()[:, :4], targets[:, 0])) + 0.7 * bce
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.all(outputs.grad[:, 4:][~known] == 0) and torch.all(outputs.grad[:, 4:][known] != 0)
    # no known finding in the batch: the score loss alone
    unknown = targets.clone()
    unknown[:, 1:] = -1
    alone = ScoreAndFindingsLoss(score_loss, 4, 0.7)(outputs.detach(), unknown)
    assert float(alone) == pytest.approx(float(score_loss(outputs.detach()[:, :4], targets[:, 0])))


# --- AUROC and its interval ----------------------------------------------------------------------


def test_weighted_auroc_equals_scikit_learn_with_sample_weights_and_ties():
    rng = np.random.default_rng(3)
    score = rng.integers(0, 6, 200) / 5.0  # many ties
    positive = rng.uniform(size=200) < 0.3 + 0.5 * score
    weights = rng.integers(0, 4, size=(5, 200))
    got = weighted_auroc(score, positive, weights)
    for w, g in zip(weights, got, strict=True):
        assert g == pytest.approx(roc_auc_score(positive, score, sample_weight=w))
    assert weighted_auroc(score, positive, np.ones(200))[0] == pytest.approx(failure_auroc(score, positive))
    assert np.isnan(weighted_auroc(score, np.zeros(200, bool), np.ones(200))[0])


def test_the_patient_interval_equals_resampling_patients_by_hand():
    rng = np.random.default_rng(4)
    patients = np.repeat([f"p{i}" for i in range(7)], 9)
    score = rng.uniform(size=len(patients))
    positive = rng.uniform(size=len(patients)) < score
    est, lo, hi = auroc_with_interval(score, positive, patients, 300, 0.9, seed=5)
    uniq, codes = np.unique(patients, return_inverse=True)
    by_hand = []
    for row in patient_resample_counts(len(uniq), 300, 5):
        take = np.concatenate([np.flatnonzero(codes == p).repeat(1) for p, k in enumerate(row) for _ in range(k)])
        by_hand.append(roc_auc_score(positive[take], score[take]) if len(set(positive[take])) == 2 else np.nan)
    by_hand = np.array(by_hand)
    assert est == pytest.approx(roc_auc_score(positive, score))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(by_hand[~np.isnan(by_hand)], [0.05, 0.95])))


def test_findings_table_scores_frames_and_videos_on_test_and_out_of_fold_training_patients():
    n = 40
    video = np.repeat([f"v{i}" for i in range(8)], 5)
    patient = np.repeat([f"p{i}" for i in range(4)], 10)
    split = np.where(np.isin(patient, ["p0", "p1"]), "test", "train")
    labels = np.repeat([1, 0, 1, 0, 0, 1, 1, 0], 5)[:, None].astype(np.int8)
    labels[0] = -1  # an unknown frame is left out
    probs = np.where(labels == 1, 0.8, 0.3).astype(np.float32) + np.linspace(0, 0.1, n)[:, None]
    p = Predictions(frame_id=np.arange(n), label=np.zeros(n, int), patient=patient, video=video, split=split,
                    fold=np.zeros(n, int), logits=np.zeros((n, 4)), softmax=np.full((n, 4), 0.25),
                    embedding_oof=np.zeros((n, 2)), embedding_all=np.zeros((n, 2)), findings=probs,
                    finding_labels=labels, attrs={"finding_names": '["b_lines"]'})
    table = findings_table({"scratch": p}, 50, 0.95, 0).set_index("level")
    assert table.loc["frame", "n_test"] == 19 and table.loc["frame", "n_test_positive"] == 9
    assert table.loc["video", "n_test"] == 4 and table.loc["video", "n_test_positive"] == 2
    assert table.loc["frame", "auroc"] == 1.0 and table.loc["video", "val_auroc"] == 1.0


# --- training, inference, predictions file ------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    csv = make_frame_store(root, n_patients=9, frames_per_video=5, size=32, seed=2, findings=True)
    make_split(csv, root / "split.json", n_test=3, k=2, seed=0)
    return root, csv


def _with_findings(config: dict, weight: float = 1.0) -> dict:
    config["dataset"]["findings"] = {"b_lines": "b_lines"}
    config["train"]["findings_weight"] = weight
    return config


def test_a_trained_findings_head_recognises_its_finding_on_held_out_patients(store, tmp_path):
    root, csv = store
    config = _with_findings(small_config(epochs=4, batch_size=16, image_size=32))
    models = {}
    for fold in ("0", "1", "all"):
        models[fold] = tmp_path / f"{fold}.pt"
        run_train(csv, root / "split.json", "scratch", fold, models[fold], tmp_path / f"{fold}.csv",
                  tmp_path / f"{fold}.png", tmp_path / "ck" / fold, config, progress=False)
    model, meta = load_model(models["all"])
    assert meta["finding_names"] == ["b_lines"] and model.finding_names == ["b_lines"]
    plain = small_config(epochs=4, batch_size=16, image_size=32)  # a config without the findings
    with pytest.raises(ValueError, match=r"all.pt: trained with findings \['b_lines'\], the config has \[\]"):
        run_infer(csv, root / "split.json", "scratch", models, tmp_path / "x.h5", plain, progress=False)
    run_infer(csv, root / "split.json", "scratch", models, tmp_path / "pred.h5", config, progress=False)
    p = read_predictions(tmp_path / "pred.h5")
    index = read_frame_index(csv).set_index("frame_id").loc[p.frame_id]
    np.testing.assert_array_equal(p.finding_labels[:, 0], index["finding_b_lines"].to_numpy())
    assert p.finding_names == ["b_lines"] and p.findings.shape == (len(p), 1)
    assert ((p.findings >= 0) & (p.findings <= 1)).all()
    # the stored probabilities are the `all` model's on test frames
    test = p.split == "test"
    _, _, emb = predict_index(model, index.reset_index()[test], meta["image_size"])
    expected = torch.sigmoid(model.findings_head(torch.from_numpy(emb))).detach().numpy()
    np.testing.assert_allclose(p.findings[test], expected, atol=1e-5)
    known = p.finding_labels[:, 0] >= 0
    auroc = failure_auroc(p.findings[known, 0], p.finding_labels[known, 0] == 1)
    print(f"b_lines AUROC over out-of-fold and test frames: {auroc:.3f}")
    assert auroc > 0.8


def test_findings_weight_zero_trains_the_score_exactly_as_without_findings(store, tmp_path):
    """The auxiliary head adds parameters, but at weight 0 neither a gradient nor a random draw
    to what the score uses: the score's weights are bitwise those of a run without findings."""
    root, csv = store
    states = {}
    for name, config in (("plain", small_config(epochs=2, batch_size=16)),
                         ("zero", _with_findings(small_config(epochs=2, batch_size=16), weight=0.0))):
        run_train(csv, root / "split.json", "scratch", "0", tmp_path / f"{name}.pt", tmp_path / f"{name}.csv",
                  tmp_path / f"{name}.png", tmp_path / "ck" / name, config, progress=False)
        states[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)["state_dict"]
    assert set(states["zero"]) - set(states["plain"]) == {"findings_head.weight", "findings_head.bias"}
    for k, v in states["plain"].items():
        assert torch.equal(v, states["zero"][k]), k
    history = [pd.read_csv(tmp_path / f"{n}.csv").drop(columns="seconds") for n in ("plain", "zero")]
    pd.testing.assert_frame_equal(*history)


def test_a_predictions_file_without_findings_reads_as_none(tmp_path):
    n = 3
    p = Predictions(frame_id=np.arange(n), label=np.zeros(n, int), patient=np.array(["a"] * n),
                    video=np.array(["v"] * n), split=np.array(["test"] * n), fold=np.full(n, -1),
                    logits=np.zeros((n, 4)), softmax=np.full((n, 4), 0.25), embedding_oof=np.zeros((n, 2)),
                    embedding_all=np.zeros((n, 2)))
    write_predictions(tmp_path / "p.h5", p)
    with h5py.File(tmp_path / "p.h5") as f:
        assert "findings" not in f
    back = read_predictions(tmp_path / "p.h5")
    assert back.findings.shape == (n, 0) and back.finding_names == [] and findings_table({"x": back}, 10, 0.9, 0).empty


def test_the_video_model_takes_the_finding_probabilities_after_the_frame_features():
    from lus_core.videolevel.model import frame_features

    softmax, embedding = np.full((3, 4), 0.25, np.float32), np.ones((3, 5), np.float32)
    findings = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]], np.float32)
    got = frame_features(softmax, embedding, findings, {"input": "softmax", "use_findings": True, "motion": False})
    np.testing.assert_array_equal(got, np.hstack([softmax, findings]))
    got = frame_features(softmax, embedding, findings, {"input": "embedding", "use_findings": True, "motion": False})
    np.testing.assert_array_equal(got, np.hstack([embedding, findings]))
    assert frame_features(softmax, embedding, findings, {"input": "softmax", "use_findings": False, "motion": False}) is softmax
    assert frame_features(softmax, embedding, findings[:, :0], {"input": "softmax", "use_findings": True, "motion": False}) is softmax
