"""Scopes: the training-and-selection contexts of a run, and the part of split.json each one reads.

With `split.outer_folds` 1 a run has one scope, the root of the results folder: its test patients
are held out, its models train on the others, and it is what `lus predict` deploys. With K > 1
the root scope (the deployed one) trains and selects on every patient, and each outer fold o has
a scope `outer{o}` (results under `R/outer/{o}/`) whose test patients are group o. Every step
that depends on the training patients runs once per scope; a scope's split is shaped like a
single split (test_patients, train_patients, folds), so those steps read it the same way.

With several model seeds (`train.seeds`) every scope has one replica per seed: the first seed's
is the scope itself, seed i > 0's is `{scope}_seed{i}` (`seed{i}` for the root; results under
the scope's folder in `seed/{i}/`). A replica reads its scope's split; what it trains differs
only by its seed (:func:`seed_overrides`).
"""

from __future__ import annotations

import re

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


def model_seeds(config: dict) -> list[int]:
    """The model seeds of a run: `train.seeds`, or the run's `seed` alone."""
    return [int(s) for s in config["train"]["seeds"]] or [int(config["seed"])]


def replica(scope: str, i: int) -> str:
    """Seed i's replica of `scope` (the scope itself for the first seed)."""
    if i == 0:
        return scope
    return f"{scope}_seed{i}" if scope else f"seed{i}"


def replicas(config: dict, scope: str) -> list[str]:
    """Every seed's replica of `scope`, the first seed's (the scope itself) first."""
    return [replica(scope, i) for i in range(len(model_seeds(config)))]


def training_scopes(config: dict) -> list[tuple[str, int]]:
    """(replica, its model seed) of every scope and seed: the contexts models are trained in."""
    seeds = model_seeds(config)
    return [(replica(scope, i), seed) for scope in scopes(config) for i, seed in enumerate(seeds)]


def split_scope(scope: str) -> tuple[str, int]:
    """(the scope, the seed's index) of a replica: `outer2_seed1` -> (`outer2`, 1), `seed1` -> ("", 1)."""
    m = re.fullmatch(r"(outer\d+)?(?:(?:(?<=\d)_|(?<!.))seed([1-9]\d*))?", scope)
    if not m:
        raise ValueError(f"{scope!r} is not a scope (outer{{o}}, seed{{i}}, outer{{o}}_seed{{i}} or the root)")
    return m[1] or DEPLOYED, int(m[2] or 0)


def model_seed(config: dict) -> int:
    """The seed a step's models draw from: its replica's (`model_seed`, set in the step's config
    slice by :func:`seed_overrides`), else the run's `seed`."""
    return int(config["model_seed"]) if "model_seed" in config else int(config["seed"])


# the steps a replica runs with its own seed; `train` keeps the run's `seed` (the frozen encoder's
# cached views are drawn from it) and gets its replica's as `model_seed`
SEEDED_STEPS = ("train", "fit_confidence", "confidence_report", "build_index", "query_neighbors", "fit_video_model")


def seed_overrides(config: dict, step: str, seed: int) -> dict:
    """What a replica with model seed `seed` changes in `step`'s config slice (nothing for the
    run's own seed, so a run with one seed has today's slices, jobs and numbers)."""
    if step not in SEEDED_STEPS or seed == int(config["seed"]):
        return {}
    return {"model_seed": int(seed)} if step == "train" else {"seed": int(seed)}


def scope_split(split: dict, scope: str) -> dict:
    """The scope's test patients, training patients and inner folds (the keys of a single split)."""
    scope = split_scope(scope)[0]
    if scope == DEPLOYED:
        return split["deployed"] if "outer" in split else split
    o = int(scope.removeprefix("outer"))
    if "outer" not in split or not 0 <= o < len(split["outer"]):
        raise ValueError(f"split.json has no outer fold {o} (scope {scope!r}); is split.outer_folds the run's?")
    return split["outer"][o]
