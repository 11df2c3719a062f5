"""Benchmark of the exact balanced test-patient search (lus_core.split).

Run from the repository root:  .venv/bin/python bench/split.py [--seeds N] [--verify]

1. n=24, k=8 (735,471 combinations): the plain itertools + numpy reference
   (`balanced_split_reference`, one combination at a time) against the numba search, both
   exhaustive (every combination scored); beside them a block-vectorised numpy variant and the
   branch-and-bound search (which prunes). All must return the same test set.
2. C(63, 8) = 3.87e9 combinations on counts shaped like COVID-BLUES (63 patients, 6 videos of
   7-101 frames each, one video-level score 0-3, score 3 rare; seeded): wall time of the exact
   branch-and-bound search. --seeds N also times N further cohorts; --verify checks seed 0
   against the exhaustive numba search (minutes on 2 cores).
3. When ../shared/data/covid-blues exists: the answer on the real 40 COVID-BLUES patients, k=8.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lus_core.runs.bench_records import record  # noqa: E402
from lus_core.split.folds import natural_sorted  # noqa: E402
from lus_core.split.search import balanced_split, balanced_split_reference  # noqa: E402

SCORE_P = [0.4, 0.3, 0.2, 0.1]  # video-level score 0..3, score 3 rare
GOAL_SPEEDUP = 100
GOAL_C63 = 10.0
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "covid-blues"


def simulated_counts(n_patients: int, seed: int, videos: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = np.zeros((n_patients, 4), dtype=np.int64)
    for i in range(n_patients):
        for _ in range(videos):
            X[i, rng.choice(4, p=SCORE_P)] += rng.integers(7, 102)
    return pd.DataFrame(X, index=[f"P{i + 1}" for i in range(n_patients)], columns=range(4))


def numpy_chunked(counts: pd.DataFrame, k: int, chunk: int = 1 << 16) -> tuple[list[str], int]:
    """A vectorised variant of the reference: itertools combinations in blocks, numpy sums per block.
    Same exact integer objective and tie-break (first minimum)."""
    V = counts.to_numpy(np.int64)
    C = V.shape[1]
    it = itertools.combinations(range(len(V)), k)
    best, best_combo = None, None
    while True:
        block = np.fromiter(itertools.islice(it, chunk), dtype=np.dtype((np.int64, k)))
        if not len(block):
            break
        x = V[block].sum(axis=1)
        f = C * (x * x).sum(axis=1) - x.sum(axis=1) ** 2
        i = int(np.argmin(f))
        if best is None or f[i] < best:
            best, best_combo = int(f[i]), block[i]
    return [str(counts.index[j]) for j in best_combo], best


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    r = fn(*args, **kw)
    return r, time.perf_counter() - t0


def real_counts(root: Path) -> pd.DataFrame:
    import cv2

    sev = pd.read_csv(root / "severity.csv")
    rows = []
    for mp4 in sorted((root / "lus_videos").glob("*.mp4")):
        cap = cv2.VideoCapture(str(mp4))
        rows.append((mp4.stem, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))))
        cap.release()
    videos = pd.DataFrame(rows, columns=["video_file", "frames"]).merge(sev, on="video_file", how="inner")
    videos["patient"] = [re.search(r"patient_(\d+)_", v).group(1) for v in videos["video_file"]]
    videos["score"] = videos["Severity Score"].astype(int)
    counts = videos.pivot_table(index="patient", columns="score", values="frames", aggfunc="sum", fill_value=0)
    return counts.reindex(natural_sorted(counts.index)).reindex(columns=range(4), fill_value=0).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=0, help="time this many further simulated 63-patient cohorts")
    ap.add_argument("--verify", action="store_true", help="check C(63,8) against the exhaustive numba search")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0))
    print(f"split bench: {cpus} CPU(s) available to this process")

    # compile (or load the numba cache) outside the timings
    warm = simulated_counts(12, 99)
    for method in ("auto", "exhaustive"):
        for obj in ("std", "range"):
            balanced_split(warm, 4, obj, method=method, progress=False)

    # 1. n=24, k=8, both exhaustive
    c24 = simulated_counts(24, 0)
    ref, t_ref = timed(balanced_split_reference, c24, 8)
    exh, t_exh = timed(balanced_split, c24, 8, method="exhaustive", progress=False)
    bnb, t_bnb = timed(balanced_split, c24, 8, progress=False)
    (vec_patients, vec_value), t_vec = timed(numpy_chunked, c24, 8)
    for r in (exh, bnb):
        assert (r.test_patients, r.objective_int) == (ref.test_patients, ref.objective_int), (r, ref)
    assert (vec_patients, vec_value) == (ref.test_patients, ref.objective_int)
    assert exh.n_evaluated == ref.n_evaluated == math.comb(24, 8)
    speedup = t_ref / t_exh
    print(f"n=24 k=8 ({math.comb(24, 8):,} combinations), same answer {ref.test_patients} std={ref.objective_value:.4f}")
    print(f"  itertools reference (exhaustive)  {t_ref:8.3f} s")
    print(f"  numpy, blocks of itertools combinations (exhaustive)  {t_vec:8.3f} s")
    print(f"  numba exhaustive ({exh.method})  {t_exh:8.4f} s   speed-up {speedup:8.1f}x "
          f"(vs the numpy blocks: {t_vec / t_exh:.1f}x)")
    print(f"  numba branch-and-bound (prunes; scored {bnb.n_evaluated:,} combinations)  {t_bnb:8.4f} s   "
          f"speed-up {t_ref / t_bnb:8.1f}x")

    # 2. C(63, 8) on COVID-BLUES-shaped counts
    c63 = simulated_counts(63, 0)
    r63, t63 = timed(balanced_split, c63, 8, progress=False)
    print(f"C(63,8) = {r63.n_combinations:,} combinations, simulated COVID-BLUES-shaped counts (seed 0, "
          f"frames per score {c63.sum().tolist()}):")
    print(f"  exact branch-and-bound {t63:.3f} s, scored {r63.n_evaluated:,} complete combinations; test "
          f"{r63.test_patients}, counts {list(r63.test_counts.values())}, std {r63.objective_value:.4f}")
    others = []
    for seed in range(1, args.seeds + 1):
        r, t = timed(balanced_split, simulated_counts(63, seed), 8, progress=False)
        others.append(t)
        print(f"  seed {seed}: {t:.3f} s, std {r.objective_value:.4f}, scored {r.n_evaluated:,}")
    if others:
        print(f"  over {len(others) + 1} cohorts: max {max([t63] + others):.3f} s, median "
              f"{float(np.median([t63] + others)):.3f} s")
    if args.verify:
        full, t_full = timed(balanced_split, c63, 8, method="exhaustive", progress=True)
        assert (full.test_patients, full.objective_int) == (r63.test_patients, r63.objective_int)
        print(f"  verified against the exhaustive numba search ({t_full:.1f} s)")

    # 3. real COVID-BLUES
    real = None
    if REAL.exists():
        counts = real_counts(REAL)
        rr, tr = timed(balanced_split, counts, 8, progress=False)
        real = {"patients": len(counts), "frames_per_score": counts.sum().tolist(), "test_patients": rr.test_patients,
                "test_counts": list(rr.test_counts.values()), "std": round(rr.objective_value, 6),
                "seconds": round(tr, 3)}
        print(f"real COVID-BLUES: {len(counts)} patients, frames per score {counts.sum().tolist()}, k=8 -> test "
              f"patients {rr.test_patients}, test frames per score {list(rr.test_counts.values())}, std "
              f"{rr.objective_value:.4f} ({tr:.2f} s, C(40,8) = {rr.n_combinations:,})")

    out = {
        "bench": "split",
        "speedup_vs_itertools": round(speedup, 1),
        "speedup_vs_itertools_bnb": round(t_ref / t_bnb, 1),
        "speedup_vs_numpy_blocks": round(t_vec / t_exh, 1),
        "goal_speedup": GOAL_SPEEDUP,
        "c63_8_seconds": round(t63, 3),
        "goal_c63_8_seconds": GOAL_C63,
        "cpus": cpus,
        "met": bool(speedup >= GOAL_SPEEDUP and t63 <= GOAL_C63),
    }
    if real is not None:
        out["real_covid_blues"] = real
    record(out)


if __name__ == "__main__":
    main()
