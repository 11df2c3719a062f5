"""Training losses: cross-entropy, or SORD soft ordinal labels (`train.loss`).

SORD (Diaz & Marathe, CVPR 2019; used for LUS scores by Roy et al., IEEE TMI 2020) replaces the
one-hot target of class y by ``softmax(-alpha * (y - k)^2)`` over the classes k: a frame of
score 2 is "mostly 2, a little 1 and 3, hardly 0". The loss is the cross-entropy between that
soft target and the predicted distribution, so a prediction one score away costs less than one
three scores away. This suits weak labels (every frame carries its video's score) and ordinal
metrics (quadratic kappa). Class indices are the ordinal positions (``config["classes"]`` is
ordered), so the distance is ``|y - k|`` in index units.

Class weights (``train.class_balance: weighted_loss``) weight each frame by the weight of its
true class and normalise by the sum of the weights, exactly as ``nn.CrossEntropyLoss(weight=)``
does, so switching ``train.loss`` changes only the target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "sord")


def sord_targets(labels: torch.Tensor, n_classes: int, alpha: float) -> torch.Tensor:
    """(N,) class indices -> (N, C) soft targets ``softmax(-alpha * (y - k)^2)``; rows sum to 1."""
    if alpha <= 0:
        raise ValueError(f"SORD alpha must be > 0, got {alpha}")
    k = torch.arange(n_classes, device=labels.device, dtype=torch.float32)
    dist = (labels.to(torch.float32)[:, None] - k[None, :]) ** 2
    return torch.softmax(-float(alpha) * dist, dim=1)


class SORDLoss(nn.Module):
    """Cross-entropy against SORD soft targets, optionally class-weighted like nn.CrossEntropyLoss."""

    def __init__(self, n_classes: int, alpha: float = 1.0, weight: torch.Tensor | None = None):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"train.sord_alpha must be > 0, got {alpha}")
        self.n_classes = int(n_classes)
        self.alpha = float(alpha)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = sord_targets(labels, self.n_classes, self.alpha)
        per_frame = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
        if self.weight is None:
            return per_frame.mean()
        w = self.weight.to(per_frame.device)[labels]
        return (w * per_frame).sum() / w.sum()


def make_criterion(train_cfg: dict, n_classes: int, class_weight: torch.Tensor | None = None) -> nn.Module:
    """The loss named by ``train.loss`` (``ce`` or ``sord`` with ``train.sord_alpha``)."""
    name = str(train_cfg["loss"])
    if name == "ce":
        return nn.CrossEntropyLoss(weight=class_weight)
    if name == "sord":
        return SORDLoss(n_classes, float(train_cfg["sord_alpha"]), class_weight)
    raise ValueError(f"train.loss must be one of {LOSSES}, got {name!r}")


class ScoreAndFindingsLoss(nn.Module):
    """The score loss plus ``weight`` x the findings' binary cross-entropy (auxiliary heads).

    Outputs are (N, C + F): the C score logits, then one logit per finding. Targets are (N, 1 + F)
    int64: the class index, then each finding's value (1 yes, 0 no, -1 unknown). Unknown findings
    add nothing; the BCE is the mean over the known (frame, finding) pairs of the batch, so a
    batch without any known finding trains the score alone.
    """

    def __init__(self, score_loss: nn.Module, n_classes: int, weight: float):
        super().__init__()
        if weight < 0:
            raise ValueError(f"train.findings_weight must be >= 0, got {weight}")
        self.score_loss = score_loss
        self.n_classes = int(n_classes)
        self.weight = float(weight)

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        score = self.score_loss(outputs[:, : self.n_classes], targets[:, 0])
        finding_logits, known = outputs[:, self.n_classes :].float(), targets[:, 1:] >= 0
        if not bool(known.any()):
            return score
        bce = F.binary_cross_entropy_with_logits(finding_logits[known], targets[:, 1:][known].float())
        return score + self.weight * bce


def score_part(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(score logits, class indices) of a batch, with or without finding columns."""
    if targets.ndim == 1:
        return outputs, targets
    n_findings = targets.shape[1] - 1
    return outputs[:, : outputs.shape[1] - n_findings], targets[:, 0]
