"""Every patient tested once: K disjoint, balanced test groups (nested patient cross-validation).

With `split.outer_folds` K > 1 the cohort is cut into K test groups of (nearly) equal size, each
chosen by the same exact balanced search as a single test set (lus_core.split.search), one after
the other among the patients not yet tested: group 1 is the most balanced k-subset of the cohort,
group 2 of the rest, and so on; the last group is what remains (`method`: remainder). `split.force_train` patients are
never tested (they train in every group's models). Each outer fold o tests group o and has inner
folds on its training patients; the deployed scope trains on every patient (its inner folds cover
the whole cohort, and no patient is held out). See lus_core.split.scopes for how steps read them.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lus_core.split.folds import check_folds, natural_sorted, patient_folds
from lus_core.split.search import SplitResult, balanced_split

log = logging.getLogger(__name__)


def group_entry(frames: pd.DataFrame, counts: pd.DataFrame, test, res, n_folds: int, seed: int) -> dict:
    """A test group (its search result `res`) and the inner folds on the other patients, as
    split.json holds them; counts are over the whole cohort (`counts`, patient x class)."""
    test = natural_sorted(test)
    train = natural_sorted(set(counts.index) - set(test))
    train_frames = frames[frames["patient"].astype(str).isin(set(train))]
    folds = patient_folds(train_frames["label"].to_numpy(np.int64), train_frames["patient"].to_numpy(),
                          n_folds, seed)
    check_folds(folds, train, test)
    return {
        "test_patients": test,
        "train_patients": train,
        "folds": folds,
        "objective": res.objective,
        "objective_value": res.objective_value,
        "test_counts": {str(c): int(n) for c, n in counts.loc[test].sum().items()},
        "train_counts": {str(c): int(n) for c, n in counts.loc[train].sum().items()},
        "n_combinations": res.n_combinations,
        "n_evaluated": res.n_evaluated,
        "method": res.method,
        "seconds": round(res.seconds, 4),
    }


def remainder_group(counts: pd.DataFrame, patients: list[str], objective: str) -> SplitResult:
    """The last outer group (every patient not yet tested), described as a search result."""
    x = counts.loc[patients].sum().to_numpy(np.int64)
    value = float(np.std(x)) if objective == "std" else float(x.max() - x.min())
    rest = [p for p in counts.index if p not in set(patients)]
    return SplitResult(test_patients=list(patients), train_patients=rest, objective=objective, objective_value=value,
                       objective_int=0, test_counts={}, train_counts={}, n_combinations=1, n_evaluated=1,
                       method="remainder", seconds=0.0, k=len(patients))


def group_sizes(n: int, k: int) -> list[int]:
    """k group sizes that differ by at most one and add up to n, the smaller ones first: the
    first search chooses among the most patients, so it gets the smaller group (52 patients in
    5 groups: C(52, 10) = 1.6e10 combinations, not C(52, 11) = 6.0e10)."""
    return [n // k + (1 if i >= k - n % k else 0) for i in range(k)]


def outer_split(frames: pd.DataFrame, counts: pd.DataFrame, sp: dict, seed: int, n_jobs=None) -> dict:
    """split.json for `split.outer_folds` K > 1: `outer` (one entry per test group, as a single
    split's keys) and `deployed` (every patient training, folds over the whole cohort)."""
    k_outer = int(sp["outer_folds"])
    if sp["force_test"]:
        raise ValueError("split.force_test: with split.outer_folds > 1 every patient is tested once; "
                         "use split.force_train to keep patients out of every test group")
    never = {str(p) for p in sp["force_train"]}
    testable = [p for p in counts.index if p not in never]
    if len(testable) < k_outer:
        raise ValueError(f"split.outer_folds = {k_outer} test groups need at least {k_outer} patients that can "
                         f"be tested, the cohort has {len(testable)}")
    outer, remaining = [], list(testable)
    for o, size in enumerate(group_sizes(len(testable), k_outer)):
        if o == k_outer - 1:  # the last group is what remains: nothing to choose
            res = remainder_group(counts, remaining, str(sp["objective"]))
            entry = group_entry(frames, counts, res.test_patients, res, int(sp["n_folds"]), seed)
            outer.append({"outer": o, **entry})
            break
        left = counts.loc[remaining]
        # balance over the scores the untested patients still have (earlier groups may hold every
        # frame of a rare score)
        left = left.loc[:, left.sum() > 0]
        res = balanced_split(
            left, k=size, objective=str(sp["objective"]),
            min_test_per_class=int(sp["min_test_frames_per_class"]) if o < k_outer - 1 else 0,
            max_combinations=float(sp["max_combinations"]), n_jobs=n_jobs,
        )
        entry = group_entry(frames, counts, res.test_patients, res, int(sp["n_folds"]), seed)
        outer.append({"outer": o, **entry})
        remaining = [p for p in remaining if p not in set(res.test_patients)]
        log.info("balance_split: outer fold %d tests %s (%s = %.4g)", o, entry["test_patients"], res.objective,
                 res.objective_value)
    everyone = natural_sorted(counts.index)
    folds = patient_folds(frames["label"].to_numpy(np.int64), frames["patient"].to_numpy(), int(sp["n_folds"]), seed)
    check_folds(folds, everyone, [])
    return {"outer_folds": k_outer, "outer": outer,
            "deployed": {"test_patients": [], "train_patients": everyone, "folds": folds}}
