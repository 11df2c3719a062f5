"""Benchmark: annoy neighbour search vs exact search, and a fixed t-SNE map vs the study's refit per query.

Run from the repository root:  .venv/bin/python bench/similarity.py [--quick]

1. Annoy at 30,000 x 512 on clustered data (Gaussian clusters with a 32-dim latent structure each
   plus isotropic noise: uniform noise in 512-d is unrealistically hard for any ANN index):
   per-query latency p50/p99 of ``SimilarityIndex.query_items`` (single vectors, k = 10, a new
   patient, so no own-patient filtering) and tie-aware recall@10 against exact numpy search,
   for a small grid of n_trees x search_k; the reported setting is the fastest (p50) whose
   recall beats the goal by a 0.02 margin.  Informational: latency for a *training* frame's query, which must
   skip its own patient's frames (~500 here).
2. Archive scale, 300,000 x 512 (``--archive-only`` runs just this part): a Gaussian mixture of
   300 clusters of unequal size (Dirichlet weights), each with its own random 48-dim subspace
   and a decaying spread spectrum (anisotropic, like CNN embeddings of similar frames), plus
   isotropic noise; centres close enough that clusters overlap.  One annoy build (n_trees
   fixed; build time and the build's peak RSS printed, and the index size in memory), a
   search_k grid, recall@10 against exact numpy search (blocked) on a few hundred queries.
   ``--on-disk`` builds with annoy's on_disk_build (index in a file, not in RAM).
3. t-SNE on a small reference set (n = 1000 x 512): the study's approach (refit t-SNE on
   reference + query for every query) vs ours (fit once, place the query with
   ``TSNEEmbedding.transform`` and look it up in an annoy index over the 2-D map), per query,
   measured in the same run.  Numba functions are warmed up before timing.

Last line: one JSON object.  Timings on a shared CPU are noisy (p99 in particular).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.getcwd())  # run from the repo root without installing

from lus_core.runs.bench_records import record  # noqa: E402
from lus_core.similarity.features import fit_tsne, place_on_tsne_map  # noqa: E402
from lus_core.similarity.index import (  # noqa: E402
    IndexedFrames,
    IndexSettings,
    SimilarityIndex,
    build_annoy,
    exact_search,
    recall_at_k,
)

GOAL_P50_MS = 1.0
GOAL_RECALL = 0.95
K = 10
# the reported setting must beat the recall goal by this margin, so that it does not pass
# by a hair on this one synthetic data set
RECALL_MARGIN = 0.02
# archive scale: one build (building costs minutes there); search_k is the knob that is tuned
ARCHIVE_TREES = 20


def clustered(
    n: int,
    dim: int,
    seed: int,
    n_clusters: int = 50,
    latent: int = 32,
    within: float = 2.0,
    noise: float = 0.2,
):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    basis = rng.normal(size=(n_clusters, latent, dim)) * (within / np.sqrt(latent))
    cluster = rng.integers(0, n_clusters, n)
    z = rng.normal(size=(n, latent))
    x = centres[cluster] + np.einsum("nl,nld->nd", z, basis[cluster]) + noise * rng.normal(size=(n, dim))
    return x.astype(np.float32), cluster


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def time_queries(index: SimilarityIndex, queries, patients, k: int, search_k: int):
    lat = np.empty(len(queries))
    dists = np.empty((len(queries), k))
    for i, v in enumerate(queries):
        p = None if patients is None else patients[i : i + 1]
        t = time.perf_counter()
        _, d = index.query_items(v, p, k, search_k=search_k)
        lat[i] = time.perf_counter() - t
        dists[i] = d[0]
    return lat * 1000, dists


def bench_annoy(n: int, dim: int, n_queries: int, trees, search_ks) -> dict:
    x, _ = clustered(n + n_queries, dim, seed=0)
    base, queries = x[:n], x[n:]
    rng = np.random.default_rng(1)
    patients = np.array([f"p{i:02d}" for i in rng.integers(0, 60, n)])

    t = time.perf_counter()
    _, exact_d = exact_search(base, queries, K, "euclidean")
    exact_s = time.perf_counter() - t
    log(f"exact numpy search: {1000 * exact_s / n_queries:.2f} ms/query ({n_queries} queries, {n} x {dim})")

    grid = []
    best = None
    for n_trees in trees:
        t = time.perf_counter()
        index = SimilarityIndex.build("embedding", base, IndexedFrames(np.arange(n), patients, np.zeros(n, int)),
                                      IndexSettings("euclidean", n_trees, seed=0))
        build_s = time.perf_counter() - t
        for sk in search_ks:
            lat, d = time_queries(index, queries, None, K, sk)
            row = {
                "n_trees": n_trees,
                "search_k": sk,
                "build_s": round(build_s, 2),
                "p50_ms": round(float(np.percentile(lat, 50)), 4),
                "p99_ms": round(float(np.percentile(lat, 99)), 4),
                "recall_at_10": round(recall_at_k(d, exact_d), 4),
            }
            grid.append(row)
            log(json.dumps(row))
            ok = row["recall_at_10"] >= GOAL_RECALL + RECALL_MARGIN
            if ok and (best is None or row["p50_ms"] < best["p50_ms"]):
                best = {**row, "index": index}
    if best is None:  # nothing reached goal + margin: report the highest recall
        best = max(grid, key=lambda r: r["recall_at_10"])
        best = {**best, "index": None}

    # a training frame's query: its own patient's ~n/60 frames are skipped (more work per query)
    train_p50 = None
    if best["index"] is not None:
        own = patients[:200]
        lat, _ = time_queries(best["index"], base[:200], own, K, best["search_k"])
        train_p50 = round(float(np.percentile(lat, 50)), 3)
        log(f"training-frame queries (own patient skipped, ~{n // 60} own frames): p50 {train_p50} ms")
    best.pop("index")
    return {
        "best": best,
        "grid": grid,
        "exact_ms_per_query": round(1000 * exact_s / n_queries, 3),
        "train_query_p50_ms": train_p50,
    }


def archive_mixture(
    n: int,
    dim: int,
    seed: int,
    n_clusters: int = 300,
    latent: int = 48,
    decay: float = 0.8,
    centre_scale: float = 0.35,
    noise: float = 0.08,
):
    """Archive-like embeddings: clusters of unequal size, each spread anisotropically in its own subspace."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    cluster = rng.choice(n_clusters, n, p=weights)
    centres = centre_scale * rng.standard_normal((n_clusters, dim), dtype=np.float32)
    spectrum = (3.0 * np.arange(1, latent + 1) ** -decay).astype(np.float32)
    x = noise * rng.standard_normal((n, dim), dtype=np.float32)
    for c in range(n_clusters):
        rows = np.flatnonzero(cluster == c)
        basis, _ = np.linalg.qr(rng.standard_normal((dim, latent)))  # orthonormal columns
        z = rng.standard_normal((len(rows), latent), dtype=np.float32) * (spectrum * rng.uniform(0.5, 1.5))
        x[rows] += centres[c] + z @ basis.T.astype(np.float32)
    return x, cluster


def peak_rss_mb() -> float:
    """This process's peak resident memory since the last :func:`reset_peak_rss` (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def bench_archive(n: int, dim: int, n_queries: int, n_trees: int, search_ks, on_disk: bool) -> dict:
    t = time.perf_counter()
    x, _ = archive_mixture(n + n_queries, dim, seed=3)
    base, queries = x[:n], x[n:]
    log(f"archive: {n} x {dim} mixture generated in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    _, exact_d = exact_search(base, queries, K, "euclidean", chunk=32)
    exact_s = time.perf_counter() - t
    log(f"archive: exact numpy search {1000 * exact_s / n_queries:.1f} ms/query ({n_queries} queries)")

    with tempfile.TemporaryDirectory(prefix="lus_bench_") as tmp:
        disk = os.path.join(tmp, "archive.ann") if on_disk else None
        reset_peak_rss()
        rss0 = rss_mb()
        t = time.perf_counter()
        annoy = build_annoy(base, "euclidean", n_trees, seed=0, on_disk=disk)
        build_s = time.perf_counter() - t
        build_peak = peak_rss_mb() - rss0
        index_mb = (os.path.getsize(disk) if disk else _annoy_size(annoy, tmp)) / 2**20
        log(f"archive: build {build_s:.1f} s ({n_trees} trees), peak RSS +{build_peak:.0f} MB during "
            f"the build, index {index_mb:.0f} MB ({'on disk' if on_disk else 'in memory'})")
        index = SimilarityIndex(annoy, _ids(n), {"space": "embedding", "metric": "euclidean", "dim": dim,
                                                 "n_trees": n_trees})
        grid, best = [], None
        for sk in search_ks:
            lat, d = time_queries(index, queries, None, K, sk)
            row = {"search_k": sk, "p50_ms": round(float(np.percentile(lat, 50)), 4),
                   "p99_ms": round(float(np.percentile(lat, 99)), 4),
                   "recall_at_10": round(recall_at_k(d, exact_d), 4)}
            grid.append(row)
            log("archive: " + json.dumps(row))
            if row["recall_at_10"] >= GOAL_RECALL + RECALL_MARGIN and (best is None or row["p50_ms"] < best["p50_ms"]):
                best = row
        annoy.unload()
    if best is None:
        best = max(grid, key=lambda r: r["recall_at_10"])
    return {"n": n, "dim": dim, "n_queries": n_queries, "n_trees": n_trees, "build_s": round(build_s, 1),
            "build_peak_rss_mb": round(build_peak), "index_mb": round(index_mb), "on_disk_build": on_disk,
            "exact_ms_per_query": round(1000 * exact_s / n_queries, 2), "best": best, "grid": grid}


def _annoy_size(annoy, tmp: str) -> int:
    path = os.path.join(tmp, "size.ann")
    annoy.save(path, prefault=False)  # annoy re-maps the saved file; its size is the index's size
    return os.path.getsize(path)


def _ids(n: int):
    import pandas as pd

    return pd.DataFrame({"item": np.arange(n), "frame_id": np.arange(n), "patient": "p", "label": 0})


def bench_tsne(n_ref: int, dim: int, n_refit: int, n_ours: int) -> dict:
    x, _ = clustered(n_ref + n_ours, dim, seed=2)
    ref, queries = x[:n_ref], x[n_ref:]
    patients = np.array([f"p{i % 20}" for i in range(n_ref)])
    # warm up numba / FFT code paths so neither side pays for compilation
    warm = fit_tsne(ref[:200], 30, seed=0)
    place_on_tsne_map(warm, queries[:2], snap_duplicates=False)

    # the study: refit t-SNE on reference + query, then look up the query's neighbours in the map
    refit = []
    for q in queries[:n_refit]:
        t = time.perf_counter()
        emb = np.asarray(fit_tsne(np.vstack([ref, q[None]]), 30, seed=0))
        d = np.linalg.norm(emb[:-1] - emb[-1], axis=1)
        np.argsort(d)[:K]
        refit.append(time.perf_counter() - t)
    log(f"refit t-SNE per query (n = {n_ref}): {np.mean(refit):.2f} s/query")

    # ours: fit once, transform + annoy per query
    t = time.perf_counter()
    tsne = fit_tsne(ref, 30, seed=0)
    fit_once_s = time.perf_counter() - t
    index = SimilarityIndex.build("tsne", np.asarray(tsne, dtype=np.float32),
                                  IndexedFrames(np.arange(n_ref), patients, np.zeros(n_ref, int)),
                                  IndexSettings("euclidean", 20, seed=0), tsne=tsne)
    single = []
    for q in queries[:n_ours]:
        t = time.perf_counter()
        index.query_items(place_on_tsne_map(tsne, q[None], snap_duplicates=False), None, K)
        single.append(time.perf_counter() - t)
    t = time.perf_counter()
    index.query_items(place_on_tsne_map(tsne, queries, snap_duplicates=False), None, K)
    batched = (time.perf_counter() - t) / len(queries)
    log(
        f"ours: fit once {fit_once_s:.2f} s, then {np.median(single) * 1000:.1f} ms/query single, "
        f"{batched * 1000:.2f} ms/query in a batch of {len(queries)}"
    )
    return {
        "n_ref": n_ref,
        "dim": dim,
        "refit_s_per_query": float(np.mean(refit)),
        "fit_once_s": fit_once_s,
        "ours_single_s_per_query": float(np.median(single)),
        "ours_batched_s_per_query": batched,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    ap.add_argument("--archive-only", action="store_true", help="only the 300,000 x 512 part")
    ap.add_argument("--on-disk", action="store_true", help="archive index built with annoy's on_disk_build")
    args = ap.parse_args()
    result = {"bench": "similarity"}
    met = []
    if not args.archive_only:
        if args.quick:
            annoy = bench_annoy(3000, 64, 200, trees=[20], search_ks=[-1, 1000])
            tsne = bench_tsne(300, 64, n_refit=1, n_ours=5)
        else:
            annoy = bench_annoy(30000, 512, 1000, trees=[20, 50], search_ks=[-1, 500, 1000, 2000])
            tsne = bench_tsne(1000, 512, n_refit=2, n_ours=20)
        best = annoy["best"]
        ours = tsne["ours_single_s_per_query"]
        result.update({
            "n": 3000 if args.quick else 30000,
            "dim": 64 if args.quick else 512,
            "n_trees": best["n_trees"],
            "search_k": best["search_k"],
            "p50_ms": best["p50_ms"],
            "p99_ms": best["p99_ms"],
            "recall_at_10": best["recall_at_10"],
            "build_s": best["build_s"],
            "exact_ms_per_query": annoy["exact_ms_per_query"],
            "train_query_p50_ms": annoy["train_query_p50_ms"],
            "tsne_n_ref": tsne["n_ref"],
            "tsne_refit_s_per_query": round(tsne["refit_s_per_query"], 3),
            "tsne_fit_once_s": round(tsne["fit_once_s"], 3),
            "ours_s_per_query": round(ours, 5),
            "ours_batched_s_per_query": round(tsne["ours_batched_s_per_query"], 5),
            "speedup_vs_refit": round(tsne["refit_s_per_query"] / ours, 1),
        })
        met.append(best["p50_ms"] <= GOAL_P50_MS and best["recall_at_10"] >= GOAL_RECALL)
    if args.quick:
        arch = bench_archive(20000, 64, 100, n_trees=10, search_ks=[1000], on_disk=args.on_disk)
    else:
        arch = bench_archive(300000, 512, 300, n_trees=ARCHIVE_TREES, search_ks=[500, 1000, 2000, 4000],
                             on_disk=args.on_disk)
    ab = arch["best"]
    result.update({
        "archive_n": arch["n"], "archive_dim": arch["dim"], "archive_n_trees": arch["n_trees"],
        "archive_search_k": ab["search_k"], "archive_p50_ms": ab["p50_ms"], "archive_p99_ms": ab["p99_ms"],
        "archive_recall_at_10": ab["recall_at_10"], "archive_build_s": arch["build_s"],
        "archive_build_peak_rss_mb": arch["build_peak_rss_mb"], "archive_index_mb": arch["index_mb"],
        "archive_on_disk_build": arch["on_disk_build"], "archive_exact_ms_per_query": arch["exact_ms_per_query"],
    })
    met.append(ab["p50_ms"] <= GOAL_P50_MS and ab["recall_at_10"] >= GOAL_RECALL)
    result.update({"goal_p50_ms": GOAL_P50_MS, "goal_recall": GOAL_RECALL, "recall_margin": RECALL_MARGIN,
                   "met": bool(all(met))})
    record(result)


if __name__ == "__main__":
    main()
