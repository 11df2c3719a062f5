"""Partial fine-tuning (`train.finetune: {last_blocks: N}`): the backbone split into frozen blocks
and trained ones, the frozen part's activations cached once per frame, and the last blocks trained
on them, which must be what training the whole network with its early blocks frozen gives."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_frames import make_frame_store, make_split, small_config

from lus_core.cnn.backbones import build_model
from lus_core.cnn.embedding_cache import encode_video, load_features, read_cache
from lus_core.cnn.infer import run_infer
from lus_core.cnn.settings import PARTIAL, backbone_finetune, cache_enabled, encoder_settings
from lus_core.cnn.train import run_train
from lus_core.config import ConfigError, validate_config
from lus_core.frames.store import read_frame_index

torch.set_num_threads(1)
NO_AUGMENT = {"p_affine": 0, "p_multiply": 0, "p_blur": 0, "p_hflip": 0}


def partial_config(blocks=2, **train):
    settings = {
        "backbones": ["efficientnet_lite0"], "weights": "imagenet", "finetune": {"last_blocks": blocks},
        "image_size": 32, "epochs": 2, "batch_size": 8, "lr": 0.01, "patience": 2,
    }
    config = small_config(**{**settings, **train})
    config["train"]["augment"] = {**config["train"]["augment"], **NO_AUGMENT}
    return config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("blocks")
    csv = make_frame_store(root, n_patients=6, frames_per_video=4, size=32, seed=3)
    make_split(csv, root / "split.json", n_test=2, k=2, seed=0)
    return root, csv


@pytest.fixture(scope="module")
def activations(store):
    root, csv = store
    config = partial_config()
    paths = {}
    for video, h5 in read_frame_index(csv).groupby("video")["h5"].first().items():
        paths[video] = root / "activations" / f"{video}.h5"
        encode_video(h5, paths[video], "efficientnet_lite0", config)
    return paths


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
@pytest.mark.parametrize("blocks", [1, 3])
def test_the_network_is_its_frozen_part_then_its_last_blocks(backbone, blocks):
    torch.manual_seed(0)
    model = build_model(backbone, 4, "none", "all").eval()
    x = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        logits, emb = model.embed(x)
        split_logits, split_emb = model.from_activations(model.activations_before(x, blocks), blocks)
    assert torch.equal(logits, split_logits) and torch.equal(emb, split_emb)


def test_only_the_last_blocks_and_the_layers_after_them_train():
    model = build_model("efficientnet_lite0", 4, "imagenet", "last_blocks:2", findings=["b_lines"])
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("net._blocks.14.", "net._blocks.15.", "net._conv_head", "net._bn1", "net._fc",
                                         "findings_head")) for n in trained)
    assert any(n.startswith("net._blocks.14.") for n in trained) and "findings_head.weight" in trained
    model.train()
    assert model.net._blocks[15].training and model.net._bn1.training and model.net._dropout.training
    assert not model.net._blocks[13].training and not model.net._bn0.training  # frozen: BatchNorm statistics fixed
    assert model.net._blocks[13]._bn0.training is False


def test_the_config_names_the_blocks_and_refuses_what_has_none():
    config = partial_config(blocks=3)
    assert backbone_finetune(config, "efficientnet_lite0") == "last_blocks:3"
    assert cache_enabled(config, "efficientnet_lite0") and cache_enabled(config, "resnet18")
    assert not cache_enabled(partial_config(embedding_cache=False), "efficientnet_lite0")
    assert encoder_settings(config, "efficientnet_lite0")["before_last_blocks"] == 3
    # a head's cache keeps its settings (the caches made before partial fine-tuning stay valid)
    assert "before_last_blocks" not in encoder_settings(partial_config(finetune="head"), "efficientnet_lite0")
    mapping = copy.deepcopy(config)
    mapping["train"]["finetune"] = {"efficientnet_lite0": {"last_blocks": 1}, "default": "head"}
    assert backbone_finetune(mapping, "efficientnet_lite0") == "last_blocks:1"
    assert backbone_finetune(mapping, "resnet18") == "head"
    synthetic = {"dataset": {"synthetic": {"enabled": True}}}
    with pytest.raises(ConfigError, match="vgg16 has no blocks to fine-tune"):
        validate_config({**synthetic, "train": {"backbones": ["vgg16"], "weights": "imagenet",
                                                "finetune": {"last_blocks": 1}}})
    for backbone, blocks in PARTIAL.items():  # the counts the config checks against are the networks' own
        assert len(build_model(backbone, 2, "none", "all").blocks()) == blocks
    with pytest.raises(ConfigError, match="efficientnet_lite0 has 16 blocks, last_blocks asks for 17"):
        validate_config({**synthetic, "train": {"backbones": ["efficientnet_lite0"], "weights": "imagenet",
                                                "finetune": {"last_blocks": 17}}})


def test_the_cache_holds_the_input_of_the_last_blocks(store, activations):
    _, csv = store
    index = read_frame_index(csv)
    config = partial_config()
    feats = load_features(index, activations, encoder_settings(config, "efficientnet_lite0"))
    assert feats.ndim == 5 and feats.shape[:2] == (len(index), 1)  # (N, 1 view, C, H, W)
    assert read_cache(activations[index["video"].iloc[0]]).encoder["before_last_blocks"] == 2
    with pytest.raises(ValueError, match="made with encoder settings"):  # other blocks: rerun embed
        load_features(index, activations, encoder_settings(partial_config(blocks=1), "efficientnet_lite0"))


def test_last_blocks_trained_from_the_cache_equal_them_trained_through_the_whole_network(store, activations, tmp_path):
    root, csv = store
    config = partial_config(loss="sord")
    through = copy.deepcopy(config)
    through["train"]["embedding_cache"] = False
    out = {}
    for name, cfg, paths in (("frames", through, None), ("cache", config, activations)):
        model = tmp_path / f"{name}.pt"
        run_train(csv, root / "split.json", "efficientnet_lite0", "0", model, tmp_path / f"{name}.csv",
                  tmp_path / f"{name}.png", tmp_path / "ck" / name, cfg, progress=False, cache_paths=paths)
        out[name] = torch.load(model, weights_only=True)
    assert out["frames"]["trained_from"] == "frames" and out["cache"]["trained_from"] == "block_cache"
    assert out["cache"]["finetune"] == "last_blocks:2" and out["frames"]["best_epoch"] == out["cache"]["best_epoch"]
    a, b = out["frames"]["state_dict"], out["cache"]["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    imagenet = build_model("efficientnet_lite0", 4, "imagenet", "head").state_dict()
    assert torch.equal(b["net._blocks.13._depthwise_conv.weight"], imagenet["net._blocks.13._depthwise_conv.weight"])
    assert torch.equal(b["net._blocks.13._bn1.running_mean"], imagenet["net._blocks.13._bn1.running_mean"])
    assert not torch.equal(b["net._blocks.15._project_conv.weight"], imagenet["net._blocks.15._project_conv.weight"])
    assert not torch.equal(b["net._blocks.15._bn2.running_mean"], imagenet["net._blocks.15._bn2.running_mean"])
    history = pd.read_csv(tmp_path / "cache.csv")
    assert len(history) == 2 and history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]  # it learned


def test_inference_from_the_cache_equals_the_whole_network(store, activations, tmp_path):
    root, csv = store
    config = partial_config()
    models = {}
    for fold in ("0", "1", "all"):
        models[fold] = tmp_path / f"{fold}.pt"
        run_train(csv, root / "split.json", "efficientnet_lite0", fold, models[fold], tmp_path / f"{fold}.csv",
                  tmp_path / f"{fold}.png", tmp_path / "ck" / fold, config, progress=False, cache_paths=activations)
    got = {}
    for name, paths in (("model", None), ("cache", activations)):
        run_infer(csv, root / "split.json", "efficientnet_lite0", models, tmp_path / f"{name}.h5", config,
                  progress=False, cache_paths=paths)
        with h5py.File(tmp_path / f"{name}.h5") as f:
            got[name] = {k: f[k][()] for k in ("softmax", "logits", "embedding_all", "embedding_oof")}
    for k, values in got["model"].items():
        np.testing.assert_allclose(values, got["cache"][k], rtol=1e-4, atol=1e-4)
    head_only = copy.deepcopy(config)
    head_only["train"]["finetune"] = "head"
    with pytest.raises(ValueError, match="made with encoder settings"):
        run_infer(csv, root / "split.json", "efficientnet_lite0", models, tmp_path / "x.h5", head_only,
                  progress=False, cache_paths=activations)
