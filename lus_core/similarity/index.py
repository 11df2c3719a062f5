"""Annoy indexes over training frames, queried for the nearest frames of *other* patients.

On disk (docs/architecture.md): ``{space}.ann`` (annoy), ``{space}.ids.csv`` (``item``,
``frame_id``, ``patient``, ``label``), ``{space}.json`` (dim, metric, n_trees, space params,
config) and for ``tsne`` the pickled openTSNE map ``{space}.tsne.pkl``.

A query never returns a frame of the query's own patient: annoy is asked for more than k
neighbours and the own-patient ones are dropped.  Asking for ``k + (frames of that patient in
the index)`` guarantees k others whenever the index holds them (annoy returns distinct items);
if annoy returns fewer (a small ``search_k``), the request doubles until k are found or the
index is exhausted.  Missing neighbours are padded with frame id -1, label -1, distance NaN.

A *diverse* query (:meth:`SimilarityIndex.query_diverse`) keeps at most one neighbour per group
(``video`` or ``patient`` of the indexed frame, ``DIVERSITY``): a clinician sees several cases,
not ten consecutive frames of one video.

Distances are annoy's: euclidean, or for ``angular`` sqrt(2 - 2 cos), i.e. the euclidean
distance between unit vectors.  :func:`exact_search` gives the same quantity in numpy.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from annoy import AnnoyIndex

from lus_core.io_utils import atomic_path, config_json, read_json, write_json
from lus_core.similarity.features import space_features

METRICS = ("euclidean", "angular")
DIVERSITY = ("none", "video", "patient")
DIVERSE_FACTOR = 4  # first request of a diverse query: k * this many candidates
ID_COLUMNS = ["item", "frame_id", "patient", "label"]

__all__ = ["METRICS", "DIVERSITY", "ID_COLUMNS", "build_annoy", "exact_search", "recall_at_k", "SimilarityIndex"]


def build_annoy(
    vectors: np.ndarray,
    metric: str = "euclidean",
    n_trees: int = 20,
    seed: int = 0,
    n_jobs: int = 1,
    on_disk: str | Path | None = None,
):
    """An annoy index over the rows of ``vectors`` (item i = row i).

    ``on_disk``: build in that file (annoy's on_disk_build) instead of in memory, for indexes
    larger than RAM; the file is then the saved index.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"need a non-empty (n, dim) array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("index vectors contain NaN or inf")
    index = AnnoyIndex(vectors.shape[1], metric)
    index.set_seed(int(seed))
    if on_disk is not None:
        index.on_disk_build(str(on_disk))
    for i, v in enumerate(vectors):
        index.add_item(i, v)
    index.build(int(n_trees), n_jobs=int(n_jobs))
    return index


def _pairwise_distances(queries: np.ndarray, items: np.ndarray, metric: str) -> np.ndarray:
    if metric == "angular":
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        items = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    sq = (queries * queries).sum(1)[:, None] + (items * items).sum(1)[None, :] - 2.0 * queries @ items.T
    return np.sqrt(np.maximum(sq, 0.0))


def _k_smallest_stable(d: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the k smallest values, ties by column: ``argsort(kind="stable")[:, :k]``.

    A full sort of every row costs O(m log m); here only the values up to each row's k-th
    smallest (ties included) are sorted, which keeps exact search fast on archive-size indexes.
    """
    if k >= d.shape[1]:
        return np.argsort(d, axis=1, kind="stable")[:, :k]
    kth = np.partition(d, k - 1, axis=1)[:, k - 1 : k]
    out = np.empty((len(d), k), dtype=np.int64)
    for r, (row, limit) in enumerate(zip(d, kth[:, 0], strict=True)):
        cand = np.flatnonzero(row <= limit)
        out[r] = cand[np.argsort(row[cand], kind="stable")[:k]]
    return out


def exact_search(
    items: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str = "euclidean",
    item_patients: Sequence[str] | None = None,
    query_patients: Sequence[str] | None = None,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k nearest items per query, skipping items of the query's own patient.

    Returns ``(item_ids (N, k) int64, distances (N, k) float64)``, -1 / NaN padded.  Ties are
    broken by item id (stable sort).
    """
    items = np.asarray(items, dtype=np.float64)
    queries = np.asarray(queries, dtype=np.float64)
    n, m = len(queries), len(items)
    out_i = np.full((n, k), -1, dtype=np.int64)
    out_d = np.full((n, k), np.nan)
    exclude = item_patients is not None and query_patients is not None
    if exclude:
        codes, uniq = pd.factorize(pd.Index(np.asarray(item_patients).astype(str)))
        lookup = {p: c for c, p in enumerate(uniq)}
        q_codes = np.array([lookup.get(p, -1) for p in np.asarray(query_patients).astype(str)])
    for start in range(0, n, chunk):
        d = _pairwise_distances(queries[start : start + chunk], items, metric)
        if exclude:
            d[q_codes[start : start + chunk, None] == codes[None, :]] = np.inf
        kk = min(k, m)
        order = _k_smallest_stable(d, kk)
        dist = np.take_along_axis(d, order, axis=1)
        valid = np.isfinite(dist)
        out_i[start : start + chunk, :kk] = np.where(valid, order, -1)
        out_d[start : start + chunk, :kk] = np.where(valid, dist, np.nan)
    return out_i, out_d


def recall_at_k(approx_distances: np.ndarray, exact_distances: np.ndarray, rtol: float = 1e-4) -> float:
    """Tie-aware recall@k: the fraction of the exact k neighbours that the approximate search matched.

    An approximate neighbour counts as a hit when it is no farther than the exact k-th neighbour
    (so a different frame at an identical distance is not a miss).  Per query, hits are capped
    by the number of exact neighbours; NaN padding counts as a miss.
    """
    approx = np.asarray(approx_distances, dtype=np.float64)
    exact = np.asarray(exact_distances, dtype=np.float64)
    n_exact = np.isfinite(exact).sum(1)
    kth = np.nanmax(np.where(np.isfinite(exact), exact, -np.inf), axis=1, initial=-np.inf)
    tol = rtol * np.maximum(np.abs(kth), 1.0)
    hits = (np.isfinite(approx) & (approx <= (kth + tol)[:, None])).sum(1)
    hits = np.minimum(hits, n_exact)
    total = n_exact.sum()
    return float(hits.sum() / total) if total else float("nan")


@dataclass(frozen=True)
class IndexedFrames:
    """What each indexed vector is: its frame id, patient and label (class index)."""

    frame_ids: Sequence[int]
    patients: Sequence[str]
    labels: Sequence[int]


@dataclass(frozen=True)
class IndexSettings:
    """How an index is built and searched (`similarity.metric`, `n_trees`, `search_k`, the run's seed)."""

    metric: str
    n_trees: int
    seed: int
    search_k: int = -1  # annoy's own default (n_trees x k nodes)
    n_jobs: int = 1  # build threads: no effect on the index


class SimilarityIndex:
    """An annoy index of training frames in one space, with its id table and t-SNE map.

    >>> idx = SimilarityIndex.load(ann, ids_csv, meta_json, tsne_pkl)       # doctest: +SKIP
    >>> vec = idx.features_for(frames=frames, softmax=sm, embedding=emb)    # doctest: +SKIP
    >>> frame_ids, labels, dist = idx.query(vec, patients, k=10)           # doctest: +SKIP
    """

    def __init__(self, annoy, ids: pd.DataFrame, meta: dict, tsne=None):
        self.annoy = annoy
        self.ids = ids.reset_index(drop=True)
        self.meta = meta
        self.tsne = tsne
        self.space = meta["space"]
        self.metric = meta["metric"]
        self.dim = int(meta["dim"])
        self.search_k = int(meta.get("search_k", -1))
        if annoy.get_n_items() != len(self.ids):
            raise ValueError(f"annoy holds {annoy.get_n_items()} items but the id table {len(self.ids)} rows")
        self._frame_ids = self.ids["frame_id"].to_numpy(np.int64)
        self._labels = self.ids["label"].to_numpy(np.int64)
        self._patients = self.ids["patient"].astype(str).to_numpy()
        self._patient_counts = pd.Series(self._patients).value_counts().to_dict()
        self._vectors: np.ndarray | None = None

    # ------------------------------------------------------------------ construction and files

    @classmethod
    def build(cls, space: str, vectors: np.ndarray, frames: IndexedFrames, settings: IndexSettings,
              params: dict | None = None, tsne=None, config: dict | None = None) -> SimilarityIndex:
        """Index ``vectors`` (row i = item i, the frame ``frames`` row i) with ``settings``;
        ``params``: how the space's vectors were made (kept in the metadata), ``tsne``: the fitted
        map of the t-SNE space, ``config``: the step's config, recorded."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        annoy = build_annoy(vectors, settings.metric, settings.n_trees, settings.seed, settings.n_jobs)
        ids = pd.DataFrame(
            {
                "item": np.arange(len(vectors), dtype=np.int64),
                "frame_id": np.asarray(frames.frame_ids, dtype=np.int64),
                "patient": np.asarray(frames.patients).astype(str),
                "label": np.asarray(frames.labels, dtype=np.int64),
            }
        )
        meta = {
            "space": space,
            "dim": int(vectors.shape[1]),
            "metric": settings.metric,
            "n_trees": int(settings.n_trees),
            "n_items": len(vectors),
            "n_patients": int(ids["patient"].nunique()),
            "seed": int(settings.seed),
            "search_k": int(settings.search_k),
            "params": dict(params or {}),
            "config": config_json(config or {}),
        }
        index = cls(annoy, ids, meta, tsne)
        index._vectors = vectors
        return index

    def save(self, out_ann, out_ids, out_meta, out_tsne=None) -> None:
        """Write the four files atomically (annoy first, the JSON last)."""
        with atomic_path(out_ann) as tmp:
            self.annoy.save(str(tmp))
        # annoy.save() re-maps the saved file; it stays valid through the rename (same inode)
        with atomic_path(out_ids) as tmp:
            self.ids[ID_COLUMNS].to_csv(tmp, index=False)
        if out_tsne is not None:
            if self.tsne is None:
                raise ValueError(f"space {self.space!r} has no t-SNE map to write to {out_tsne}")
            with atomic_path(out_tsne) as tmp, open(tmp, "wb") as f:
                pickle.dump(self.tsne, f, protocol=pickle.HIGHEST_PROTOCOL)
        write_json(out_meta, self.meta)

    @classmethod
    def load(cls, ann, ids, meta, tsne_pkl=None) -> SimilarityIndex:
        meta_d = read_json(meta)
        ids_df = pd.read_csv(ids, dtype={"patient": str})
        annoy = AnnoyIndex(int(meta_d["dim"]), meta_d["metric"])
        annoy.load(str(ann))
        tsne = None
        if tsne_pkl is not None:
            with open(tsne_pkl, "rb") as f:
                tsne = pickle.load(f)  # our own file, written by build_index
        elif meta_d["space"] == "tsne":
            raise ValueError("a tsne index needs its fitted map (tsne_pkl)")
        return cls(annoy, ids_df, meta_d, tsne)

    # ------------------------------------------------------------------ features

    def features_for(self, frames=None, softmax=None, embedding=None) -> np.ndarray:
        """Map in-memory inputs of new frames into this index's space (see space_features)."""
        return space_features(
            self.space,
            frames=frames,
            softmax=softmax,
            embedding=embedding,
            raw_size=int(self.meta.get("params", {}).get("raw_size", 16)),
            tsne_embedding=self.tsne,
        )

    def item_vectors(self) -> np.ndarray:
        """(n_items, dim) float32 vectors of the indexed frames (from annoy; cached)."""
        if self._vectors is None:
            self._vectors = np.array(
                [self.annoy.get_item_vector(i) for i in range(self.annoy.get_n_items())], dtype=np.float32
            ).reshape(-1, self.dim)
        return self._vectors

    def vectors_of_frames(self, frame_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(mask, vectors): which of ``frame_ids`` are indexed, and their stored vectors."""
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        pos = pd.Series(np.arange(len(self._frame_ids)), index=self._frame_ids)
        mask = np.isin(frame_ids, self._frame_ids)
        items = pos.loc[frame_ids[mask]].to_numpy()
        return mask, self.item_vectors()[items]

    # ------------------------------------------------------------------ queries

    def _check(self, vectors: np.ndarray, patients) -> tuple[np.ndarray, np.ndarray | None]:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.shape[1] != self.dim:
            raise ValueError(f"{self.space} index has dim {self.dim}, query vectors have {vectors.shape[1]}")
        if patients is not None:
            patients = np.asarray(patients).astype(str)
            if patients.shape != (len(vectors),):
                raise ValueError(
                    f"need one patient per query vector, got {patients.shape} for {len(vectors)}"
                )
        return vectors, patients

    def query_items(
        self, vectors: np.ndarray, patients: Sequence[str] | None, k: int, search_k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Annoy item ids (N, k) and distances (N, k) of the k nearest items of other patients.

        ``patients=None`` excludes nobody (a new patient).  ``search_k`` (default: the index's)
        is the least number of tree nodes annoy inspects per query; annoy's own default
        ``n * n_trees`` (n = neighbours requested) is used when it is larger, and ``-1`` means
        annoy's default alone.  Larger = higher recall, slower.
        """
        vectors, patients = self._check(vectors, patients)
        return self._nearest_kept(vectors, patients, k, search_k, k, lambda items: np.arange(len(items)))

    def _nearest_kept(self, vectors, patients, k: int, search_k: int | None, n_first: int, select):
        """The search loop of both queries: ask annoy for ``n_first`` neighbours (plus the query
        patient's own frames, which are dropped), keep the positions ``select(items)`` returns, and
        double the request until k are kept or the index is exhausted."""
        search_k = self.search_k if search_k is None else int(search_k)
        n_items = self.annoy.get_n_items()
        n_trees = max(int(self.meta.get("n_trees", 1)), 1)
        out_i = np.full((len(vectors), k), -1, dtype=np.int64)
        out_d = np.full((len(vectors), k), np.nan, dtype=np.float64)
        for q, v in enumerate(vectors):
            own = None if patients is None else patients[q]
            n = min(n_items, n_first + (self._patient_counts.get(own, 0) if own is not None else 0))
            while True:
                sk = -1 if search_k <= 0 else max(search_k, n * n_trees)
                items, dists = self.annoy.get_nns_by_vector(v, n, search_k=sk, include_distances=True)
                items = np.asarray(items, dtype=np.int64)
                dists = np.asarray(dists, dtype=np.float64)
                if own is not None:
                    keep = self._patients[items] != own
                    items, dists = items[keep], dists[keep]
                chosen = select(items)
                if len(chosen) >= k or n >= n_items:
                    break
                n = min(n_items, 2 * n)
            m = min(k, len(chosen))
            out_i[q, :m] = items[chosen[:m]]
            out_d[q, :m] = dists[chosen[:m]]
        return out_i, out_d

    def query_items_diverse(
        self,
        vectors: np.ndarray,
        patients: Sequence[str] | None,
        k: int,
        item_groups: np.ndarray,
        search_k: int | None = None,
        factor: int = DIVERSE_FACTOR,
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`query_items`, but at most one item per group (``item_groups[item]``, e.g.
        the video of each indexed frame): the nearest item of each of the k nearest groups.

        Annoy is asked for ``k * factor`` candidates (plus the query patient's own frames);
        the request doubles until k distinct groups are found or the index is exhausted.
        """
        vectors, patients = self._check(vectors, patients)
        item_groups = np.asarray(item_groups)
        if item_groups.shape != (self.annoy.get_n_items(),):
            raise ValueError(f"need one group per indexed item, got {item_groups.shape}")
        item_groups = pd.factorize(item_groups)[0]  # integer codes: np.unique per query stays cheap

        def first_of_each_group(items):  # annoy returns nearest first: a group's first item is its nearest
            return np.sort(np.unique(item_groups[items], return_index=True)[1])

        return self._nearest_kept(vectors, patients, k, search_k, k * max(int(factor), 1), first_of_each_group)

    def query_diverse(
        self,
        vectors: np.ndarray,
        patients: Sequence[str] | None,
        k: int,
        item_groups: np.ndarray,
        search_k: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`query`, with at most one neighbour per group (see :meth:`query_items_diverse`)."""
        return self._to_frames(*self.query_items_diverse(vectors, patients, k, item_groups, search_k))

    def groups_of_items(self, frame_index: pd.DataFrame, diversity: str) -> np.ndarray:
        """Per indexed item its group for ``diversity`` ``video`` or ``patient`` (frame index columns)."""
        if diversity not in ("video", "patient"):
            raise ValueError(f"diversity must be 'video' or 'patient' here, got {diversity!r}")
        if diversity == "patient":
            return self._patients
        lookup = pd.Series(frame_index["video"].astype(str).to_numpy(), index=frame_index["frame_id"].to_numpy())
        missing = ~np.isin(self._frame_ids, lookup.index.to_numpy())
        if missing.any():
            raise ValueError(
                f"{int(missing.sum())} indexed frame(s) are not in the frame index, e.g. frame {self._frame_ids[missing][0]}"
            )
        return lookup.loc[self._frame_ids].to_numpy()

    def _to_frames(self, items: np.ndarray, dists: np.ndarray):
        valid = items >= 0
        safe = np.where(valid, items, 0)
        frame_ids = np.where(valid, self._frame_ids[safe], -1)
        labels = np.where(valid, self._labels[safe], -1)
        return frame_ids, labels, dists

    def query(
        self, vectors: np.ndarray, patients: Sequence[str] | None, k: int, search_k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(neighbor_frame_ids (N, k), neighbor_labels (N, k), distances (N, k))``, nearest first.

        Neighbours never belong to the query's patient; -1 / -1 / NaN where fewer than k exist.
        """
        return self._to_frames(*self.query_items(vectors, patients, k, search_k))
