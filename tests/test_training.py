"""Augmentation, the frame dataset and training: learning, resuming, patients, class balance."""

from __future__ import annotations

import math
import pickle
from dataclasses import asdict

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_frames import make_frame_store, make_split, small_config
from torch.utils.data import DataLoader

from lus_core.cnn.augment import Augment, AugmentConfig, affine, gaussian_blur
from lus_core.cnn.frame_dataset import FrameDataset, StoreReader, frames_to_tensor
from lus_core.cnn.infer import predict_index
from lus_core.cnn.loop import TrainingInterrupted
from lus_core.cnn.model_file import load_model
from lus_core.cnn.train import (
    METRIC_COLUMNS,
    class_weights,
    holdout_patients,
    patients_for_fold,
    run_train,
)
from lus_core.frames.store import FrameReader, read_frame_index
from lus_core.io_utils import read_json

torch.set_num_threads(1)
NO_AUGMENT = asdict(AugmentConfig.none())


# --------------------------------------------------------------------------- augmentation


def _batch(n=4, size=24, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_augment_with_zero_probabilities_is_identity():
    x = _batch()
    out = Augment(small_config()["train"]["augment"] | {"p_affine": 0, "p_multiply": 0, "p_blur": 0, "p_hflip": 0})(
        x, torch.Generator().manual_seed(0)
    )
    assert torch.equal(out, x)


def test_augment_is_deterministic_in_its_generator_and_stays_in_range():
    aug = Augment({**small_config()["train"]["augment"], "p_affine": 1, "p_multiply": 1, "p_blur": 1, "p_hflip": 0.5})
    x = _batch(8)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, x)


def test_augment_draws_the_same_amount_whatever_is_applied():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    Augment(NO_AUGMENT | {"p_affine": 0.0})(_batch(), g1)
    Augment(NO_AUGMENT | {"p_affine": 1.0, "rotation": 10, "p_blur": 1.0, "blur_sigma": (0.1, 1.5)})(_batch(), g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_single_transforms_do_what_they_say():
    x = _batch(2, 16)
    flip = Augment(NO_AUGMENT | {"p_hflip": 1.0})(x, torch.Generator().manual_seed(0))
    assert torch.equal(flip, x.flip(-1))
    mul = Augment(NO_AUGMENT | {"p_multiply": 1.0, "multiply": [1.5, 1.5]})(x, torch.Generator().manual_seed(0))
    assert torch.allclose(mul, (x * 1.5).clamp(0, 1))
    one, zero = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    assert torch.allclose(affine(x, zero, zero, zero, one, zero), x, atol=1e-5)
    rot = affine(x, one * 90, zero, zero, one, zero)
    assert min((rot - torch.rot90(x, k, (2, 3))).abs().max() for k in (1, -1)) < 1e-4
    shifted = affine(x, zero, one * 0.25, zero, one, zero)  # a quarter of the width to the right
    assert torch.allclose(shifted[..., 4:], x[..., :-4], atol=1e-5) and shifted[..., :4].abs().max() == 0
    flat = torch.full((2, 3, 16, 16), 0.5)
    assert torch.allclose(gaussian_blur(flat, one * 1.2), flat, atol=1e-6)
    assert gaussian_blur(x, one * 1.2).var() < x.var()


def test_augment_config_is_validated():
    with pytest.raises(ValueError, match="unknown"):
        AugmentConfig.from_dict(NO_AUGMENT | {"p_rotate": 0.5})
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig.from_dict(NO_AUGMENT | {"p_blur": 1.5})
    with pytest.raises(ValueError, match="pair"):
        AugmentConfig.from_dict(NO_AUGMENT | {"scale": 1.1})


# --------------------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 patients x 4 classes x 4 frames of 16 px; 2 test patients, 3 folds."""
    root = tmp_path_factory.mktemp("tiny")
    csv = make_frame_store(root, n_patients=8, frames_per_video=4, size=16, seed=1)
    make_split(csv, root / "split.json", n_test=2, k=3, seed=1)
    return root


def test_grayscale_is_expanded_and_resized_at_load_time(tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 1), dtype=np.uint8)
    x = frames_to_tensor(gray, None)
    assert x.shape == (2, 3, 20, 20) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], x[:, 2]) and torch.equal(x[:, 0], torch.from_numpy(gray[..., 0]))
    assert frames_to_tensor(gray, 12).shape == (2, 3, 12, 12)
    # a colour frame reaches the CNN as its grey image (OpenCV's luminance) in all three channels
    color = np.random.default_rng(1).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    luminance = torch.from_numpy(cv2.cvtColor(color[0], cv2.COLOR_RGB2GRAY))
    assert all(torch.equal(channel, luminance) for channel in frames_to_tensor(color, 8)[0])
    with pytest.raises(ValueError, match="channels"):
        frames_to_tensor(np.zeros((1, 8, 8, 2), np.uint8))


def test_frame_dataset_reads_rows_in_workers_too(tiny):
    index = read_frame_index(tiny / "frame_index.csv")
    ds = FrameDataset(index.iloc[::3], image_size=16)
    x, label, frame_id = ds[1]  # opens files in this process before the workers fork
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8
    assert label == index.iloc[3]["label"] and frame_id == index.iloc[3]["frame_id"]
    serial = [b for b in DataLoader(ds, batch_size=8, num_workers=0)]
    parallel = [b for b in DataLoader(ds, batch_size=8, num_workers=2)]
    for a, b in zip(serial, parallel, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_store_reader_equals_frame_reader_on_any_layout(tiny, tmp_path):
    index = read_frame_index(tiny / "frame_index.csv")
    fast, plain = StoreReader(index), FrameReader(index)
    order = np.random.default_rng(0).permutation(len(index))
    assert all(np.array_equal(fast.frame(i), plain.frame(i)) for i in order)
    # another layout (uncompressed, 3 channels): the plain h5py read
    frames = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("frames", data=frames, chunks=(1, 8, 8, 3))
    other = pd.DataFrame({"h5": [str(tmp_path / "v.h5")] * 3, "row": [2, 0, 1]})
    reader = StoreReader(other)
    assert all(np.array_equal(reader.frame(i), frames[r]) for _ in range(2) for i, r in enumerate([2, 0, 1]))
    assert pickle.loads(pickle.dumps(reader)).frame(0).shape == (8, 8, 3)


# --------------------------------------------------------------------------- patients


def test_fold_patients_and_the_all_holdout(tiny):
    index = read_frame_index(tiny / "frame_index.csv")
    split = read_json(tiny / "split.json")
    test = set(split["test_patients"])
    for f in split["folds"]:
        train, val, holdout = patients_for_fold(split, str(f["fold"]), index, 0)
        assert train == f["train_patients"] and val == f["val_patients"] and not holdout
    train, val, holdout = patients_for_fold(split, "all", index, 3)
    assert holdout and val and not set(train) & set(val)
    assert set(train) | set(val) == set(split["train_patients"]) and not (set(train) | set(val)) & test
    assert holdout_patients(index, split["train_patients"], 3, 3) == val  # deterministic
    leaky = {**split, "folds": [{**split["folds"][0], "train_patients": split["folds"][0]["train_patients"] + sorted(test)[:1]}]}
    with pytest.raises(ValueError, match="test patients"):
        patients_for_fold(leaky, "0", index, 0)
    with pytest.raises(ValueError, match="not in split"):
        patients_for_fold(split, "7", index, 0)


def test_class_weights_are_inverse_frequency():
    w = class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    assert torch.allclose(w, torch.tensor([6 / 9, 2.0, 1.0, 0.0]))


# --------------------------------------------------------------------------- training


def _train(root, backbone, fold, config, name=None, **kw):
    name = name or f"{backbone}_{fold}"
    summary = run_train(
        root / "frame_index.csv", root / "split.json", backbone, fold,
        root / f"{name}.pt", root / f"{name}.csv", root / f"{name}.png", root / "ck" / name,
        config, progress=False, **kw,
    )
    return summary, root / f"{name}.pt"


@pytest.fixture(scope="module")
def learn(tmp_path_factory):
    """12 patients x 4 classes x 6 frames of 32 px: 3 test patients, 3 folds of 3."""
    root = tmp_path_factory.mktemp("learn")
    csv = make_frame_store(root, n_patients=12, frames_per_video=6, size=32, seed=0)
    make_split(csv, root / "split.json", n_test=3, k=3, seed=0)
    return root


def _held_out_accuracy(root, model_path):
    model, meta = load_model(model_path)
    index = read_frame_index(root / "frame_index.csv")
    held = index[index["patient"].isin(meta["val_patients"])]
    _, softmax, _ = predict_index(model, held, meta["image_size"])
    return float((softmax.argmax(1) == held["label"].to_numpy()).mean()), meta


@pytest.mark.parametrize(
    "backbone, overrides",
    [
        ("scratch", {"epochs": 3, "batch_size": 16, "image_size": 32}),
        ("resnet18", {"epochs": 4, "batch_size": 8, "image_size": 16}),  # stored 32 px: resized at load time
    ],
)
def test_short_training_learns_on_held_out_patients(learn, backbone, overrides):
    config = small_config(**overrides)
    summary, path = _train(learn, backbone, "0", config)
    acc, meta = _held_out_accuracy(learn, path)
    print(f"{backbone}: held-out frame accuracy {acc:.3f} (chance 0.25), best epoch {meta['best_epoch']}")
    assert acc >= 0.25 + 0.2
    # the outputs and what they record
    split = read_json(learn / "split.json")
    assert meta["train_patients"] == split["folds"][0]["train_patients"]
    assert meta["val_patients"] == split["folds"][0]["val_patients"]
    assert not set(meta["train_patients"]) & set(split["test_patients"])
    assert meta["backbone"] == backbone and meta["classes"] == [0, 1, 2, 3]
    assert meta["image_size"] == overrides["image_size"]
    assert meta["embedding_dim"] in (128, 512) and isinstance(meta["config"], str)
    metrics = pd.read_csv(learn / f"{backbone}_0.csv")
    assert list(metrics.columns) == METRIC_COLUMNS and 1 <= len(metrics) <= overrides["epochs"]
    assert metrics["best"].sum() >= 1 and int(metrics[metrics["best"]]["epoch"].iloc[-1]) == meta["best_epoch"]
    assert (learn / f"{backbone}_0.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((learn / "ck" / f"{backbone}_0").glob("*.pt"))  # checkpoints cleared on success
    assert summary["best_epoch"] == meta["best_epoch"]


def test_resumed_training_equals_an_uninterrupted_run(tiny):
    config = small_config(image_size=16, epochs=3, patience=5, batch_size=16)
    _, straight = _train(tiny, "scratch", "1", config, name="straight")
    with pytest.raises(TrainingInterrupted):
        _train(tiny, "scratch", "1", config, name="resumed", stop_after_epochs=1)
    assert not (tiny / "resumed.pt").exists()
    assert (tiny / "ck" / "resumed" / "last.pt").exists()
    _train(tiny, "scratch", "1", config, name="resumed")
    a = torch.load(straight, weights_only=True)
    b = torch.load(tiny / "resumed.pt", weights_only=True)
    assert a["best_epoch"] == b["best_epoch"] and a["epochs_run"] == b["epochs_run"] == 3
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    ma, mb = (pd.read_csv(tiny / f"{n}.csv").drop(columns="seconds") for n in ("straight", "resumed"))
    pd.testing.assert_frame_equal(ma, mb)


def test_checkpoint_from_other_config_is_not_resumed(tiny):
    config = small_config(image_size=16, epochs=2, batch_size=16)
    with pytest.raises(TrainingInterrupted):
        _train(tiny, "scratch", "2", config, name="stale", stop_after_epochs=1)
    changed = small_config(image_size=16, epochs=2, batch_size=16, lr=0.01)
    _train(tiny, "scratch", "2", changed, name="stale")
    _, fresh = _train(tiny, "scratch", "2", changed, name="fresh")
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (tiny / "stale.pt", fresh))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_all_fold_with_sampler_balancing(tiny):
    config = small_config(image_size=16, epochs=1, batch_size=16, class_balance="sampler")
    summary, path = _train(tiny, "scratch", "all", config)
    meta = torch.load(path, weights_only=True)
    split = read_json(tiny / "split.json")
    assert meta["val_is_holdout"] and meta["fold"] == "all"
    assert set(meta["train_patients"]) | set(meta["val_patients"]) == set(split["train_patients"])
    assert not (set(meta["train_patients"]) | set(meta["val_patients"])) & set(split["test_patients"])
    assert not math.isnan(meta["best_metrics"]["val_macro_f1"])
    with pytest.raises(ValueError, match="class_balance"):
        _train(tiny, "scratch", "all", small_config(image_size=16, class_balance="oversample"), name="bad")
