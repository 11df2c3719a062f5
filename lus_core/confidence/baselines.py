"""Standard failure-detection baselines: MSP, temperature-scaled MSP, entropy, kNN trust score."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.neighbors import NearestNeighbors

from .base import ConfidenceMethod, as_probs, clip01, logits_or_log_probs, softmax_of


class MaxSoftmax(ConfidenceMethod):
    """Maximum softmax probability (Hendrycks & Gimpel 2017): conf = max_c p_c, in [1/C, 1]."""

    name = "msp"

    def score(self, softmax, logits=None, embedding=None) -> np.ndarray:
        return clip01(as_probs(softmax).max(axis=1))


class TemperatureScaling(ConfidenceMethod):
    """MSP after temperature scaling (Guo et al. 2017): conf = max_c softmax(z / T)_c.

    T is fitted on the out-of-fold logits by minimising the negative log-likelihood
    (bounded 1-D search over log T in [log_t_min, log_t_max]). Without logits, log-softmax
    stands in (same softmax, same T). Scaling never changes the predicted class.
    """

    name = "temperature"

    def __init__(self, seed: int = 0, t_min: float = 0.05, t_max: float = 20.0):
        super().__init__(seed)
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.temperature_: float = 1.0
        self.nll_before_: float | None = None
        self.nll_after_: float | None = None

    def _fit(self, softmax, logits, embedding, labels):
        if labels is None:
            raise ValueError("temperature scaling needs labels")
        z = logits_or_log_probs(softmax, logits)
        y = np.asarray(labels, dtype=int)

        def nll(log_t: float) -> float:
            zt = z / np.exp(log_t)
            zt = zt - zt.max(axis=1, keepdims=True)
            lse = np.log(np.exp(zt).sum(axis=1))
            return float(np.mean(lse - zt[np.arange(len(y)), y]))

        res = minimize_scalar(
            nll,
            bounds=(np.log(self.t_min), np.log(self.t_max)),
            method="bounded",
            options={"xatol": 1e-6},
        )
        self.temperature_ = float(np.exp(res.x))
        self.nll_before_, self.nll_after_ = nll(0.0), float(res.fun)
        if self.nll_after_ > self.nll_before_:  # the bounded search never does worse than T = 1
            self.temperature_, self.nll_after_ = 1.0, self.nll_before_

    def calibrated(self, softmax, logits=None) -> np.ndarray:
        """The temperature-scaled probability vectors (N, C)."""
        return softmax_of(logits_or_log_probs(softmax, logits) / self.temperature_)

    def score(self, softmax, logits=None, embedding=None) -> np.ndarray:
        return clip01(self.calibrated(softmax, logits).max(axis=1))

    def get_params(self) -> dict:
        return {"seed": self.seed, "t_min": self.t_min, "t_max": self.t_max}

    def fitted_params(self) -> dict:
        return {
            "temperature": self.temperature_,
            "nll_before": self.nll_before_,
            "nll_after": self.nll_after_,
        }


class Entropy(ConfidenceMethod):
    """Normalised predictive entropy: conf = 1 - H(p) / log C (1 = one-hot, 0 = uniform)."""

    name = "entropy"

    def score(self, softmax, logits=None, embedding=None) -> np.ndarray:
        p = as_probs(softmax)
        p = p / p.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
        return clip01(1.0 - h / np.log(p.shape[1]))


class TrustScore(ConfidenceMethod):
    """kNN trust score in embedding space (Jiang et al., NeurIPS 2018).

    ratio = d(x, nearest training frame of another class) / d(x, nearest training frame of the
    predicted class), with the CNN's predicted class = argmax softmax, and the training frames
    of each class first thinned to its alpha-high-density set (drop the `alpha` fraction with the
    largest distance to their `k`-th same-class neighbour). conf = ratio / (1 + ratio): 0.5 when
    both classes are equally near, -> 1 deep inside the predicted class.
    Labels are the ground truth of the training frames. Embeddings are standardised with the
    training mean / std when `standardize`.
    """

    name = "trust_score"
    learned = True

    def __init__(
        self,
        seed: int = 0,
        k: int = 10,
        alpha: float = 0.0,
        standardize: bool = True,
        min_dist: float = 1e-12,
    ):
        super().__init__(seed)
        self.k, self.alpha, self.standardize, self.min_dist = (
            int(k),
            float(alpha),
            bool(standardize),
            float(min_dist),
        )

    def _features(self, embedding):
        if embedding is None:
            raise ValueError("trust_score needs the embedding")
        x = np.asarray(embedding, dtype=np.float64)
        if self.standardize:
            x = (x - self.mean_) / self.std_
        return x

    def _fit(self, softmax, logits, embedding, labels):
        if labels is None or embedding is None:
            raise ValueError("trust_score needs embedding and labels")
        x = np.asarray(embedding, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        self.std_ = x.std(axis=0)
        self.std_[self.std_ < 1e-12] = 1.0
        x = self._features(x)
        y = np.asarray(labels, dtype=int)
        self.index_: dict[int, NearestNeighbors] = {}
        self.kept_: dict[int, int] = {}
        for c in range(self.n_classes_):
            xc = x[y == c]
            if len(xc) == 0:
                continue
            if self.alpha > 0 and len(xc) > self.k + 1:
                nn = NearestNeighbors(n_neighbors=self.k + 1).fit(xc)
                radius = nn.kneighbors(xc)[0][:, -1]  # distance to k-th neighbour (self excluded)
                keep = radius <= np.quantile(radius, 1.0 - self.alpha)
                xc = xc[keep]
            self.index_[c] = NearestNeighbors(n_neighbors=1).fit(xc)
            self.kept_[c] = len(xc)

    def score(self, softmax, logits=None, embedding=None) -> np.ndarray:
        p = as_probs(softmax)
        x = self._features(embedding)
        pred = p.argmax(axis=1)
        dist = np.full((len(x), self.n_classes_), np.inf)
        for c, nn in self.index_.items():
            dist[:, c] = nn.kneighbors(x, n_neighbors=1)[0][:, 0]
        rows = np.arange(len(x))
        d_pred = dist[rows, pred]
        other = dist.copy()
        other[rows, pred] = np.inf
        d_other = other.min(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = d_other / np.maximum(d_pred, self.min_dist)
            conf = ratio / (1.0 + ratio)
        conf = np.where(np.isinf(ratio), 1.0, conf)  # no other class known (or d_pred = 0 with inf)
        conf = np.where(np.isinf(d_pred), 0.0, conf)  # predicted class unseen in training
        return clip01(conf)

    def get_params(self) -> dict:
        return {
            "seed": self.seed,
            "k": self.k,
            "alpha": self.alpha,
            "standardize": self.standardize,
            "min_dist": self.min_dist,
        }

    def fitted_params(self) -> dict:
        return {"kept_per_class": {str(c): n for c, n in self.kept_.items()}}
