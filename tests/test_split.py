"""lus_core.split: the exact balanced test-patient search, its options and errors, the CV folds
and the balance_split step."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lus_core.split.folds import natural_sorted, patient_folds
from lus_core.split.search import balanced_split, balanced_split_reference
from lus_core.split.step import run_balance_split

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cohort(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, index=[f"P{i + 1}" for i in range(values.shape[0])],
                        columns=range(values.shape[1]))


@st.composite
def problems(draw, max_n: int = 14):
    """Small cohorts with many ties: few distinct counts, zeros, duplicated patients."""
    n = draw(st.integers(2, max_n))
    C = draw(st.integers(1, 5))
    alphabet = draw(st.sampled_from([[0, 1], [0, 1, 2, 3], [0, 20, 40, 60], [0, 5, 17, 60, 101]]))
    cells = draw(st.lists(st.sampled_from(alphabet), min_size=n * C, max_size=n * C))
    X = np.array(cells, dtype=np.int64).reshape(n, C)
    X[draw(st.integers(0, n - 1)), X.sum(axis=0) == 0] = 1  # no class without frames
    patients = [f"P{i + 1}" for i in range(n)]
    forced = draw(st.lists(st.sampled_from(patients), unique=True, max_size=min(3, n - 1)))
    n_test_forced = draw(st.integers(0, len(forced)))
    force_test, force_train = forced[:n_test_forced], forced[n_test_forced:]
    free = n - len(forced)
    k = draw(st.integers(max(1, len(force_test)), max(1, min(n - 1, len(force_test) + free))))
    objective = draw(st.sampled_from(["std", "range"]))
    min_test = draw(st.sampled_from([0, 0, 1, 2, 40]))
    return cohort(X), k, objective, force_test, force_train, min_test


def outcome(fn, *args, **kw):
    try:
        r = fn(*args, **kw)
    except ValueError as e:
        return "error", str(e).split(":")[0][:20]
    return r.test_patients, r.objective_int, round(r.objective_value, 9), r.test_counts


@SETTINGS
@given(problems(), st.sampled_from([("branch_and_bound", 1), ("branch_and_bound", 2), ("exhaustive", 1), ("exhaustive", 2)]))
def test_fast_equals_reference(problem, how):
    counts, k, objective, force_test, force_train, min_test = problem
    method, n_jobs = how
    kw = dict(objective=objective, force_test=force_test, force_train=force_train, min_test_per_class=min_test)
    ref = outcome(balanced_split_reference, counts, k, **kw)
    fast = outcome(balanced_split, counts, k, method=method, n_jobs=n_jobs, **kw)
    assert fast == ref  # same value, same tie-broken list (or the same error)


@SETTINGS
@given(problems())
def test_options_are_honoured(problem):
    counts, k, objective, force_test, force_train, min_test = problem
    try:
        r = balanced_split(counts, k, objective, force_test, force_train, min_test)
    except ValueError as e:
        assert "min_test_frames_per_class" in str(e)
        return
    assert len(r.test_patients) == k
    assert set(force_test) <= set(r.test_patients)
    assert not set(force_train) & set(r.test_patients)
    assert set(r.test_patients) | set(r.train_patients) == set(counts.index)
    assert not set(r.test_patients) & set(r.train_patients)
    test = counts.loc[r.test_patients].sum()
    assert all(v >= min_test for v in test)
    assert r.test_counts == {c: int(v) for c, v in test.items()}
    assert r.train_counts == {c: int(v) for c, v in (counts.sum() - test).items()}
    expected = np.std(test.to_numpy()) if objective == "std" else np.ptp(test.to_numpy())
    assert math.isclose(r.objective_value, expected, rel_tol=1e-12, abs_tol=1e-12)
    assert r.n_combinations == math.comb(len(counts) - len(force_test) - len(force_train), k - len(force_test))


def test_ties_go_to_the_lexicographically_first_combination():
    # P1..P4 identical: every pair of them ties; the first pair wins
    counts = cohort(np.array([[5, 5], [5, 5], [5, 5], [5, 5], [9, 1]]))
    for fn in (balanced_split, balanced_split_reference):
        r = fn(counts, 2)
        assert r.test_patients == ["P1", "P2"] and r.objective_value == 0.0
    # a later, strictly better combination still wins over earlier ties
    counts = cohort(np.array([[3, 1], [3, 1], [1, 3], [2, 2], [2, 2]]))
    assert balanced_split(counts, 2).test_patients == ["P1", "P3"]
    assert balanced_split(counts, 2, force_train=["P1"]).test_patients == ["P2", "P3"]


def test_small_searches_skip_the_compiled_kernels():
    counts = cohort(np.random.default_rng(1).integers(0, 30, size=(16, 4)))
    small = balanced_split(counts, 4)  # C(16, 4) = 1820: the plain search
    assert small.method == "itertools" and small.n_evaluated == math.comb(16, 4)
    full = balanced_split(counts, 4, method="branch_and_bound")
    assert (small.test_patients, small.objective_int) == (full.test_patients, full.objective_int)


def test_medium_cohort_matches_reference_and_is_deterministic():
    rng = np.random.default_rng(7)
    X = rng.integers(0, 4, size=(22, 4)) * rng.integers(7, 60, size=(22, 4))
    counts = cohort(X)
    ref = balanced_split_reference(counts, 6)
    runs = [balanced_split(counts, 6, n_jobs=j) for j in (1, 2, 2)] + [balanced_split(counts, 6, method="exhaustive")]
    for r in runs:
        assert (r.test_patients, r.objective_int) == (ref.test_patients, ref.objective_int)
    assert runs[-1].n_evaluated == math.comb(22, 6)


def test_larger_search_is_pruned_but_exact():
    rng = np.random.default_rng(3)
    X = np.zeros((40, 4), np.int64)
    for i in range(40):
        for _ in range(6):
            X[i, rng.choice(4, p=[0.35, 0.3, 0.25, 0.1])] += rng.integers(7, 102)
    counts = cohort(X)
    fast = balanced_split(counts, 5)
    full = balanced_split(counts, 5, method="exhaustive")
    assert (fast.test_patients, fast.objective_int) == (full.test_patients, full.objective_int)
    assert fast.n_evaluated < full.n_evaluated == math.comb(40, 5)


def test_large_counts_stay_exact():
    # values where the packed (value, task) key would overflow int64: plain value pruning is used
    rng = np.random.default_rng(5)
    counts = cohort(rng.integers(0, 5, size=(11, 2)) * 10**7 + rng.integers(0, 3, size=(11, 2)))
    ref = balanced_split_reference(counts, 3)
    for n_jobs in (1, 2):
        r = balanced_split(counts, 3, n_jobs=n_jobs)
        assert (r.test_patients, r.objective_int) == (ref.test_patients, ref.objective_int)
    with pytest.raises(ValueError, match="too large"):
        balanced_split(cohort(np.full((4, 2), 2**40)), 1)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(k=6), "k (split.k_test) = 6"),
        (dict(k=0), "must be >= 1"),
        (dict(k=3, force_train=["P1", "P2", "P3"]), "only 2 patients are free"),
        (dict(k=2, force_test=["P9"]), "['P9'] are not in the cohort"),
        (dict(k=2, force_test=["P1"], force_train=["P1", "P2"]), "['P1'] are in both"),
        (dict(k=1, force_test=["P1", "P2"]), "2 patients are forced into the test set"),
        (dict(k=2, min_test_per_class=1000), "split.min_test_frames_per_class"),
        (dict(k=2, objective="var"), "unknown split objective"),
    ],
)
def test_clear_errors(kw, message):
    counts = cohort(np.array([[3, 1], [1, 3], [2, 2], [4, 0], [0, 4]]))
    for fn in (balanced_split, balanced_split_reference):
        with pytest.raises(ValueError, match=None) as e:
            fn(counts, **kw)
        assert message in str(e.value)


def test_class_without_frames_is_named():
    counts = cohort(np.array([[3, 0, 1], [1, 0, 3], [2, 0, 2]]))
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no frames"):
        balanced_split(counts, 1)


def test_too_many_combinations_says_how_to_fix():
    counts = cohort(np.ones((400, 4), np.int64))
    with pytest.raises(ValueError) as e:
        balanced_split(counts, 40)
    msg = str(e.value)
    assert "C(400, 40)" in msg and "split.k_test" in msg and "split.max_combinations" in msg
    assert "split.force_test" in msg


@settings(max_examples=60, deadline=None)
@given(st.integers(4, 30), st.integers(2, 5), st.integers(0, 2**16), st.integers(1, 4))
def test_folds_partition_patients(n_patients, n_folds, seed, n_classes):
    assume(n_folds <= n_patients)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 30, size=n_patients)
    patients = np.repeat([f"P{i}" for i in range(n_patients)], sizes)
    labels = rng.integers(0, n_classes, size=len(patients))
    folds = patient_folds(labels, patients, n_folds, seed)
    assert [f["fold"] for f in folds] == list(range(n_folds))
    vals = [set(f["val_patients"]) for f in folds]
    assert set().union(*vals) == set(patients)
    assert sum(len(v) for v in vals) == n_patients
    for f in folds:
        assert not set(f["val_patients"]) & set(f["train_patients"])
        assert set(f["val_patients"]) | set(f["train_patients"]) == set(patients)
        assert f["val_patients"] == natural_sorted(f["val_patients"])
    # deterministic, and independent of the frame order
    perm = rng.permutation(len(patients))
    assert patient_folds(labels[perm], patients[perm], n_folds, seed) == folds


def test_folds_errors():
    with pytest.raises(ValueError, match="split.n_folds = 5"):
        patient_folds([0, 1, 0], ["a", "b", "c"], 5, 0)
    with pytest.raises(ValueError, match="must be >= 2"):
        patient_folds([0, 1, 0], ["a", "b", "c"], 1, 0)


def test_natural_sort():
    assert natural_sorted(["P10", "P2", "P1", "10", "9", "patient_10", "patient_9"]) == [
        "9", "10", "P1", "P2", "P10", "patient_9", "patient_10"]


def write_frame_index(path, per_patient: dict[str, list[int]]) -> pd.DataFrame:
    rows = []
    for patient, labels in per_patient.items():
        for i, label in enumerate(labels):
            rows.append({"video": f"v_{patient}_{i // 10}", "patient": patient, "frame": i, "label": label,
                         "h5": f"frames/v_{patient}_{i // 10}.h5", "row": i % 10})
    df = pd.DataFrame(rows)
    df.insert(0, "frame_id", range(len(df)))
    df.to_csv(path, index=False)
    return df


def step_config(**split):
    base = {"k_test": 3, "outer_folds": 1, "objective": "std", "force_test": [], "force_train": [], "min_test_frames_per_class": 0,
            "n_folds": 3, "max_combinations": 2e10}
    return {"seed": 42, "classes": [0, 1, 2, 3], "results": "x", "split": {**base, **split}}


def test_run_balance_split_writes_the_contract(tmp_path):
    rng = np.random.default_rng(0)
    ids = ["P10", "P2", "P1", "P11", "P3", "P20", "P4", "P5", "P6", "P7", "P8", "P9"]
    per_patient = {p: list(rng.integers(0, 4, size=int(rng.integers(5, 40)))) for p in ids}
    frames = write_frame_index(tmp_path / "frame_index.csv", per_patient)
    config = step_config(force_test=["P2"], force_train=["P1"])
    out = run_balance_split(str(tmp_path / "frame_index.csv"), str(tmp_path / "split.json"), config)
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved == out
    assert set(saved) >= {"test_patients", "train_patients", "folds", "objective", "objective_value", "test_counts",
                          "train_counts", "n_combinations", "method", "seconds", "k", "seed", "config"}
    test, train = saved["test_patients"], saved["train_patients"]
    assert test == natural_sorted(test) and train == natural_sorted(train)
    assert len(test) == 3 and "P2" in test and "P1" in train
    assert set(test) | set(train) == set(ids) and not set(test) & set(train)
    assert json.loads(saved["config"]) == config and saved["k"] == 3 and saved["seed"] == 42
    assert saved["n_combinations"] == math.comb(10, 2)
    counted = frames[frames.patient.isin(test)].label.value_counts()
    assert saved["test_counts"] == {str(c): int(counted.get(c, 0)) for c in range(4)}
    assert sum(saved["train_counts"].values()) == int((~frames.patient.isin(test)).sum())
    # same answer as the plain search on the same counts
    counts = pd.crosstab(frames.patient, frames.label).reindex(natural_sorted(ids)).fillna(0).astype(int)
    ref = balanced_split_reference(counts, 3, force_test=["P2"], force_train=["P1"])
    assert ref.test_patients == test
    assert len(saved["folds"]) == 3
    seen = set()
    for i, f in enumerate(saved["folds"]):
        assert f["fold"] == i
        assert not set(f["val_patients"]) & set(test) and not set(f["train_patients"]) & set(test)
        assert set(f["val_patients"]) | set(f["train_patients"]) == set(train)
        seen |= set(f["val_patients"])
    assert seen == set(train)
    # deterministic
    again = run_balance_split(str(tmp_path / "frame_index.csv"), str(tmp_path / "split2.json"), config)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in out.items() if k != "seconds"}


def test_run_balance_split_errors(tmp_path):
    csv = str(tmp_path / "frame_index.csv")
    write_frame_index(csv, {"A": [0, 1, 2] * 3, "B": [0, 1, 2], "C": [2, 1], "D": [0, 0, 1]})
    with pytest.raises(ValueError, match=r"class 3 \(index 3\) has no frames"):
        run_balance_split(csv, str(tmp_path / "s.json"), step_config(k_test=1))
    cfg = step_config(k_test=1)
    cfg["classes"] = [0, 1, 2]
    with pytest.raises(ValueError, match="split.n_folds = 3 folds need at least"):
        run_balance_split(csv, str(tmp_path / "s.json"), {**cfg, "split": {**cfg["split"], "k_test": 2}})
    with pytest.raises(ValueError, match=r"\['Z'\] are not in the cohort"):
        run_balance_split(csv, str(tmp_path / "s.json"), {**cfg, "split": {**cfg["split"], "force_test": ["Z"]}})
    cfg["classes"] = [0, 1]
    with pytest.raises(ValueError, match="class indices 0..1"):
        run_balance_split(csv, str(tmp_path / "s.json"), cfg)
    assert not (tmp_path / "s.json").exists()
