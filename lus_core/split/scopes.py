"""Scopes: the training-and-selection contexts of a run, and the part of split.json each one reads.

With `split.outer_folds` 1 a run has one scope, the root of the results folder: its test patients
are held out, its models train on the others, and it is what `lus predict` deploys. With K > 1
the root scope (the deployed one) trains and selects on every patient, and each outer fold o has
a scope `outer{o}` (results under `R/outer/{o}/`) whose test patients are group o. Every step
that depends on the training patients runs once per scope; a scope's split is shaped like a
single split (test_patients, train_patients, folds), so those steps read it the same way.
"""

from __future__ import annotations

DEPLOYED = ""  # the root scope


def outer_scope(o: int) -> str:
    return f"outer{o}"


def scopes(config: dict) -> list[str]:
    """Every scope of a run: the deployed one first, then the outer folds (none with outer_folds 1)."""
    k = int(config["split"]["outer_folds"])
    return [DEPLOYED] if k == 1 else [DEPLOYED, *(outer_scope(o) for o in range(k))]


def outer_scopes(config: dict) -> list[str]:
    k = int(config["split"]["outer_folds"])
    return [] if k == 1 else [outer_scope(o) for o in range(k)]


def scope_split(split: dict, scope: str) -> dict:
    """The scope's test patients, training patients and inner folds (the keys of a single split)."""
    if scope == DEPLOYED:
        return split["deployed"] if "outer" in split else split
    o = int(scope.removeprefix("outer"))
    if "outer" not in split or not 0 <= o < len(split["outer"]):
        raise ValueError(f"split.json has no outer fold {o} (scope {scope!r}); is split.outer_folds the run's?")
    return split["outer"][o]
