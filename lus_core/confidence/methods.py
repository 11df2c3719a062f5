"""The confidence methods by config name: `METHODS` maps a name to its class; `make_method(name,
config)` builds one with the config's settings."""

from __future__ import annotations

from lus_core.confidence.base import ConfidenceMethod
from lus_core.confidence.baselines import Entropy, MaxSoftmax, TemperatureScaling, TrustScore
from lus_core.confidence.conformal import ConformalSets
from lus_core.confidence.study import MLPConfidence, SVCConfidence, SVCPerClassConfidence

METHODS: dict[str, type[ConfidenceMethod]] = {
    "msp": MaxSoftmax,
    "temperature": TemperatureScaling,
    "entropy": Entropy,
    "conformal": ConformalSets,
    "trust_score": TrustScore,
    "mlp": MLPConfidence,
    "svc": SVCConfidence,
    "svc_per_class": SVCPerClassConfidence,
}


def method_params(name: str, config: dict | None = None) -> dict:
    """Constructor arguments of method `name` taken from the config (None: the class's own).

    `config["confidence"]`: `conformal_alpha` -> conformal alpha, `conformal_score` (aps / raps /
    lac) -> its score, `svc_balance` -> SVC balance; `params: {method: {arg: value}}` overrides any
    constructor argument. `config["seed"]` seeds every method. Only the keys of method `name` are
    read (the confidence report's step has the seed and `confidence.params` only).
    """
    if name not in METHODS:
        raise KeyError(f"unknown confidence method {name!r}; known: {sorted(METHODS)}")
    if config is None:
        return {}  # the class's own constructor arguments
    cc = config["confidence"]
    params: dict = {"seed": int(config["seed"])}
    if name == "conformal":
        params["alpha"] = float(cc["conformal_alpha"])
        params["score"] = cc["conformal_score"]
    if name in ("svc", "svc_per_class"):
        params["balance"] = cc["svc_balance"]
    params.update(cc["params"].get(name) or {})
    return params


def make_method(name: str, config: dict | None = None, **overrides) -> ConfidenceMethod:
    """A fresh (unfitted) method configured from `config`; keyword arguments override."""
    return METHODS[name](**{**method_params(name, config), **overrides})

