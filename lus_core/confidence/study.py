"""The study's confidence models: learn P(CNN correct | softmax vector).

- `MLPConfidence`: one hidden layer, sigmoid output (scikit-learn's MLPClassifier on a binary
  target ends in a logistic unit). Extra layers made it worse in the study.
- `SVCConfidence`: one RBF SVC on the softmax vector; the study needed a balanced set.
- `SVCPerClassConfidence`: one SVC per *predicted* class, each on the frames predicted as it.

Imbalance of correct / incorrect frames for the SVCs (`balance`): `class_weight` (balanced class
weights) or `subsample` (balanced random subsample of the majority outcome, seeded).
SVC confidence = sigmoid(decision_function): 0.5 on the SVC's decision boundary, monotone in
the margin. Where a training set holds only one outcome (e.g. a class the CNN always gets right)
the model is a constant: that outcome's rate.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from .base import ConfidenceMethod, as_probs, clip01

SVC_BALANCE = ("class_weight", "subsample", "none")


def _correct(softmax, labels) -> np.ndarray:
    if labels is None:
        raise ValueError("the study's models need labels (to know which predictions were correct)")
    return as_probs(softmax).argmax(axis=1) == np.asarray(labels, dtype=int)


def balanced_subsample(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of all minority-outcome rows plus as many majority rows drawn without replacement."""
    y = np.asarray(y, dtype=bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    small, big = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
    pick = rng.choice(big, size=len(small), replace=False)
    return np.sort(np.concatenate([small, pick]))


class _Constant:
    """Stands in for a classifier when only one outcome was seen."""

    def __init__(self, p: float):
        self.p = float(p)

    def confidence(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.p)


class MLPConfidence(ConfidenceMethod):
    """conf = sigmoid output of a one-hidden-layer MLP trained on (softmax -> correct)."""

    name = "mlp"
    learned = True

    def __init__(self, seed: int = 0, hidden: int = 16, alpha: float = 1e-3, max_iter: int = 500):
        super().__init__(seed)
        self.hidden, self.alpha, self.max_iter = int(hidden), float(alpha), int(max_iter)

    def _fit(self, softmax, logits, embedding, labels):
        y = _correct(softmax, labels)
        self.base_rate_ = float(y.mean()) if len(y) else 0.5
        if y.all() or not y.any():
            self.model_ = _Constant(self.base_rate_)
            return
        # lbfgs: full-batch, deterministic given random_state, fast on C-dim inputs
        mlp = MLPClassifier(
            hidden_layer_sizes=(self.hidden,),
            activation="relu",
            solver="lbfgs",
            alpha=self.alpha,
            max_iter=self.max_iter,
            random_state=self.seed,
        )
        # one BLAS thread: tiny matrices are many times slower with several, and the result is
        # then independent of the machine's thread count
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit(softmax, y.astype(int))
        self.model_ = mlp

    def score(self, softmax, logits=None, embedding=None) -> np.ndarray:
        p = as_probs(softmax)
        if isinstance(self.model_, _Constant):
            return self.model_.confidence(p)
        col = int(np.flatnonzero(self.model_.classes_ == 1)[0])
        with threadpool_limits(limits=1):
            return clip01(self.model_.predict_proba(p)[:, col])

    def get_params(self) -> dict:
        return {"seed": self.seed, "hidden": self.hidden, "alpha": self.alpha, "max_iter": self.max_iter}

    def fitted_params(self) -> dict:
        return {"train_accuracy_of_cnn": self.base_rate_, "constant": isinstance(self.model_, _Constant)}


class _SVCBase(ConfidenceMethod):
    learned = True

    def __init__(
        self,
        seed: int = 0,
        balance: str = "class_weight",
        C: float = 1.0,
        gamma: str | float = "scale",
        max_train: int | None = 20000,
    ):
        super().__init__(seed)
        if balance not in SVC_BALANCE:
            raise ValueError(f"svc balance {balance!r} not in {SVC_BALANCE}")
        self.balance, self.C, self.gamma = balance, float(C), gamma
        self.max_train = None if max_train is None else int(max_train)

    def _fit_one(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
        if len(y) == 0:
            return None
        if y.all() or not y.any():
            return _Constant(float(y.mean()))
        idx = np.arange(len(y))
        if self.balance == "subsample":
            idx = balanced_subsample(y, rng)
        if self.max_train is not None and len(idx) > self.max_train:  # SVC fitting is O(n^2)
            idx = np.sort(rng.choice(idx, size=self.max_train, replace=False))
        cw = "balanced" if self.balance == "class_weight" else None
        svc = SVC(kernel="rbf", C=self.C, gamma=self.gamma, class_weight=cw)
        svc.fit(x[idx], y[idx].astype(int))
        return svc

    @staticmethod
    def _conf(model, x: np.ndarray) -> np.ndarray:
        if isinstance(model, _Constant):
            return model.confidence(x)
        d = model.decision_function(x)  # > 0: class 1 (correct)
        return 1.0 / (1.0 + np.exp(-d))

    def get_params(self) -> dict:
        return {
            "seed": self.seed,
            "balance": self.balance,
            "C": self.C,
            "gamma": self.gamma,
            "max_train": self.max_train,
        }


class SVCConfidence(_SVCBase):
    """conf = sigmoid(decision function) of one RBF SVC trained on (softmax -> correct)."""

    name = "svc"

    def _fit(self, softmax, logits, embedding, labels):
        y = _correct(softmax, labels)
        self.model_ = self._fit_one(softmax, y, np.random.default_rng(self.seed))
        if self.model_ is None:
            self.model_ = _Constant(0.5)

    def score(self, softmax, logits=None, embedding=None) -> np.ndarray:
        return clip01(self._conf(self.model_, as_probs(softmax)))

    def fitted_params(self) -> dict:
        return {"constant": isinstance(self.model_, _Constant)}


class SVCPerClassConfidence(_SVCBase):
    """One SVC per predicted class c, trained on the frames the CNN predicted as c.

    A class never predicted in training falls back to the pooled (all-class) SVC.
    """

    name = "svc_per_class"

    def _fit(self, softmax, logits, embedding, labels):
        y = _correct(softmax, labels)
        pred = softmax.argmax(axis=1)
        rng = np.random.default_rng(self.seed)
        self.models_: dict[int, object] = {}
        self.n_train_: dict[int, int] = {}
        for c in range(self.n_classes_):
            m = pred == c
            self.n_train_[c] = int(m.sum())
            model = self._fit_one(softmax[m], y[m], rng)
            if model is not None:
                self.models_[c] = model
        pooled = self._fit_one(softmax, y, rng)
        self.pooled_ = _Constant(0.5) if pooled is None else pooled

    def score(self, softmax, logits=None, embedding=None) -> np.ndarray:
        p = as_probs(softmax)
        pred = p.argmax(axis=1)
        conf = np.empty(len(p))
        for c in np.unique(pred):
            m = pred == c
            conf[m] = self._conf(self.models_.get(int(c), self.pooled_), p[m])
        return clip01(conf)

    def fitted_params(self) -> dict:
        return {
            "n_train_per_predicted_class": {str(c): n for c, n in self.n_train_.items()},
            "constant_classes": [c for c, m in self.models_.items() if isinstance(m, _Constant)],
        }
