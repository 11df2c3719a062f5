"""SORD soft ordinal targets and loss: targets, gradients, ordinal ordering, class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_frames import make_frame_store, make_split, small_config
from torch import nn

from lus_core.cnn.losses import SORDLoss, make_criterion, sord_targets
from lus_core.cnn.train import run_train


def _reference_targets(y: int, n_classes: int, alpha: float) -> np.ndarray:
    """The definition written out: exp(-alpha (y-k)^2) / sum_j exp(-alpha (y-j)^2)."""
    e = np.array([np.exp(-alpha * (y - k) ** 2) for k in range(n_classes)])
    return e / e.sum()


@pytest.mark.parametrize("alpha", [0.25, 1.0, 3.0])
def test_targets_match_the_definition_and_are_ordinal(alpha):
    labels = torch.arange(4)
    t = sord_targets(labels, 4, alpha).numpy()
    for y in range(4):
        np.testing.assert_allclose(t[y], _reference_targets(y, 4, alpha), rtol=1e-6)
        assert t[y].argmax() == y
        # mass falls off with the ordinal distance on both sides
        for k in range(4):
            for j in range(4):
                if abs(j - y) > abs(k - y):
                    assert t[y, j] < t[y, k]
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=1e-6)
    # symmetric classes: score 1's target mirrors score 2's
    np.testing.assert_allclose(t[1], t[2][::-1], rtol=1e-6)


def test_large_alpha_is_one_hot_and_the_loss_becomes_cross_entropy():
    logits = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(sord_targets(labels, 4, 50.0), nn.functional.one_hot(labels, 4).float(), atol=1e-12)
    weight = torch.tensor([0.5, 1.0, 2.0, 4.0])
    for w in (None, weight):
        sord = SORDLoss(4, alpha=50.0, weight=w)(logits, labels)
        ce = nn.CrossEntropyLoss(weight=w)(logits, labels)
        assert torch.allclose(sord, ce, atol=1e-6)


def test_gradient_is_softmax_minus_target():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    SORDLoss(4, alpha=1.0)(logits, labels).backward()
    expected = (torch.softmax(logits.detach(), 1) - sord_targets(labels, 4, 1.0)) / len(labels)
    assert torch.allclose(logits.grad, expected, atol=1e-7)
    # the loss is minimal (zero gradient) when the prediction equals the soft target
    at_target = torch.log(sord_targets(labels, 4, 1.0)).requires_grad_(True)
    SORDLoss(4, alpha=1.0)(at_target, labels).backward()
    assert at_target.grad.abs().max() < 1e-7


def test_an_error_further_away_costs_more_unlike_cross_entropy():
    label = torch.tensor([0])
    confident = [torch.full((1, 4), -8.0).index_fill_(1, torch.tensor([k]), 8.0) for k in range(4)]
    sord = [float(SORDLoss(4, alpha=1.0)(x, label)) for x in confident]
    ce = [float(nn.CrossEntropyLoss()(x, label)) for x in confident]
    assert sord[0] < sord[1] < sord[2] < sord[3]
    assert ce[1] == pytest.approx(ce[2]) == pytest.approx(ce[3])  # CE: every wrong score costs the same


def test_class_weights_normalise_like_cross_entropy():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 0, 0, 1, 2, 3])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    per = -(sord_targets(labels, 4, 1.0) * torch.log_softmax(logits, 1)).sum(1)
    expected = (weight[labels] * per).sum() / weight[labels].sum()
    assert torch.allclose(SORDLoss(4, 1.0, weight)(logits, labels), expected)


def test_make_criterion_reads_the_config_and_refuses_unknown_losses():
    assert isinstance(make_criterion({"loss": "ce"}, 4), nn.CrossEntropyLoss)
    crit = make_criterion({"loss": "sord", "sord_alpha": 2.5}, 4)
    assert isinstance(crit, SORDLoss) and crit.alpha == 2.5
    with pytest.raises(ValueError, match="train.loss"):
        make_criterion({"loss": "focal"}, 4)
    with pytest.raises(ValueError, match="alpha"):
        make_criterion({"loss": "sord", "sord_alpha": 0}, 4)


def test_training_with_sord_records_it_and_differs_from_cross_entropy(tmp_path):
    csv = make_frame_store(tmp_path, n_patients=8, frames_per_video=4, size=16, seed=0)
    make_split(csv, tmp_path / "split.json", n_test=2, k=2, seed=0)
    states = {}
    for loss in ("ce", "sord"):
        config = small_config(image_size=16, epochs=1, batch_size=16, loss=loss, sord_alpha=1.0)
        out = tmp_path / f"{loss}.pt"
        run_train(
            csv, tmp_path / "split.json", "scratch", "0", out, tmp_path / f"{loss}.csv", tmp_path / f"{loss}.png",
            tmp_path / "ck" / loss, config, progress=False,
        )
        meta = torch.load(out, weights_only=True)
        assert meta["loss"] == loss
        states[loss] = meta["state_dict"]
    # same seed, same data: only the target differs, so the weights must differ
    assert any(not torch.equal(states["ce"][k], states["sord"][k]) for k in states["ce"])
