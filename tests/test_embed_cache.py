"""The embedding cache: which backbones use it, what it stores, and that heads trained from it
equal heads trained by running the frozen encoder every epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_frames import make_frame_store, make_split, small_config

from lus_core.cnn.embedding_cache import encode_video, encode_videos, load_features, read_cache
from lus_core.cnn.infer import predict_index, run_infer
from lus_core.cnn.model_file import load_model
from lus_core.cnn.settings import cache_enabled, encoder_settings
from lus_core.cnn.train import run_train
from lus_core.frames.store import read_frame_index

torch.set_num_threads(1)
NO_AUGMENT = {"p_affine": 0, "p_multiply": 0, "p_blur": 0, "p_hflip": 0}


def frozen_config(**train):
    settings = {
        "backbones": ["efficientnet_lite0"], "weights": "imagenet", "finetune": "head", "image_size": 32,
        "epochs": 3, "batch_size": 16, "lr": 0.01, "patience": 3,
    }
    config = small_config(**{**settings, **train})
    config["train"]["augment"] = {**config["train"]["augment"], **NO_AUGMENT}
    return config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    csv = make_frame_store(root, n_patients=6, frames_per_video=4, size=32, seed=1)
    make_split(csv, root / "split.json", n_test=2, k=2, seed=0)
    return root, csv


@pytest.fixture(scope="module")
def caches(store):
    root, csv = store
    config = frozen_config()
    index = read_frame_index(csv)
    paths = {}
    for video, h5 in index.groupby("video")["h5"].first().items():
        paths[video] = root / "embeddings" / f"{video}.h5"
        encode_video(h5, paths[video], "efficientnet_lite0", config)
    return paths


def test_only_frozen_pretrained_encoders_whose_logits_follow_the_embedding_are_cached():
    config = frozen_config()
    assert cache_enabled(config, "efficientnet_lite0")
    assert not cache_enabled(config, "scratch")  # always trains every layer
    assert not cache_enabled(config, "squeezenet1_1")  # ReLU after its 1x1-conv head
    assert not cache_enabled(small_config(weights="none", finetune="head"), "resnet18")  # random init trains all
    assert not cache_enabled(frozen_config(finetune="all"), "efficientnet_lite0")
    assert not cache_enabled(frozen_config(embedding_cache=False), "efficientnet_lite0")


def test_cache_holds_the_encoders_embedding_of_every_stored_frame(store, caches):
    _, csv = store
    index = read_frame_index(csv)
    config = frozen_config()
    feats = load_features(index, caches, encoder_settings(config, "efficientnet_lite0"))
    assert feats.shape == (len(index), 1, 1280)
    from lus_core.cnn.backbones import build_model

    model = build_model("efficientnet_lite0", 4, "imagenet", "head")
    _, _, emb = predict_index(model, index, 32)
    np.testing.assert_allclose(feats[:, 0], emb, rtol=1e-4, atol=1e-4)


def test_augmented_views_are_stored_deterministically(store, tmp_path):
    _, csv = store
    h5 = read_frame_index(csv)["h5"].iloc[0]
    config = frozen_config(cache_views=2)
    config["train"]["augment"] = {**config["train"]["augment"], "p_affine": 1.0, "p_hflip": 0.5}
    a = encode_video(h5, tmp_path / "a.h5", "efficientnet_lite0", config)
    b = encode_video(h5, tmp_path / "b.h5", "efficientnet_lite0", config)
    assert a.embedding.shape[1] == 3
    np.testing.assert_array_equal(a.embedding, read_cache(tmp_path / "b.h5").embedding)
    np.testing.assert_array_equal(a.embedding, b.embedding)
    assert not np.allclose(a.embedding[:, 1], a.embedding[:, 0])  # the views really are augmented
    assert not np.allclose(a.embedding[:, 1], a.embedding[:, 2])


def test_a_video_embedded_in_a_batch_equals_it_embedded_alone(store, tmp_path):
    """The embed step's jobs hold several videos; a video's views depend on its own seed only,
    so how the videos are grouped into jobs never changes a cache."""
    _, csv = store
    stores = list(read_frame_index(csv).groupby("video")["h5"].first())[:3]
    config = frozen_config(cache_views=1)
    config["train"]["augment"] = {**config["train"]["augment"], "p_affine": 1.0}
    batch = encode_videos(stores, [tmp_path / f"batch{i}.h5" for i in range(3)], "efficientnet_lite0", config)
    for i in (2, 0):  # alone, and in another order
        alone = encode_video(stores[i], tmp_path / f"alone{i}.h5", "efficientnet_lite0", config)
        np.testing.assert_array_equal(alone.embedding, batch[i].embedding)
        np.testing.assert_array_equal(read_cache(tmp_path / f"batch{i}.h5").embedding, alone.embedding)
    with pytest.raises(ValueError, match="3 frame stores for 2 cache files"):
        encode_videos(stores, [tmp_path / "x.h5", tmp_path / "y.h5"], "efficientnet_lite0", config)


def test_a_cache_made_with_other_settings_is_refused(store, caches):
    _, csv = store
    index = read_frame_index(csv)
    other = encoder_settings(frozen_config(image_size=48), "efficientnet_lite0")
    with pytest.raises(ValueError, match=r"embeddings/.*\.h5: made with encoder settings"):
        load_features(index, caches, other)


def test_head_from_cache_equals_head_trained_through_the_frozen_encoder(store, caches, tmp_path):
    root, csv = store
    config = frozen_config(loss="sord")  # SORD trains cached heads too
    out = {}
    for name, paths in (("frames", None), ("cache", caches)):
        model = tmp_path / f"{name}.pt"
        run_train(
            csv, root / "split.json", "efficientnet_lite0", "0", model, tmp_path / f"{name}.csv",
            tmp_path / f"{name}.png", tmp_path / "ck" / name, config, progress=False, cache_paths=paths,
        )
        out[name] = torch.load(model, weights_only=True)
    assert out["frames"]["trained_from"] == "frames" and out["cache"]["trained_from"] == "embedding_cache"
    assert out["frames"]["best_epoch"] == out["cache"]["best_epoch"]
    a, b = out["frames"]["state_dict"], out["cache"]["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    history = pd.read_csv(tmp_path / "cache.csv")
    assert len(history) == 3 and history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]  # it learned


def test_inference_from_cache_equals_inference_through_the_model(store, caches, tmp_path):
    root, csv = store
    config = frozen_config()
    models = {}
    for fold in ("0", "1", "all"):
        models[fold] = tmp_path / f"{fold}.pt"
        run_train(
            csv, root / "split.json", "efficientnet_lite0", fold, models[fold], tmp_path / f"{fold}.csv",
            tmp_path / f"{fold}.png", tmp_path / "ck" / fold, config, progress=False, cache_paths=caches,
        )
    import h5py

    got = {}
    for name, paths in (("model", None), ("cache", caches)):
        run_infer(csv, root / "split.json", "efficientnet_lite0", models, tmp_path / f"{name}.h5", config,
                  progress=False, cache_paths=paths)
        with h5py.File(tmp_path / f"{name}.h5") as f:
            got[name] = {k: f[k][()] for k in ("softmax", "logits")}
    for k in ("softmax", "logits"):
        np.testing.assert_allclose(got["model"][k], got["cache"][k], rtol=1e-4, atol=1e-4)
    model, _ = load_model(models["all"])
    assert model.backbone == "efficientnet_lite0"
