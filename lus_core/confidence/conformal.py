"""Split-conformal prediction sets (APS / RAPS / LAC) as a trust rule, in plain numpy.

Calibration = the out-of-fold softmax of the training patients, which is exchangeable with the
test frames as far as the CNN is concerned (neither was seen by the model that scored it). With
n calibration scores and k = ceil((n + 1)(1 - alpha)), the threshold q is the k-th smallest
calibration score, and the set of a frame holds every class whose score is <= q (the predicted
class always); P(label in set) >= 1 - alpha, and ~= 1 - alpha with the randomised scores.

Scores (Romano et al. 2020 "APS"; Angelopoulos et al. 2021 "RAPS"; Sadinle et al. 2019 "LAC"):
  aps : mass of the classes ranked above y + u * p_y (u ~ U(0,1); u = 1 when not randomised)
  raps: aps + lam * max(0, rank(y) - k_reg)
  lac : 1 - p_y
The "random" u of a frame is a keyed hash of its softmax row and the seed: reproducible,
independent of row order and of every other frame, and still a fixed score function, so the
conformal guarantee holds unchanged.

Trust: a frame is trusted when its set holds the predicted class only. Confidence (continuous,
in [0, 1]) = 1 - conformal p-value of the runner-up class, p(s) = (1 + #{cal >= s}) / (n + 1);
then `conf >= k / (n + 1)` holds exactly when the set has one class, so the stored threshold
reproduces the set-size rule and every frame's confidence says how strongly conformal rules out
the second choice.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from .base import ConfidenceMethod, as_probs

CONFORMAL_SCORES = ("aps", "raps", "lac")


def row_uniforms(softmax: np.ndarray, seed: int) -> np.ndarray:
    """One pseudo-uniform in [0, 1) per row, a keyed hash of the row's float32 bytes."""
    p = np.ascontiguousarray(np.asarray(softmax, dtype=np.float32))
    key = int(seed).to_bytes(8, "little", signed=True)
    out = np.empty(len(p))
    for i, row in enumerate(p):
        h = hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(h, "little") / 2.0**64
    return out


def class_scores(
    softmax, score: str = "aps", u: np.ndarray | None = None, lam: float = 0.01, k_reg: int = 1
) -> np.ndarray:
    """Nonconformity score of every class for every frame, (N, C); lower = more conforming."""
    p = as_probs(softmax)
    n, c = p.shape
    if score == "lac":
        return 1.0 - p
    if score not in CONFORMAL_SCORES:
        raise ValueError(f"conformal score {score!r} not in {CONFORMAL_SCORES}")
    u = np.ones(n) if u is None else np.asarray(u, dtype=np.float64)
    order = np.argsort(-p, axis=1, kind="stable")
    ps = np.take_along_axis(p, order, axis=1)
    above = np.cumsum(ps, axis=1) - ps  # mass of the classes ranked strictly above
    s_sorted = above + u[:, None] * ps
    if score == "raps":
        rank = np.arange(1, c + 1)[None, :]
        s_sorted = s_sorted + lam * np.maximum(0, rank - k_reg)
    s = np.empty_like(s_sorted)
    np.put_along_axis(s, order, s_sorted, axis=1)
    return s


class ConformalSets(ConfidenceMethod):
    """Split-conformal prediction sets at coverage 1 - alpha; trusted = a one-class set."""

    name = "conformal"

    def __init__(
        self,
        seed: int = 0,
        alpha: float = 0.1,
        score: str = "aps",
        randomized: bool = True,
        lam: float = 0.01,
        k_reg: int = 1,
    ):
        super().__init__(seed)
        if not 0.0 < alpha < 1.0:
            raise ValueError("conformal alpha must be in (0, 1)")
        if score not in CONFORMAL_SCORES:
            raise ValueError(f"conformal score {score!r} not in {CONFORMAL_SCORES}")
        self.alpha, self.score_fn, self.randomized = float(alpha), score, bool(randomized)
        self.lam, self.k_reg = float(lam), int(k_reg)

    def _scores(self, p: np.ndarray) -> np.ndarray:
        u = row_uniforms(p, self.seed) if self.randomized else None
        return class_scores(p, self.score_fn, u, self.lam, self.k_reg)

    def _fit(self, softmax, logits, embedding, labels):
        if labels is None:
            raise ValueError("conformal calibration needs labels")
        y = np.asarray(labels, dtype=int)
        s = self._scores(softmax)[np.arange(len(y)), y]
        self.cal_scores_ = np.sort(s)
        n = len(s)
        self.n_cal_ = n
        self.k_ = math.ceil((n + 1) * (1.0 - self.alpha) - 1e-9)
        self.qhat_ = float(self.cal_scores_[self.k_ - 1]) if self.k_ <= n else float("inf")

    def prediction_sets(self, softmax, logits=None, embedding=None) -> np.ndarray:
        """(N, C) bool: class c is in the frame's set. The predicted class always is."""
        p = as_probs(softmax)
        sets = self._scores(p) <= self.qhat_
        sets[np.arange(len(p)), p.argmax(axis=1)] = True
        return sets

    def set_size(self, softmax, logits=None, embedding=None) -> np.ndarray:
        return self.prediction_sets(softmax).sum(axis=1)

    def score(self, softmax, logits=None, embedding=None) -> np.ndarray:
        p = as_probs(softmax)
        runner_up = np.argsort(-p, axis=1, kind="stable")[:, 1]
        s = self._scores(p)[np.arange(len(p)), runner_up]
        n_ge = self.n_cal_ - np.searchsorted(self.cal_scores_, s, side="left")
        # 1 - p-value, written as (n - #{cal >= s}) / (n + 1) so that it compares exactly with k / (n + 1)
        return (self.n_cal_ - n_ge) / (self.n_cal_ + 1.0)

    def choose_threshold(
        self, conf_oof=None, correct_oof=None, rule: str = "balanced_accuracy", target_coverage: float = 0.8
    ) -> float:
        """Conformal's trust rule is its own (one-class set); the config rule does not apply."""
        self.threshold_ = self.k_ / (self.n_cal_ + 1.0)
        self.threshold_rule_ = "conformal_single_class_set"
        return self.threshold_

    def get_params(self) -> dict:
        return {
            "seed": self.seed,
            "alpha": self.alpha,
            "score": self.score_fn,
            "randomized": self.randomized,
            "lam": self.lam,
            "k_reg": self.k_reg,
        }

    def fitted_params(self) -> dict:
        return {"n_calibration": self.n_cal_, "k": self.k_, "qhat": self.qhat_}
