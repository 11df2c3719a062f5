"""The shared interface of every confidence method ("is the CNN's prediction right?").

A method is fitted on out-of-fold predictions of *training* patients only, gives each frame a
confidence in [0, 1] (higher = the CNN's prediction is more likely correct), and turns it into a
trust decision with a threshold chosen on the same out-of-fold data.

    m = MaxSoftmax().fit(softmax, logits, embedding, labels)
    conf = m.score(softmax, logits, embedding)           # (N,) in [0, 1]
    m.choose_threshold(conf_oof, correct_oof, "balanced_accuracy")
    trusted = m.trust(softmax, logits, embedding)        # (N,) bool, conf >= m.threshold_
"""

from __future__ import annotations

import math

import numpy as np

THRESHOLD_RULES = ("balanced_accuracy", "coverage")

# a threshold above every possible confidence: trust nothing
TRUST_NOTHING = float(np.nextafter(1.0, 2.0))


class ConfidenceMethod:
    """Base class. Subclasses set `name` and implement `_fit` / `score`.

    `learned = True` marks methods whose score on their own training rows is optimistic
    (a classifier or a kNN index that contains the row itself); the step then chooses their
    threshold on cross-fitted scores (see `lus_core.confidence.step.cross_fit_scores`).
    """

    name: str = "base"
    learned: bool = False

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.threshold_: float | None = None
        self.threshold_rule_: str | None = None
        self.n_classes_: int | None = None

    # -- interface ---------------------------------------------------------------------------
    def fit(self, softmax, logits=None, embedding=None, labels=None) -> ConfidenceMethod:
        softmax = as_probs(softmax)
        self.n_classes_ = softmax.shape[1]
        self._fit(softmax, _opt(logits), _opt(embedding), None if labels is None else np.asarray(labels))
        return self

    def _fit(self, softmax, logits, embedding, labels) -> None:  # pragma: no cover - trivial
        pass

    def score(self, softmax, logits=None, embedding=None) -> np.ndarray:
        raise NotImplementedError

    def choose_threshold(
        self, conf_oof, correct_oof, rule: str = "balanced_accuracy", target_coverage: float = 0.8
    ) -> float:
        """Choose and store the trust threshold on out-of-fold confidences; return it."""
        self.threshold_ = choose_threshold(conf_oof, correct_oof, rule, target_coverage)
        self.threshold_rule_ = rule
        return self.threshold_

    def trust(self, softmax, logits=None, embedding=None) -> np.ndarray:
        if self.threshold_ is None:
            raise RuntimeError(f"{self.name}: call choose_threshold before trust")
        return self.score(softmax, logits, embedding) >= self.threshold_

    def get_params(self) -> dict:
        """Constructor parameters (JSON-friendly), for the method's JSON record."""
        return {"seed": self.seed}

    def fitted_params(self) -> dict:
        """What fitting learned that a reader may want to see (JSON-friendly)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


# -- helpers shared by the methods -----------------------------------------------------------
def as_probs(softmax) -> np.ndarray:
    p = np.asarray(softmax, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"softmax must be (N, C) with C >= 2, got shape {p.shape}")
    return p


def _opt(x):
    return None if x is None else np.asarray(x, dtype=np.float64)


def logits_or_log_probs(softmax, logits) -> np.ndarray:
    """Logits if given, else log-softmax (softmax(log p) == p, so both scale alike)."""
    if logits is not None:
        return np.asarray(logits, dtype=np.float64)
    return np.log(np.clip(as_probs(softmax), 1e-12, None))


def softmax_of(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def clip01(x) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)


def choose_threshold(conf, correct, rule: str = "balanced_accuracy", target_coverage: float = 0.8) -> float:
    """A threshold t so that `conf >= t` means trusted.

    balanced_accuracy: the t maximising the balanced accuracy of (trusted vs correct); t is set
      halfway between the last trusted and the first untrusted confidence value, and among equal
      balanced accuracies the one trusting more frames wins. With only correct (incorrect)
      frames every frame is (no frame is) trusted.
    coverage: trust the `target_coverage` fraction of frames with the highest confidence
      (ties at the cut are all trusted).
    """
    conf = np.asarray(conf, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    if conf.shape != correct.shape:
        raise ValueError("conf and correct differ in length")
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule {rule!r} not in {THRESHOLD_RULES}")
    ok = np.isfinite(conf)
    conf, correct = conf[ok], correct[ok]
    n = conf.size
    if n == 0:
        return 0.0
    values = np.unique(conf)[::-1]  # descending, distinct
    if rule == "coverage":
        if not 0.0 < target_coverage <= 1.0:
            raise ValueError("target_coverage must be in (0, 1]")
        k = max(1, math.ceil(target_coverage * n - 1e-9))
        s = np.sort(conf)[::-1]
        t = s[k - 1]
        return float(_between(t, values))
    n_pos = int(correct.sum())
    n_neg = n - n_pos
    if n_neg == 0:
        return float(min(0.0, values[-1]))
    if n_pos == 0:
        return TRUST_NOTHING
    # trusting every frame with conf >= values[i], i = 0..len-1, or none (i = -1)
    order = np.argsort(-conf, kind="stable")
    c_sorted, y_sorted = conf[order], correct[order]
    ends = np.searchsorted(-c_sorted, -values, side="right")  # rows with conf >= value
    tp = np.concatenate([[0], np.cumsum(y_sorted)])[ends]
    fp = ends - tp
    bacc = 0.5 * (tp / n_pos + (n_neg - (fp)) / n_neg)
    bacc_none = 0.5
    best = int(np.flatnonzero(bacc >= bacc.max() - 1e-12)[-1])  # most trusting among the best
    if bacc[best] < bacc_none - 1e-12:  # pragma: no cover - trusting all gives >= 0.5 always
        return TRUST_NOTHING
    return float(_between(values[best], values))


def _between(t: float, values_desc: np.ndarray) -> float:
    """Midpoint between value t and the next lower distinct value (t itself if none)."""
    i = int(np.searchsorted(-values_desc, -t, side="left"))
    if i + 1 < values_desc.size:
        return 0.5 * (values_desc[i] + values_desc[i + 1])
    return float(t)
