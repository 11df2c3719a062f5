"""Exact balanced choice of k test patients.

The study chose its test patients by evaluating every combination of k patients and keeping
the one whose test set has the most even frame counts over the score classes (the smallest
population standard deviation of the per-class counts). `balanced_split` returns exactly that
combination, fast; `balanced_split_reference` is the literal itertools loop, kept for tests and
the benchmark.

Exactness
---------
* Values are compared as exact integers. For the "std" objective the search minimises
  ``C * sum_c x_c**2 - (sum_c x_c)**2`` (= C**2 * variance, a monotone function of the
  population std) over the test set's per-class counts x; "range" minimises
  ``max_c x_c - min_c x_c``. So there are no floating-point ties or near-ties.
* Ties are broken deterministically: among combinations of equal value, the one whose sorted
  list of positions (in the order of ``counts.index``) is lexicographically smallest wins, i.e.
  the first one ``itertools.combinations`` would reach. Forced test patients are fixed, so this
  is the same as comparing the whole test sets.
* The fast search enumerates the same lexicographic order with a numba kernel, depth first,
  with incremental per-class sums, and skips only subtrees that provably cannot contain that
  lexicographically first optimum (see `_kernels.search_tasks`): non-canonical picks among
  identical patients, subtrees that cannot meet ``min_test_per_class``, and subtrees whose lower
  bound is no better than a value already found. The lower bound: with partial selection S
  and r patients still to pick from the positions after the last pick, every pair difference
  ``x_a - x_b`` (and every ``C*x_c - sum x``) of a completion lies between S's value plus the
  sum of the r smallest and S's value plus the sum of the r largest of that feature over those
  positions (precomputed tables); std = sum of squared pair differences, so the sum of their
  separately minimised squares bounds it from below (range: the max of the distances).
* The search space is split into prefixes (the first t picks, "tasks"), processed in
  parallel by threads (the kernel releases the GIL); each task keeps its own lexicographically
  first best, and the tasks are reduced in lexicographic order. The threads share the best
  (value, task) pair recorded so far (seeded by a swap local search): a subtree is skipped
  only if it can give neither a smaller value nor the same value in an earlier task, so the
  answer does not depend on thread timing (n_evaluated does).
* Cost: the pruned search still has to prove that no combination lexicographically before
  the answer is as good, so the work grows with how early the first optimum sits and how many
  near-optimal combinations exist; the worst case is the exhaustive enumeration (about 40 s
  for C(63, 8) on 2 busy cores), typical COVID-BLUES-shaped cohorts take well under 2 s.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import _kernels as K

log = logging.getLogger(__name__)

OBJECTIVES = {"std": K.OBJ_STD, "range": K.OBJ_RANGE}
METHODS = ("auto", "branch_and_bound", "exhaustive")
SMALL_SEARCH = 20_000  # "auto" scores up to this many combinations with the plain search
_PROGRESS_MIN_COMBINATIONS = 5e7


@dataclass
class SplitResult:
    """The chosen test set and how it was found.

    test_patients / train_patients keep the order of ``counts.index``. objective_value is the
    population std (ddof=0) of test_counts for "std", max - min for "range"; objective_int the
    exact integer that was minimised. n_combinations is C(n_free, k - len(force_test)), the size
    of the free search space; n_evaluated how many complete combinations were scored.
    """

    test_patients: list[str]
    train_patients: list[str]
    objective: str
    objective_value: float
    objective_int: int
    test_counts: dict
    train_counts: dict
    n_combinations: int
    n_evaluated: int
    method: str
    seconds: float
    k: int = 0
    forced_test: list[str] = field(default_factory=list)
    forced_train: list[str] = field(default_factory=list)


@dataclass
class _Problem:
    """Validated input: the free patients' count matrix V and the fixed part of the test set."""

    counts: pd.DataFrame
    patients: list[str]
    V: np.ndarray  # (n_free, C) int64
    free_pos: np.ndarray  # positions of the free patients in counts.index
    base: np.ndarray  # (C,) int64 sum of the forced test patients
    test_forced_pos: list[int]
    kf: int  # patients to pick among the free ones
    k: int
    obj: int
    objective: str
    minc: int
    n_combinations: int
    force_test: list[str]
    force_train: list[str]


def _as_list(x: Iterable | str | None) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return [str(p) for p in x]


def _prepare(counts: pd.DataFrame, k: int, objective: str, force_test, force_train,
             min_test_per_class: int) -> _Problem:
    if not isinstance(counts, pd.DataFrame):
        raise TypeError(f"counts must be a pandas DataFrame, got {type(counts).__name__}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown split objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
    patients = [str(p) for p in counts.index]
    if len(set(patients)) != len(patients):
        dup = sorted({p for p in patients if patients.count(p) > 1})
        raise ValueError(f"duplicate patient ids in counts: {dup}")
    if counts.shape[1] < 1:
        raise ValueError("counts has no class columns")
    vals = counts.to_numpy()
    if vals.size and not np.issubdtype(vals.dtype, np.integer):
        if not np.all(np.isfinite(vals.astype(float))) or np.any(vals != np.round(vals)):
            raise ValueError("counts must be finite integer frame counts")
    vals = vals.astype(np.int64)
    if np.any(vals < 0):
        raise ValueError("counts must be >= 0")
    if len(patients) and np.any(vals.sum(axis=0) == 0):
        empty = [counts.columns[c] for c in np.flatnonzero(vals.sum(axis=0) == 0)]
        raise ValueError(f"class(es) {empty} have no frames in any patient: a balanced test set is "
                         "impossible; remove the class from config['classes'] or add data")
    C = vals.shape[1]
    if C * int((vals.sum(axis=0).astype(object) ** 2).sum()) >= 2**62:
        raise ValueError("frame counts too large for exact int64 arithmetic (C * sum of squared class totals "
                         ">= 2**62)")
    k = int(k)
    min_test_per_class = int(min_test_per_class)
    if min_test_per_class < 0:
        raise ValueError(f"min_test_per_class must be >= 0, got {min_test_per_class}")
    ft, fr = _as_list(force_test), _as_list(force_train)
    known = set(patients)
    unknown = sorted(set(ft + fr) - known)
    if unknown:
        raise ValueError(f"forced patient(s) {unknown} are not in the cohort "
                         f"(split.force_test / split.force_train); known patients: {patients}")
    both = sorted(set(ft) & set(fr))
    if both:
        raise ValueError(f"patient(s) {both} are in both split.force_test and split.force_train")
    ft = [p for p in patients if p in set(ft)]
    fr = [p for p in patients if p in set(fr)]
    if k < 1:
        raise ValueError(f"k (split.k_test) must be >= 1, got {k}")
    if k >= len(patients):
        raise ValueError(f"k (split.k_test) = {k} test patients leaves no training patient: the cohort "
                         f"has {len(patients)} patients")
    if len(ft) > k:
        raise ValueError(f"{len(ft)} patients are forced into the test set ({ft}) but k (split.k_test) = {k}")
    pos = {p: i for i, p in enumerate(patients)}
    forced = set(ft) | set(fr)
    free_pos = np.array([i for i, p in enumerate(patients) if p not in forced], dtype=np.int64)
    kf = k - len(ft)
    if kf > len(free_pos):
        raise ValueError(f"k (split.k_test) = {k} needs {kf} test patients besides the {len(ft)} forced "
                         f"ones, but only {len(free_pos)} patients are free ({len(patients)} in the cohort, "
                         f"{len(fr)} forced into training)")
    V = np.ascontiguousarray(vals[free_pos]) if len(free_pos) else np.zeros((0, vals.shape[1]), np.int64)
    test_forced_pos = [pos[p] for p in ft]
    base = vals[test_forced_pos].sum(axis=0).astype(np.int64) if ft else np.zeros(vals.shape[1], np.int64)
    return _Problem(counts=counts, patients=patients, V=V, free_pos=free_pos, base=base,
                    test_forced_pos=test_forced_pos, kf=kf, k=k, obj=OBJECTIVES[objective],
                    objective=objective, minc=min_test_per_class,
                    n_combinations=math.comb(len(free_pos), kf), force_test=ft, force_train=fr)


def _result(pb: _Problem, combo: Sequence[int] | None, value: int, n_evaluated: int, method: str,
            seconds: float) -> SplitResult:
    if combo is None:
        raise ValueError(
            f"no combination of k={pb.k} test patients gives every class at least "
            f"{pb.minc} test frames (split.min_test_frames_per_class); lower it, raise split.k_test or "
            f"change the forced patients")
    test_pos = sorted(pb.test_forced_pos + [int(pb.free_pos[j]) for j in combo])
    test_set = set(test_pos)
    vals = pb.counts.to_numpy().astype(np.int64)
    x = vals[test_pos].sum(axis=0) if test_pos else np.zeros(vals.shape[1], np.int64)
    tot = vals.sum(axis=0)
    if pb.objective == "std":
        C = x.shape[0]
        objective_value = math.sqrt(value) / C
    else:
        objective_value = float(value)
    cols = list(pb.counts.columns)
    return SplitResult(
        test_patients=[pb.patients[i] for i in test_pos],
        train_patients=[p for i, p in enumerate(pb.patients) if i not in test_set],
        objective=pb.objective,
        objective_value=objective_value,
        objective_int=int(value),
        test_counts={_key(c): int(v) for c, v in zip(cols, x, strict=True)},
        train_counts={_key(c): int(v) for c, v in zip(cols, tot - x, strict=True)},
        n_combinations=pb.n_combinations,
        n_evaluated=int(n_evaluated),
        method=method,
        seconds=float(seconds),
        k=pb.k,
        forced_test=list(pb.force_test),
        forced_train=list(pb.force_train),
    )


def _key(c):
    return int(c) if isinstance(c, (int, np.integer)) else c


def balanced_split_reference(counts: pd.DataFrame, k: int, objective: str = "std", force_test=(),
                             force_train=(), min_test_per_class: int = 0) -> SplitResult:
    """The plain search: every combination from `itertools.combinations`, summed with numpy.

    Same definition and tie-break as `balanced_split` (first combination of minimal exact value).
    """
    t0 = time.perf_counter()
    pb = _prepare(counts, k, objective, force_test, force_train, min_test_per_class)
    C = pb.V.shape[1]
    best, best_combo, n_ev = None, None, 0
    for combo in itertools.combinations(range(len(pb.free_pos)), pb.kf):
        x = pb.base + pb.V[list(combo)].sum(axis=0)
        n_ev += 1
        if np.any(x < pb.minc):
            continue
        if pb.obj == K.OBJ_STD:
            f = int(C * np.dot(x, x) - x.sum() ** 2)
        else:
            f = int(x.max() - x.min())
        if best is None or f < best:
            best, best_combo = f, combo
    return _result(pb, best_combo, best if best is not None else 0, n_ev, "itertools",
                   time.perf_counter() - t0)


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is not None and n_jobs > 0:
        return int(n_jobs)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _features(V: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-patient bound features (see `_kernels.search_tasks`): pair differences, then h_c."""
    n, C = V.shape
    feats = [V[:, a] - V[:, b] for a in range(C) for b in range(a + 1, C)]
    npair = len(feats)
    tot = V.sum(axis=1)
    feats += [C * V[:, c] - tot for c in range(C)]
    return np.ascontiguousarray(np.stack(feats, axis=1).astype(np.int64)), npair


def _suffix_sums(F: np.ndarray, kf: int, largest: bool) -> np.ndarray:
    """T[r, s, p] = sum of the r smallest (largest) values of F[s:, p], for r <= min(kf, n - s)."""
    n, nf = F.shape
    T = np.zeros((kf + 1, n + 1, nf), np.int64)
    for s in range(n):
        m = min(kf, n - s)
        srt = np.sort(F[s:], axis=0)
        if largest:
            srt = srt[::-1]
        T[1:m + 1, s] = np.cumsum(srt[:m], axis=0)
    return T


def _prev_same(V: np.ndarray) -> np.ndarray:
    """For each free patient, the position of the previous identical count vector (or -1)."""
    prev = np.full(len(V), -1, dtype=np.int64)
    last: dict[bytes, int] = {}
    for i, row in enumerate(V):
        key = row.tobytes()
        if key in last:
            prev[i] = last[key]
        last[key] = i
    return prev


def _prefixes(n: int, kf: int, n_jobs: int) -> np.ndarray:
    """Lexicographically ordered task prefixes: the first t picks, t <= kf - 1."""
    t = 0
    while t < kf - 1 and math.comb(n - kf + t, t) < 64 * n_jobs:
        t += 1
    if t == 0:
        return np.zeros((1, 0), dtype=np.int64)
    pre = np.array(list(itertools.combinations(range(n - kf + t), t)), dtype=np.int64)
    return pre.reshape(-1, t)


def _incumbents(pb: _Problem, seed: int = 0, restarts: int = 8) -> list[tuple[int, tuple[int, ...]]]:
    """Achievable (value, combination) pairs from swap local search, to prune the exact search early."""
    n = len(pb.free_pos)
    rng = np.random.default_rng(seed)
    starts = [np.arange(pb.kf, dtype=np.int64)]
    starts += [np.sort(rng.choice(n, pb.kf, replace=False)).astype(np.int64) for _ in range(restarts)]
    found = []
    for st in starts:
        val, combo = K.local_search(pb.V, pb.base, pb.kf, pb.minc, pb.obj, st)
        if val != K.INF:
            found.append((int(val), tuple(int(j) for j in combo)))
    return found


def _fast_search(pb: _Problem, prune: bool, n_jobs: int, progress: bool | None):
    n, C = pb.V.shape
    kf = pb.kf
    if kf == 0:
        x = pb.base
        if np.any(x < pb.minc):
            return None, 0, 0
        return (), int(K.objective_int(x, pb.obj)), 1
    pre = _prefixes(n, kf, n_jobs)
    T = len(pre)
    fv = np.array([K.objective_int(v, pb.obj) for v in pb.V], dtype=np.int64)
    if prune:
        F, npair = _features(pb.V)
        lo = _suffix_sums(F, kf, largest=False)
        hi = _suffix_sums(F, kf, largest=True)
        chi = _suffix_sums(pb.V, kf, largest=True)
        prev = _prev_same(pb.V)
        # pack (value, task) into one int64 when it cannot overflow (see _kernels.search_tasks)
        tot = pb.V.sum(axis=0) + pb.base
        maxf = C * int((tot.astype(object) ** 2).sum()) if pb.obj == K.OBJ_STD else int(tot.max())
        mult = T + 1 if (maxf + 2) * (T + 1) < 2**62 else 1
        gkey = np.array([K.INF], dtype=np.int64)
        rank = {tuple(row): i for i, row in enumerate(pre.tolist())}
        for val, combo in _incumbents(pb):
            # "(val, task tk) is achievable and task tk will record it": tk itself still searches
            # lb <= val, later tasks only lb < val, earlier ones lb <= val (hence the + 1)
            key = val * mult + rank[combo[:pre.shape[1]]] + 1 if mult > 1 else val
            gkey[0] = min(int(gkey[0]), key)
    else:
        F, npair = np.zeros((n, 0), np.int64), 0
        lo = hi = np.zeros((1, 1, 1), np.int64)
        chi = np.zeros((1, 1, 1), np.int64)
        prev = np.full(n, -1, np.int64)
        gkey = np.array([K.INF], dtype=np.int64)
        mult = 1
    out_val = np.full(T, K.INF, dtype=np.int64)
    out_combo = np.zeros((T, kf), dtype=np.int64)
    out_eval = np.zeros(T, dtype=np.int64)
    out_nodes = np.zeros(T, dtype=np.int64)

    # combinations below each task (progress in units of the full search space)
    t = pre.shape[1]
    last = pre[:, -1] if t else np.full(T, -1)
    weight = np.array([math.comb(n - 1 - int(lst), kf - t) for lst in last], dtype=np.float64)
    cw = np.concatenate([[0.0], np.cumsum(weight)])
    # batches of about equal search space, handed to the threads in lexicographic order
    n_batches = max(1, min(T, 64 * n_jobs))
    cuts = np.searchsorted(cw, np.linspace(0, cw[-1], n_batches + 1), side="left")
    bounds = np.unique(np.clip(np.concatenate([[0], cuts, [T]]), 0, T))

    def run(a: int, b: int) -> None:
        K.search_tasks(pb.V, F, fv, pb.base, kf, pb.minc, pb.obj, prune, pre, a, b, npair, lo, hi, chi,
                       prev, gkey, mult, out_val, out_combo, out_eval, out_nodes)

    total = float(pb.n_combinations)
    show = progress if progress is not None else total >= _PROGRESS_MIN_COMBINATIONS
    bar = None
    if show:
        bar = tqdm(total=total, unit="comb", unit_scale=True, desc=f"split C({n},{kf})", mininterval=1.0)
    batches = list(zip(bounds[:-1], bounds[1:], strict=True))
    if n_jobs == 1 or len(batches) == 1:
        for a, b in batches:
            run(a, b)
            if bar is not None:
                bar.update(cw[b] - cw[a])
    else:
        lock = threading.Lock()
        queue = iter(batches)

        def worker() -> None:
            while True:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                run(*item)
                if bar is not None:
                    with lock:
                        bar.update(cw[item[1]] - cw[item[0]])

        with ThreadPoolExecutor(max_workers=n_jobs) as ex:
            futures = [ex.submit(worker) for _ in range(n_jobs)]
            for fu in futures:
                fu.result()
    if bar is not None:
        bar.close()
    best = int(out_val.min())
    n_eval = int(out_eval.sum())
    if best == K.INF:
        return None, 0, n_eval
    ti = int(np.flatnonzero(out_val == best)[0])
    return tuple(int(j) for j in out_combo[ti]), best, n_eval


def balanced_split(counts: pd.DataFrame, k: int, objective: str = "std", force_test=(), force_train=(),
                   min_test_per_class: int = 0, max_combinations: float = 2e10, *, method: str = "auto",
                   n_jobs: int | None = None, progress: bool | None = None) -> SplitResult:
    """Choose the k test patients whose per-class test frame counts are most even. Exact.

    counts: one row per patient (index = patient id, str; the caller orders it, e.g. naturally
        sorted), one column per class (class indices 0..C-1), integer frame counts >= 0.
    k: test-set size, forced test patients included.
    objective: "std" (population std, ddof=0, of the test set's per-class frame counts) or
        "range" (max - min of them).
    force_test / force_train: patient ids that must be in the test / training set.
    min_test_per_class: every class must have at least this many test frames.
    max_combinations: refuse (ValueError) when C(n_free, k - len(force_test)) exceeds it.
    method: "auto" / "branch_and_bound" (pruned, exact) or "exhaustive" (every combination,
        numba); both return the same combination as `balanced_split_reference`, which "auto"
        uses itself for searches of at most SMALL_SEARCH combinations.
    n_jobs: threads (default: the CPUs this process may use). progress: tqdm bar (default: on
        for searches of >= 5e7 combinations).

    Among combinations of equal (exact integer) value, the one with the lexicographically
    smallest sorted list of positions in ``counts.index`` wins: the first that
    ``itertools.combinations`` over the index order reaches.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    t0 = time.perf_counter()
    pb = _prepare(counts, k, objective, force_test, force_train, min_test_per_class)
    if pb.n_combinations > max_combinations:
        raise ValueError(
            f"choosing {pb.kf} of {len(pb.free_pos)} free patients means C({len(pb.free_pos)}, {pb.kf}) = "
            f"{pb.n_combinations:.3g} combinations, more than split.max_combinations = {max_combinations:.3g}. "
            "Make it tractable by lowering split.k_test, forcing patients into the test or training set "
            "(split.force_test / split.force_train), or raising split.max_combinations (the exact "
            "branch-and-bound search usually scores only a small fraction of them, but its time is "
            "not guaranteed)")
    if method == "auto" and pb.n_combinations <= SMALL_SEARCH:
        # a few thousand combinations: numpy in milliseconds, where compiling the numba kernels
        # costs ~15 s of CPU on a fresh install (the same combination, see the reference)
        return balanced_split_reference(counts, k, objective, force_test, force_train, min_test_per_class)
    # threads pay off only for larger searches; an explicit n_jobs is always honoured
    jobs = _n_jobs(n_jobs) if n_jobs is not None or pb.n_combinations >= 200_000 else 1
    prune = method != "exhaustive"
    log.info("balanced split: %s of %d free patients (C = %.4g), objective %s, %d thread(s), %s",
             pb.kf, len(pb.free_pos), pb.n_combinations, objective, jobs,
             "branch and bound" if prune else "exhaustive")
    combo, value, n_eval = _fast_search(pb, prune, jobs, progress)
    name = f"{'branch_and_bound' if prune else 'exhaustive'}(numba, {jobs} thread{'s' if jobs > 1 else ''})"
    res = _result(pb, combo, value, n_eval, name, time.perf_counter() - t0)
    log.info("balanced split: value %.6g after %d of %d combinations in %.2f s; test %s",
             res.objective_value, res.n_evaluated, res.n_combinations, res.seconds, res.test_patients)
    return res
