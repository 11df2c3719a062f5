"""Confidence models: is the CNN's prediction for a frame right? (fit on out-of-fold training rows only).

`METHODS` maps a config name to its class; `make_method(name, config)` builds one with the
config's settings. The study's models are in `study`, the baselines in `baselines` and
`conformal`, metrics in `metrics`, the Snakemake entry points in `step`.
"""

from __future__ import annotations

from .base import ConfidenceMethod, choose_threshold
from .baselines import Entropy, MaxSoftmax, TemperatureScaling, TrustScore
from .conformal import ConformalSets
from .study import MLPConfidence, SVCConfidence, SVCPerClassConfidence

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
    """Constructor arguments of method `name` taken from the config.

    `config["confidence"]`: `conformal_alpha` -> conformal alpha, `svc_balance` -> SVC balance;
    optional `conformal_score` (aps / raps / lac) and `params: {method: {arg: value}}` override
    any constructor argument. `config["seed"]` seeds every method.
    """
    if name not in METHODS:
        raise KeyError(f"unknown confidence method {name!r}; known: {sorted(METHODS)}")
    config = config or {}
    cc = config.get("confidence", {}) or {}
    params: dict = {"seed": int(config.get("seed", 0))}
    if name == "conformal":
        params["alpha"] = float(cc.get("conformal_alpha", 0.1))
        if "conformal_score" in cc:
            params["score"] = cc["conformal_score"]
    if name in ("svc", "svc_per_class"):
        params["balance"] = cc.get("svc_balance", "class_weight")
    params.update((cc.get("params") or {}).get(name, {}) or {})
    return params


def make_method(name: str, config: dict | None = None, **overrides) -> ConfidenceMethod:
    """A fresh (unfitted) method configured from `config`; keyword arguments override."""
    return METHODS[name](**{**method_params(name, config), **overrides})


__all__ = ["METHODS", "ConfidenceMethod", "choose_threshold", "make_method", "method_params"]
