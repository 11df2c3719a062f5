"""Predictions file: contract, out-of-fold honesty, determinism, and predict_frames."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from fixtures_frames import make_frame_store, make_split, small_config

from lus_core.cnn.infer import predict_frames, run_infer
from lus_core.cnn.model_file import load_model
from lus_core.cnn.train import run_train
from lus_core.frames.store import FrameReader, read_frame_index
from lus_core.io_utils import read_json

torch.set_num_threads(1)
FOLDS = ["0", "1", "2", "all"]


def _train_all(root, run, config):
    paths = {}
    for fold in FOLDS:
        out = root / run / "models" / f"{fold}.pt"
        run_train(
            root / "frame_index.csv", root / "split.json", "scratch", fold, out,
            root / run / f"{fold}.csv", root / run / f"{fold}.png", root / run / "ck" / fold, config, progress=False,
        )
        paths[fold] = out
    return paths


def _read(path):
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f}
        attrs = dict(f.attrs)
    for k in ("patient", "video", "split"):
        data[k] = np.array([s.decode() if isinstance(s, bytes) else s for s in data[k]])
    return data, attrs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    csv = make_frame_store(root, n_patients=8, frames_per_video=4, size=16, seed=2)
    make_split(csv, root / "split.json", n_test=2, k=3, seed=2)
    config = small_config(image_size=16, epochs=1, batch_size=16)
    paths = _train_all(root, "a", config)
    run_infer(csv, root / "split.json", "scratch", paths, root / "a" / "scratch.h5", config, progress=False)
    return root, config, paths


def test_predictions_file_follows_the_contract(run):
    root, config, _ = run
    data, attrs = _read(root / "a" / "scratch.h5")
    index = read_frame_index(root / "frame_index.csv")
    n = len(index)
    assert np.array_equal(data["frame_id"], index["frame_id"].to_numpy()) and data["frame_id"].dtype == np.int64
    assert data["label"].dtype == np.int16 and np.array_equal(data["label"], index["label"].to_numpy())
    assert list(data["patient"]) == list(index["patient"]) and list(data["video"]) == list(index["video"])
    assert set(data["split"]) == {"train", "test"} and data["fold"].dtype == np.int16
    for key, width in (("logits", 4), ("softmax", 4), ("embedding_oof", 128), ("embedding_all", 128)):
        assert data[key].shape == (n, width) and data[key].dtype == np.float32 and np.isfinite(data[key]).all()
    assert np.allclose(data["softmax"].sum(1), 1, atol=1e-5)
    assert np.allclose(data["softmax"], torch.softmax(torch.from_numpy(data["logits"]), 1).numpy(), atol=1e-6)
    assert attrs["backbone"] == "scratch" and json.loads(attrs["classes"]) == [0, 1, 2, 3]
    assert json.loads(attrs["config"])["train"]["image_size"] == 16
    test = data["split"] == "test"  # test frames: the `all` model, whose embedding_all they share
    assert np.array_equal(data["embedding_oof"][test], data["embedding_all"][test])


def test_softmax_is_out_of_fold_and_test_patients_never_train(run):
    root, _, paths = run
    data, _ = _read(root / "a" / "scratch.h5")
    split = read_json(root / "split.json")
    metas = {k: torch.load(p, weights_only=True) for k, p in paths.items()}
    test = set(split["test_patients"])
    for model_key, meta in metas.items():  # every training run records the patients it saw
        assert not (set(meta["train_patients"]) | set(meta["val_patients"])) & test, model_key
    for patient, part, fold in zip(data["patient"], data["split"], data["fold"], strict=True):
        if patient in test:
            assert part == "test" and fold == -1
        else:
            assert part == "train" and 0 <= fold < len(split["folds"])
            assert patient in split["folds"][fold]["val_patients"]
            assert patient not in metas[str(fold)]["train_patients"]


def test_same_seed_and_config_give_the_same_predictions(run):
    root, config, _ = run
    paths = _train_all(root, "b", config)
    run_infer(root / "frame_index.csv", root / "split.json", "scratch", paths, root / "b" / "scratch.h5", config, progress=False)
    a, _ = _read(root / "a" / "scratch.h5")
    b, _ = _read(root / "b" / "scratch.h5")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_predict_frames_matches_the_stored_predictions(run):
    root, _, paths = run
    data, _ = _read(root / "a" / "scratch.h5")
    index = read_frame_index(root / "frame_index.csv")
    rows = np.flatnonzero(data["fold"] == 1)[:5]
    frames = FrameReader(index).frames(rows)
    model, meta = load_model(paths["1"])
    logits, softmax, emb = predict_frames(model, frames, meta["image_size"], "cpu", batch_size=2)
    assert np.allclose(logits, data["logits"][rows], atol=1e-4)
    assert np.allclose(softmax, data["softmax"][rows], atol=1e-5)
    assert np.allclose(emb, data["embedding_oof"][rows], atol=1e-4)


def test_wrong_or_missing_models_are_refused(run, tmp_path):
    root, config, paths = run
    swapped = {**paths, "0": paths["1"], "1": paths["0"]}
    with pytest.raises(ValueError, match="fold"):
        run_infer(root / "frame_index.csv", root / "split.json", "scratch", swapped, tmp_path / "x.h5", config, progress=False)
    missing = {k: v for k, v in paths.items() if k != "2"}
    with pytest.raises(ValueError, match="no model file"):
        run_infer(root / "frame_index.csv", root / "split.json", "scratch", missing, tmp_path / "x.h5", config, progress=False)
    with pytest.raises(ValueError, match="resnet18"):
        run_infer(root / "frame_index.csv", root / "split.json", "resnet18", paths, tmp_path / "x.h5", config, progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_predict_groups_consecutive_videos_up_to_a_frame_budget():
    from lus_core.runs.predict import DecodedFrames, frame_batches

    videos = [(f"v{i}", DecodedFrames(np.zeros((n, 2, 2, 1), np.uint8), np.arange(n), 1.0))
              for i, n in enumerate([3, 4, 2, 9, 1, 1])]
    groups = [[name for name, _ in batch] for batch in frame_batches(iter(videos), 8)]
    assert groups == [["v0", "v1"], ["v2"], ["v3"], ["v4", "v5"]]  # v3 alone exceeds the budget
    assert list(frame_batches(iter([]), 8)) == []


def test_an_ensemble_scores_test_frames_by_the_mean_softmax_of_the_all_and_fold_models(run, tmp_path):
    root, config, paths = run
    ensemble = {**config, "train": {**config["train"], "ensemble": "folds"}}
    run_infer(root / "frame_index.csv", root / "split.json", "scratch", paths, tmp_path / "e.h5", ensemble, progress=False)
    single, _ = _read(root / "a" / "scratch.h5")
    got, attrs = _read(tmp_path / "e.h5")
    test = got["split"] == "test"
    assert json.loads(attrs["test_scored_by"]) == ["all", "0", "1", "2"]
    # training frames: their one out-of-fold model, as without the ensemble
    for key in ("logits", "softmax", "embedding_oof", "embedding_all"):
        assert np.array_equal(got[key][~test], single[key][~test]), key
    assert np.array_equal(got["embedding_oof"][test], single["embedding_oof"][test])  # the `all` model's
    # test frames: each model run on the frames directly, their softmax averaged here
    frames = FrameReader(read_frame_index(root / "frame_index.csv")).frames(np.flatnonzero(test))
    each = [predict_frames(load_model(paths[k])[0], frames, 16, "cpu")[1] for k in FOLDS]
    mean = np.mean(np.stack(each).astype(np.float64), axis=0)
    np.testing.assert_allclose(got["softmax"][test], mean, atol=1e-5)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(got["logits"][test]), 1).numpy(), mean, atol=1e-5)
    assert not np.allclose(got["softmax"][test], single["softmax"][test], atol=1e-4)  # the fold models took part
