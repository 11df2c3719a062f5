"""Similarity search: annoy vs exact search, other-patient queries, t-SNE placement, fallback, steps."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from lus_core.config import validate_config
from lus_core.frames.store import build_frame_index, read_frame_index, write_frame_index, write_video_store
from lus_core.io_utils import read_json
from lus_core.similarity.fallback import fallback_scores
from lus_core.similarity.features import (
    fit_tsne,
    place_on_tsne_map,
    raw_features,
    raw_features_from_store,
    read_predictions,
    select_index_rows,
)
from lus_core.similarity.gallery import GalleryRow, compose_gallery, render_frame_gallery, render_gallery
from lus_core.similarity.index import IndexedFrames, IndexSettings, SimilarityIndex, exact_search, recall_at_k
from lus_core.similarity.neighbors import read_neighbors, stored_diversities
from lus_core.similarity.step import run_build_index, run_query_neighbors
from lus_core.workflow.step_config import step_config

N_CLASSES = 4



def exact_frames(index, queries, query_patients, k):
    """The brute-force reference of ``index.query``: (frame ids, distances) of the k nearest items of
    other patients."""
    items, dist = exact_search(index.item_vectors(), queries, k, index.metric,
                               index.ids["patient"].astype(str).to_numpy(), query_patients)
    frame_ids = index.ids["frame_id"].to_numpy()[np.maximum(items, 0)]
    return np.where(items >= 0, frame_ids, -1), dist


def patients_of(index, frame_ids):
    """The patient of each indexed frame id ('' for -1)."""
    lookup = dict(zip(index.ids["frame_id"].tolist(), index.ids["patient"].astype(str).tolist(), strict=True))
    return np.vectorize(lambda f: lookup.get(int(f), ""), otypes=[object])(np.asarray(frame_ids)).astype(str)


def _vote(labels: np.ndarray) -> np.ndarray:
    """Majority vote per row, ties to the lower score (fallback_scores' rule), by counting."""
    return np.array([np.bincount(row, minlength=N_CLASSES).argmax() for row in labels])

def clustered(n: int, dim: int, n_clusters: int, seed: int, spread: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(n_clusters, dim))
    return (centres[rng.integers(0, n_clusters, n)] + spread * rng.normal(size=(n, dim))).astype(np.float32)


def make_index(vectors, patients, labels=None, metric="euclidean", n_trees=10):
    n = len(vectors)
    labels = np.zeros(n, dtype=int) if labels is None else labels
    return SimilarityIndex.build("embedding", vectors, IndexedFrames(np.arange(n) + 1000, patients, labels),
                                 IndexSettings(metric, n_trees, seed=0))


# --------------------------------------------------------------------------- annoy vs exact


@pytest.mark.parametrize("metric", ["euclidean", "angular"])
def test_annoy_agrees_with_exact_search(metric):
    x = clustered(600, 16, 6, seed=1)
    patients = np.array([f"p{i % 12}" for i in range(600)])
    index = make_index(x, patients, metric=metric)
    q = clustered(60, 16, 6, seed=1)[:60] + 0.1
    q_pat = np.array([f"p{i % 12}" for i in range(60)])
    f_annoy, _, d_annoy = index.query(q, q_pat, 10)
    f_exact, d_exact = exact_frames(index, q, q_pat, 10)
    assert recall_at_k(d_annoy, d_exact) >= 0.9
    # same distance definition: where both found the same frame, the distances agree
    same = f_annoy[:, 0] == f_exact[:, 0]
    assert same.mean() > 0.8
    np.testing.assert_allclose(d_annoy[same, 0], d_exact[same, 0], rtol=1e-4, atol=1e-5)
    # distances come nearest first
    assert (np.diff(d_annoy, axis=1) >= -1e-6).all()


def test_recall_at_k_counts_ties_as_hits():
    exact = np.array([[0.0, 1.0, 1.0]])
    assert recall_at_k(np.array([[0.0, 1.0, 1.0]]), exact) == 1.0  # other frames at the same distance
    assert recall_at_k(np.array([[0.0, 1.0, 2.0]]), exact) == pytest.approx(2 / 3)
    assert recall_at_k(np.array([[0.0, np.nan, np.nan]]), exact) == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- other patients only


def test_query_never_returns_own_patient():
    rng = np.random.default_rng(0)
    # patient "a" owns the 200 frames closest to every query: all must be skipped
    near = rng.normal(scale=0.01, size=(200, 8)).astype(np.float32)
    far = (5 + rng.normal(size=(100, 8))).astype(np.float32)
    x = np.vstack([near, far])
    patients = np.array(["a"] * 200 + [f"b{i % 5}" for i in range(100)])
    index = make_index(x, patients)
    q = np.zeros((3, 8), dtype=np.float32)
    frames, _, dist = index.query(q, ["a", "a", "b0"], k=7)
    pats = patients_of(index, frames)
    assert (pats[:2] != "a").all() and (frames[:2] >= 1200).all()
    assert (pats[2] != "b0").all() and (frames[2] < 1200).all()  # b0's query sees a's frames
    assert np.isfinite(dist).all()
    # the exact search obeys the same rule
    ef, _ = exact_frames(index, q, ["a", "a", "b0"], k=7)
    assert (patients_of(index, ef)[:2] != "a").all()
    # a new patient (None) excludes nobody
    frames_new, _, _ = index.query(q, None, k=3)
    assert (patients_of(index, frames_new) == "a").all()


def test_query_pads_when_other_patients_run_out():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    index = make_index(x, ["a", "a", "a", "a", "b", "c"], labels=np.array([0, 0, 0, 0, 2, 3]))
    frames, labels, dist = index.query(x[:1], ["a"], k=4)
    assert frames[0, :2].tolist() == [1004, 1005]
    assert labels[0].tolist() == [2, 3, -1, -1]
    assert np.isnan(dist[0, 2:]).all()
    items, d = exact_search(x, x[:1], 4, "euclidean", ["a", "a", "a", "a", "b", "c"], ["a"])
    assert items[0].tolist() == [4, 5, -1, -1]


# --------------------------------------------------------------------------- t-SNE map


@pytest.fixture(scope="module")
def tsne_map():
    x = clustered(150, 16, 4, seed=3)
    return x, fit_tsne(x, perplexity=30, seed=0)


def test_tsne_duplicate_of_training_frame_lands_on_it(tsne_map):
    x, emb = tsne_map
    ref = np.asarray(emb)
    idx = np.arange(0, 150, 10)
    placed = place_on_tsne_map(emb, x[idx])
    d = ((placed[:, None, :] - ref[None]) ** 2).sum(-1)
    assert (d.argmin(1) == idx).all()
    # the map itself is untouched by placing new points (no refit)
    np.testing.assert_array_equal(np.asarray(emb), ref)


def test_a_near_copy_is_placed_beside_its_original_on_the_map(tsne_map):
    # the placement alone (no duplicate snapping): a slightly perturbed copy lands at the median
    # of its original's 5 nearest frames (the original one of them), among that cluster
    x, emb = tsne_map
    ref = np.asarray(emb)
    idx = np.arange(0, 150, 10)
    copy = x[idx] + np.random.default_rng(0).normal(scale=1e-3, size=x[idx].shape).astype(np.float32)
    placed = place_on_tsne_map(emb, copy, snap_duplicates=False)
    d = ((placed[:, None, :] - ref[None]) ** 2).sum(-1)
    rank = (np.argsort(d, axis=1) == idx[:, None]).argmax(1)
    assert (rank < 5).mean() >= 0.5, rank
    # the nearest map point of the placed copy is a frame from the original's cluster (the
    # fixture's clusters, drawn again from its seed)
    rng = np.random.default_rng(3)
    rng.normal(scale=6.0, size=(4, 16))
    cluster = rng.integers(0, 4, 150)
    assert (cluster[d.argmin(1)] == cluster[idx]).all()


def test_a_frames_place_on_the_map_does_not_depend_on_the_frames_placed_with_it(tsne_map):
    x, emb = tsne_map
    queries = x[:40] + np.random.default_rng(1).normal(scale=0.3, size=x[:40].shape).astype(np.float32)
    together = place_on_tsne_map(emb, queries)
    alone = np.vstack([place_on_tsne_map(emb, q) for q in queries])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(place_on_tsne_map(emb, queries[::-1])[::-1], together)
    # each lands at the median map position of its 5 nearest indexed frames (brute force)
    ref, data = np.asarray(emb), np.asarray(emb.affinities.knn_index.data)
    nearest = np.argsort(((queries[:, None, :] - data[None]) ** 2).sum(-1), axis=1)[:, :5]
    np.testing.assert_allclose(together, np.median(ref[nearest], axis=1), atol=1e-4)


# --------------------------------------------------------------------------- fallback scoring


def test_fallback_mean_rounds_half_up():
    labels = np.array([[0, 1, 2, 3], [2, 3, 2, 3], [0, 0, 0, 1], [3, 3, 3, 3]])
    assert fallback_scores(labels, None, N_CLASSES, "mean").tolist() == [2, 3, 0, 3]  # 1.5->2, 2.5->3


def test_fallback_vote_ties_go_to_the_lower_class():
    labels = np.array([[1, 1, 2, 2, 3], [3, 3, 0, 0, 1], [2, 2, 2, 0, 0]])
    assert fallback_scores(labels, None, N_CLASSES, "vote").tolist() == [1, 0, 2]


def test_fallback_weighted_prefers_close_neighbours():
    labels = np.array([[3, 0, 0], [3, 0, 0], [1, 2, 0]])
    dist = np.array([[0.1, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert fallback_scores(labels, dist, N_CLASSES, "weighted").tolist() == [3, 0, 0]
    # equal weights: a plain vote, tie -> lower class
    assert fallback_scores([[2, 1]], [[0.5, 0.5]], N_CLASSES, "weighted").tolist() == [1]


def test_fallback_ignores_padding_and_rejects_bad_input():
    labels = np.array([[3, -1, -1], [-1, -1, -1]])
    dist = np.array([[0.2, np.nan, np.nan], [np.nan] * 3])
    for mode in ("mean", "vote", "weighted"):
        assert fallback_scores(labels, dist, N_CLASSES, mode).tolist() == [3, -1]
    with pytest.raises(ValueError):
        fallback_scores([[4]], None, N_CLASSES, "mean")
    with pytest.raises(ValueError):
        fallback_scores([[1]], None, N_CLASSES, "median")


def test_raw_features_are_normalised_and_accept_gray_and_colour():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(3, 40, 30, 1), dtype=np.uint8)
    v = raw_features(gray, 8)
    assert v.shape == (3, 64) and v.dtype == np.float32
    np.testing.assert_allclose(v.mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, rtol=1e-5)
    # brightness / gain invariance, 2-D input, RGB input with equal channels, constant frame
    np.testing.assert_allclose(raw_features(gray[..., 0] // 2 + 10, 8), raw_features(gray // 2, 8), atol=1e-5)
    np.testing.assert_allclose(raw_features(np.repeat(gray, 3, axis=-1), 8), v, atol=1e-2)
    assert not raw_features(np.full((1, 10, 10), 7, np.uint8), 4).any()


def test_select_index_rows_keeps_training_patients_and_subsamples():
    split = np.array(["train"] * 10 + ["test"] * 4)
    patient = np.array(["a"] * 6 + ["b"] * 4 + ["c"] * 4)
    label = np.array([0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 0, 1, 2, 3])
    assert select_index_rows(split, patient, label).tolist() == list(range(10))
    rows = select_index_rows(split, patient, label, per_patient_per_class=2, seed=0)
    assert (split[rows] == "train").all()
    counts = pd.Series(list(zip(patient[rows], label[rows], strict=True))).value_counts()
    assert counts.to_dict() == {("a", 0): 2, ("a", 1): 2, ("a", 2): 1, ("b", 0): 2}
    np.testing.assert_array_equal(rows, select_index_rows(split, patient, label, 2, seed=0))


# --------------------------------------------------------------------------- steps on tiny files

PATIENTS = {"p1": "train", "p2": "train", "p3": "train", "p4": "train", "t1": "test", "t2": "test"}


def _frame(label: int, rng, size: int = 24) -> np.ndarray:
    img = rng.normal(40, 12, size=(size, size))
    for line in range(label + 1):  # more bright lines = higher score
        img[3 + 5 * line : 5 + 5 * line] += 150
    return np.clip(img, 0, 255).astype(np.uint8)[..., None]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    rng = np.random.default_rng(0)
    paths = []
    for pi, patient in enumerate(PATIENTS):
        for v in range(2):
            labels = np.repeat([(pi + v) % 4, (pi + v + 1) % 4], 5)
            frames = np.stack([_frame(int(lab), rng) for lab in labels])
            path = root / "frames" / f"{patient}_v{v}.h5"
            write_video_store(path, frames, labels, np.arange(10), patient, f"{patient}_v{v}", {"fps": 10})
            paths.append(path)
    index = build_frame_index(paths)
    write_frame_index(index, root / "frame_index.csv")
    n = len(index)
    label = index["label"].to_numpy()
    centres = rng.normal(scale=4, size=(N_CLASSES, 12))
    embedding_all = (centres[label] + rng.normal(size=(n, 12))).astype(np.float32)
    split = index["patient"].map(PATIENTS).to_numpy()
    # as lus_core.cnn.infer writes it: out-of-fold `embedding` of training frames comes from fold
    # models (another feature space: here a rotation plus shift), test frames from the `all` model
    rotation = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    embedding = np.where((split == "train")[:, None], embedding_all @ rotation + 5.0, embedding_all)
    embedding = embedding.astype(np.float32)
    logits = (3 * np.eye(N_CLASSES)[label] + rng.normal(size=(n, N_CLASSES))).astype(np.float32)
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    str_dt = h5py.string_dtype()
    with h5py.File(root / "predictions.h5", "w") as f:
        f["frame_id"] = index["frame_id"].to_numpy(np.int64)
        f["label"] = label.astype(np.int16)
        f.create_dataset("patient", data=index["patient"].tolist(), dtype=str_dt)
        f.create_dataset("video", data=index["video"].tolist(), dtype=str_dt)
        f.create_dataset("split", data=split.tolist(), dtype=str_dt)
        f["fold"] = np.where(split == "test", -1, 0).astype(np.int16)
        f["logits"] = logits
        f["softmax"] = softmax.astype(np.float32)
        f["embedding_oof"] = embedding
        f["embedding_all"] = embedding_all
        f.attrs["backbone"] = "tiny"
    config = {
        "results": str(root),
        "seed": 0,
        "classes": [0, 1, 2, 3],
        "dataset": {"synthetic": {"enabled": True}},
        "similarity": {
            "spaces": ["raw", "softmax", "embedding", "tsne"],
            "k": [3, 5],
            "fallback": ["mean", "vote", "weighted"],
            "metric": "euclidean",
            "n_trees": 10,
            "raw_size": 8,
            "per_patient_per_class": 0,
            "tsne_perplexity": 30,
        },
    }
    return root, validate_config(config)


def _build_and_query(root, config, space):
    out = root / "index" / "tiny"
    tsne = out / f"{space}.tsne.pkl" if space == "tsne" else None
    files = (out / f"{space}.ann", out / f"{space}.ids.csv", out / f"{space}.json", tsne)
    run_build_index(space, root / "predictions.h5", root / "frame_index.csv", *files, step_config(config, "build_index"))
    nb = root / "neighbors" / "tiny" / f"{space}.h5"
    metrics = run_query_neighbors(
        space, root / "predictions.h5", root / "frame_index.csv", *files, nb, step_config(config, "query_neighbors")
    )
    return files, nb, metrics


@pytest.mark.parametrize("space", ["raw", "softmax", "embedding", "tsne"])
def test_build_and_query_steps(tiny_run, space):
    root, config = tiny_run
    (ann, ids_csv, meta_json, tsne), nb, metrics = _build_and_query(root, config, space)
    assert ann.exists() and (tsne is None or tsne.exists())
    assert not list(ann.parent.glob(".*tmp"))  # atomic writes leave no temporaries
    ids = pd.read_csv(ids_csv, dtype={"patient": str})
    assert list(ids.columns) == ["item", "frame_id", "patient", "label"]
    assert set(ids["patient"]) == {"p1", "p2", "p3", "p4"}  # training patients only
    assert len(ids) == 80 and ids["item"].tolist() == list(range(80))
    meta = read_json(meta_json)
    assert meta["space"] == space and meta["metric"] == "euclidean" and meta["n_trees"] == 10
    assert meta["dim"] == {"raw": 64, "softmax": 4, "embedding": 12, "tsne": 2}[space]
    assert json.loads(meta["config"])["similarity"]["raw_size"] == 8
    if space in ("embedding", "tsne"):
        assert meta["params"]["embedding_source"] == "embedding_all"

    frame_index = read_frame_index(root / "frame_index.csv")
    with h5py.File(nb, "r") as f:
        frame_id = f["frame_id"][()]
        nb_frame = f["neighbor_frame_id"][()]
        nb_label = f["neighbor_label"][()]
        dist = f["distance"][()]
        stored = json.loads(f.attrs["metrics"])
        assert json.loads(f.attrs["config"]) == step_config(config, "query_neighbors")
    assert frame_id.tolist() == frame_index["frame_id"].tolist()  # every frame, train and test
    assert nb_frame.shape == nb_label.shape == dist.shape == (120, 5)
    assert (nb_frame >= 0).all() and np.isfinite(dist).all()
    patient_of = frame_index.set_index("frame_id")["patient"]
    label_of = frame_index.set_index("frame_id")["label"]
    own = frame_index["patient"].to_numpy()[:, None]
    nb_patient = patient_of.loc[nb_frame.ravel()].to_numpy().reshape(nb_frame.shape)
    assert (nb_patient != own).all()
    assert set(np.unique(nb_patient)) <= {"p1", "p2", "p3", "p4"}
    np.testing.assert_array_equal(label_of.loc[nb_frame.ravel()].to_numpy().reshape(nb_frame.shape), nb_label)
    assert (np.diff(dist, axis=1) >= -1e-5).all()

    assert stored == json.loads(json.dumps(metrics))
    assert metrics["test"]["n_frames"] == 40 and metrics["test"]["n_patients"] == 2
    for k in ("k=3", "k=5"):
        for mode in ("mean", "vote", "weighted"):
            entry = metrics["test"]["knn"][k][mode]
            assert 0 <= entry["accuracy"] <= 1 and -1 <= entry["qwk"] <= 1 and entry["coverage"] == 1
    assert metrics["recall"]["recall@5"] >= 0.9
    if space in ("raw", "embedding", "softmax"):
        # the spaces separate the scores on this toy data, so the kNN fallback is mostly right
        assert metrics["test"]["knn"]["k=5"]["vote"]["accuracy"] >= 0.7


def test_features_for_works_from_memory_and_matches_the_index(tiny_run):
    root, config = tiny_run
    (ann, ids_csv, meta_json, _), _, _ = _build_and_query(root, config, "raw")
    index = SimilarityIndex.load(ann, ids_csv, meta_json)
    frame_index = read_frame_index(root / "frame_index.csv")
    some = index.ids["frame_id"].to_numpy()[:7]
    from lus_core.frames.store import FrameReader

    frames = FrameReader(frame_index).frames(some)
    v = index.features_for(frames=frames)
    np.testing.assert_allclose(v, index.item_vectors()[:7], atol=1e-6)
    np.testing.assert_allclose(raw_features_from_store(frame_index, some, 8), v, atol=1e-6)
    # a new patient: own frames are allowed back
    found, _, dist = index.query(v, None, 1)
    assert found[:, 0].tolist() == some.tolist() and np.allclose(dist[:, 0], 0, atol=1e-3)


def test_tsne_index_places_new_frames_from_embeddings(tiny_run):
    root, config = tiny_run
    (ann, ids_csv, meta_json, tsne), _, _ = _build_and_query(root, config, "tsne")
    index = SimilarityIndex.load(ann, ids_csv, meta_json, tsne)
    with h5py.File(root / "predictions.h5", "r") as f:
        emb = f["embedding_all"][()]
        split = f["split"].asstr()[()]
        label = f["label"][()]
    test = np.flatnonzero(split == "test")
    placed = index.features_for(embedding=emb[test])
    assert placed.shape == (len(test), 2) and np.isfinite(placed).all()
    _, nb_label, _ = index.query(placed, None, 5)
    assert (fallback_scores(nb_label, None, N_CLASSES, "vote") == label[test]).mean() >= 0.7
    with pytest.raises(ValueError):
        SimilarityIndex.load(ann, ids_csv, meta_json)  # a tsne index needs its map


def test_build_index_subsample_and_argument_checks(tiny_run, tmp_path):
    root, config = tiny_run
    cfg = json.loads(json.dumps(config))
    cfg["similarity"]["per_patient_per_class"] = 2
    out = [tmp_path / "e.ann", tmp_path / "e.ids.csv", tmp_path / "e.json"]
    meta = run_build_index("embedding", root / "predictions.h5", None, *out, None, step_config(cfg, "build_index"))
    ids = pd.read_csv(out[1], dtype={"patient": str})
    assert ids.groupby(["patient", "label"]).size().max() == 2
    assert meta["n_items"] == len(ids) and meta["params"]["per_patient_per_class"] == 2
    with pytest.raises(ValueError):
        run_build_index("tsne", root / "predictions.h5", None, *out, None, step_config(cfg, "build_index"))


def test_a_predictions_file_of_an_older_version_is_a_clear_error(tiny_run, tmp_path):
    """The store once held `embedding` (meaning the out-of-fold one): the reader names the file
    and says to rerun `infer` instead of guessing which embedding it is."""
    root, config = tiny_run
    preds = tmp_path / "predictions.h5"
    shutil.copy(root / "predictions.h5", preds)
    with h5py.File(preds, "a") as f:
        f["embedding"] = f["embedding_oof"][()]
        del f["embedding_oof"]
    with pytest.raises(ValueError, match=r"predictions\.h5.*embedding_oof.*rerun the `infer` step"):
        read_predictions(preds)
    out = [tmp_path / "e.ann", tmp_path / "e.ids.csv", tmp_path / "e.json"]
    with pytest.raises(ValueError, match="rerun the `infer` step"):
        run_build_index("embedding", preds, None, *out, None, step_config(config, "build_index"))


def test_gallery_png(tiny_run, tmp_path):
    root, _ = tiny_run
    rng = np.random.default_rng(0)
    imgs = [_frame(i % 4, rng)[..., 0] for i in range(5)]
    colour = np.repeat(_frame(2, rng), 3, axis=-1)
    out = render_gallery(
        colour,
        imgs,
        [0, 1, 2, 3, -1],
        ["p1", "p2", "p3", "p4", ""],
        [0.1, 0.2, 0.3, 0.4, np.nan],
        tmp_path / "g.png",
        title="frame 7",
        query_caption="query: CNN 2, not trusted",
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    frame_index = read_frame_index(root / "frame_index.csv")
    out2 = render_frame_gallery(
        frame_index,
        100,
        [0, 1, 2, -1],
        [0, 0, 1, -1],
        [0.5, 0.6, 0.7, np.nan],
        tmp_path / "g2.png",
        class_names=[0, 1, 2, 3],
    )
    assert out2.stat().st_size > 1000


def test_build_is_deterministic_for_a_seed():
    x = clustered(300, 8, 3, seed=5)
    patients = np.array([f"p{i % 6}" for i in range(300)])
    a = make_index(x, patients).query(x[:20], patients[:20], 5)
    b = make_index(x, patients).query(x[:20], patients[:20], 5)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


# --------------------------------------------------------------------------- diverse neighbours


def _videos_of(frame_index, frame_ids):
    video_of = frame_index.set_index("frame_id")["video"]
    flat = np.asarray(frame_ids).ravel()
    out = np.where(flat >= 0, video_of.reindex(flat).to_numpy(), "")
    return out.reshape(np.shape(frame_ids))


def _one_per_group(groups_rows, ids_rows) -> bool:
    return all(len(set(g[i >= 0])) == int((i >= 0).sum()) for g, i in zip(groups_rows, ids_rows, strict=True))


def test_diverse_query_takes_the_nearest_frame_of_each_nearest_video(tiny_run):
    root, config = tiny_run
    (ann, ids_csv, meta_json, _), _, _ = _build_and_query(root, config, "embedding")
    index = SimilarityIndex.load(ann, ids_csv, meta_json)
    frame_index = read_frame_index(root / "frame_index.csv")
    preds = read_predictions(root / "predictions.h5")
    vectors = preds.embedding_all
    groups = index.groups_of_items(frame_index, "video")
    plain_ids, _, plain_d = index.query(vectors, preds.patient, 8)
    ids, labels, dist = index.query_diverse(vectors, preds.patient, 4, groups)
    plain_videos, videos = _videos_of(frame_index, plain_ids), _videos_of(frame_index, ids)
    assert not _one_per_group(plain_videos, plain_ids)  # the plain list repeats videos here
    assert _one_per_group(videos, ids) and (ids >= 0).all()
    patient_of = frame_index.set_index("frame_id")["patient"]
    assert (patient_of.loc[ids.ravel()].to_numpy().reshape(ids.shape) != preds.patient[:, None]).all()
    assert (np.diff(dist, axis=1) >= -1e-5).all()
    # against exact search: the nearest frame of each video, videos ordered by that distance
    items = index.item_vectors()
    own = index.ids["patient"].to_numpy()[None, :] == preds.patient[:, None]
    d = np.sqrt(((vectors[:, None, :] - items[None]) ** 2).sum(-1))
    d[own] = np.inf
    best = pd.DataFrame(d.T).groupby(groups).min().to_numpy().T  # (frames, videos)
    expected = np.sort(best, axis=1)[:, :4]
    assert np.mean(np.abs(dist - expected) < 1e-3) >= 0.95  # annoy is approximate
    by_patient = index.query_diverse(vectors, preds.patient, 3, index.groups_of_items(frame_index, "patient"))[0]
    assert _one_per_group(patient_of.reindex(by_patient.ravel()).to_numpy().reshape(by_patient.shape), by_patient)


def test_diverse_query_pads_when_videos_run_out():
    x = clustered(60, 4, 2, seed=1)
    patients = np.array(["a", "b", "c"] * 20)
    index = make_index(x, patients)
    videos = np.array([f"{p}_v{i % 2}" for i, p in enumerate(patients)])  # 6 videos, 2 per patient
    ids, dist = index.query_items_diverse(x[:5], ["a"] * 5, 6, videos)
    assert ((ids >= 0).sum(1) == 4).all() and np.isnan(dist[:, 4:]).all()  # 4 videos of b and c


def test_neighbors_file_holds_plain_and_diverse_lists(tiny_run, tmp_path):
    root, config = tiny_run
    cfg = json.loads(json.dumps(config))
    cfg["similarity"].update(diversity="patient", fallback_diversity=["none", "video"])
    out = root / "index" / "tiny"
    files = (out / "softmax.ann", out / "softmax.ids.csv", out / "softmax.json", None)
    run_build_index("softmax", root / "predictions.h5", root / "frame_index.csv", *files, step_config(cfg, "build_index"))
    nb = tmp_path / "softmax.h5"
    run_query_neighbors("softmax", root / "predictions.h5", root / "frame_index.csv", *files, nb,
                        step_config(cfg, "query_neighbors"))
    assert stored_diversities(nb) == ["none", "patient", "video"]
    frame_index = read_frame_index(root / "frame_index.csv")
    wanted = frame_index["frame_id"].to_numpy()[::-1][:30]
    plain = read_neighbors(nb, wanted)
    diverse = read_neighbors(nb, wanted, diversity="video")
    assert plain.frame_id.tolist() == diverse.frame_id.tolist() == wanted.tolist()
    assert diverse.neighbor_frame_id.shape == plain.neighbor_frame_id.shape == (30, 5)
    videos = _videos_of(frame_index, diverse.neighbor_frame_id)
    assert _one_per_group(videos, diverse.neighbor_frame_id)
    assert not _one_per_group(_videos_of(frame_index, plain.neighbor_frame_id), plain.neighbor_frame_id)
    label_of = frame_index.set_index("frame_id")["label"]
    np.testing.assert_array_equal(
        label_of.loc[diverse.neighbor_frame_id.ravel()].to_numpy().reshape(30, 5), diverse.neighbor_label
    )
    # the fallback from either list: its own neighbours' labels
    for lists in (plain, diverse):
        np.testing.assert_array_equal(
            fallback_scores(lists.neighbor_label[:, :3], lists.distance[:, :3], N_CLASSES, "vote"),
            _vote(label_of.loc[lists.neighbor_frame_id[:, :3].ravel()].to_numpy().reshape(-1, 3)),
        )
    with pytest.raises(ValueError, match="frame"):
        read_neighbors(nb, [10**9])
    cfg["similarity"].update(diversity="none", fallback_diversity=["none"])
    run_query_neighbors("softmax", root / "predictions.h5", root / "frame_index.csv", *files, nb, step_config(cfg, "query_neighbors"))
    with pytest.raises(ValueError, match="diversity 'video'"):
        read_neighbors(nb, diversity="video")


# --------------------------------------------------------------------------- galleries


def test_gallery_tiles_the_frames_with_upscaled_pixels_and_room_for_an_extra_tile():
    rng = np.random.default_rng(3)
    query = rng.integers(0, 255, (64, 64, 1), dtype=np.uint8)
    neighbours = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(4)]
    row = GalleryRow(query, neighbours + [neighbours[0]], [0, 1, 2, 3, -1], ["p1", "p2", "p3", "p4", ""],
                     [0.1, 0.2, 0.3, 0.4, np.nan])
    one = compose_gallery([row])
    assert one.dtype == np.uint8 and one.ndim == 3 and one.shape[2] == 3
    # 64 px frames are upscaled 2x by pixel repetition: the query's pixels are in the picture
    big = np.kron(query[..., 0], np.ones((2, 2), np.uint8))
    hits = [(y, x) for y in range(one.shape[0] - 127) for x in range(0, 40) if np.array_equal(one[y : y + 128, x : x + 128, 0], big)]
    assert hits
    y0, x0 = hits[0]
    assert np.array_equal(one[y0 : y0 + 128, x0 + 136 : x0 + 264, 1], np.kron(neighbours[0], np.ones((2, 2), np.uint8)))
    with_extra = compose_gallery([GalleryRow(**{**row.__dict__, "extra": np.zeros((64, 64, 3), np.uint8)})])
    assert with_extra.shape[1] == one.shape[1] + 136  # one more tile per row; the padding is not drawn
    two = compose_gallery([row, row], title="video x")
    assert two.shape[0] > 2 * one.shape[0] - 20 and two.shape[1] == one.shape[1]
    with pytest.raises(ValueError):
        compose_gallery([GalleryRow(query.astype(np.float32), [], [], [], [])])


def test_gallery_png_reads_back_as_the_composed_image(tmp_path):
    import cv2

    rng = np.random.default_rng(4)
    imgs = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    out = render_gallery(imgs[0], imgs[1:], [1, 2], ["7", "8"], [0.5, 0.7], tmp_path / "g.png", title="t",
                         query_caption="frame 3\nCNN 2", extra_img=imgs[2])
    back = cv2.imread(str(out), cv2.IMREAD_COLOR)[..., ::-1]
    row = GalleryRow(imgs[0], imgs[1:], [1, 2], ["7", "8"], [0.5, 0.7], caption=["frame 3", "CNN 2"], extra=imgs[2])
    np.testing.assert_array_equal(back, compose_gallery([row], title="t"))
