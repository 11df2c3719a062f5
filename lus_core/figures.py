"""Figures of the evaluation: confusion matrices, risk-coverage curves, the gain-over-CNN
forest plot, t-SNE maps (raw pixels, softmax, embeddings; as in the study) and galleries of the
most uncertain test frames beside their nearest training frames.

Every ``plot_*`` function takes plain arrays and one output path and writes one png
(matplotlib, Agg backend, written atomically).  :func:`evaluation_figures` draws the whole set
for :func:`lus_core.evaluation.run_evaluate` and returns a manifest the report reads.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import h5py  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lus_core.io_utils import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

__all__ = [
    "plot_confusion",
    "plot_risk_coverage",
    "plot_forest",
    "plot_tsne_panels",
    "tsne_2d",
    "load_frame_images",
    "raw_pixel_features",
    "render_gallery_simple",
    "get_gallery_renderer",
    "make_galleries",
    "evaluation_figures",
]

SCORE_COLORS = ["#2c7bb6", "#abd9e9", "#fdae61", "#d7191c", "#7b3294", "#008837", "#636363"]
DPI = 110


def _save(fig, out_png) -> Path:
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)
    return out_png


def _colors(n: int) -> list[str]:
    if n <= len(SCORE_COLORS):
        return SCORE_COLORS[:n]
    cmap = plt.get_cmap("viridis", n)
    return [matplotlib.colors.to_hex(cmap(i)) for i in range(n)]


# --------------------------------------------------------------------------- confusion matrix


def plot_confusion(cm, class_names: Sequence[str], title: str, out_png, normalize: bool = True) -> Path:
    """Row-normalised confusion matrix (colour = recall share), counts written in each cell."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm
    c = cm.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * c, 0.8 + 0.9 * c))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    for i in range(c):
        for j in range(c):
            txt = f"{int(cm[i, j])}" + (f"\n{shown[i, j]:.0%}" if normalize else "")
            ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black")
    ax.set_xticks(range(c), class_names)
    ax.set_yticks(range(c), class_names)
    ax.set_xlabel("predicted score")
    ax.set_ylabel("true score")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- risk-coverage


def _risk_coverage(confidence, correct):
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    err = 1.0 - np.asarray(correct, dtype=np.float64)[order]
    n = np.arange(1, len(err) + 1)
    return n / max(len(err), 1), np.cumsum(err) / n


def plot_risk_coverage(curves: Mapping[str, tuple], title: str, out_png) -> Path:
    """One curve per confidence method: keep the most confident frames first; y = CNN error
    among the kept frames.  ``curves[method] = (confidence, correct, trusted)``; the marker is
    the method's operating point (its ``trusted`` set).  Dashed: the best any detector could do."""
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    cmap = plt.get_cmap("tab10")
    correct_any = None
    for i, (name, (conf, correct, trusted)) in enumerate(sorted(curves.items())):
        correct = np.asarray(correct, bool)
        trusted = np.asarray(trusted, bool)
        correct_any = correct
        cov, risk = _risk_coverage(conf, correct)
        aurc = float(risk.mean()) if len(risk) else float("nan")
        col = cmap(i % 10)
        ax.plot(cov, risk, color=col, lw=1.4, label=f"{name} (AURC {aurc:.3f})")
        if trusted.any():
            ax.plot([trusted.mean()], [1.0 - correct[trusted].mean()], "o", color=col, ms=6, mec="black")
    if correct_any is not None and len(correct_any):
        acc = correct_any.mean()
        cov = np.linspace(1.0 / len(correct_any), 1.0, 200)
        ax.plot(cov, np.clip((cov - acc) / cov, 0, None), "k--", lw=1, label="oracle detector")
        ax.axhline(1 - acc, color="grey", lw=0.8, ls=":", label=f"CNN error, all frames ({1 - acc:.1%})")
    ax.set_xlabel("coverage (share of test frames the CNN keeps)")
    ax.set_ylabel("selective risk (CNN error on kept frames)")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, None)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- forest plot


def plot_forest(matrix: pd.DataFrame, out_png, top: int = 30, metric: str = "accuracy") -> Path:
    """Gain over the CNN alone (paired bootstrap CI) for the ``top`` combined configurations and
    the best row of every framing type; red = CI excludes 0."""
    d = f"delta_{metric}"
    comb = matrix[matrix["row_type"] == "combined"].head(top)
    framing = [matrix[matrix["row_type"] == t].head(1) for t in
               ("fallback_only", "oracle_detector", "oracle_fallback")]
    sub = pd.concat([comb, *framing])
    if sub.empty:
        sub = matrix.head(top)
    n = len(sub)
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.22 * n))
    y = np.arange(n)[::-1]
    est = sub[d].to_numpy(float) * 100
    lo = sub[f"{d}_lo"].to_numpy(float) * 100
    hi = sub[f"{d}_hi"].to_numpy(float) * 100
    sig = sub[f"{d}_significant"].astype(bool).to_numpy()
    oracle = sub["row_type"].str.startswith("oracle").to_numpy()
    for yi, e, lo_, hi_, s, o in zip(y, est, lo, hi, sig, oracle, strict=True):
        col = "#888888" if o else ("#d7191c" if s else "#2c7bb6")
        ax.plot([lo_, hi_], [yi, yi], color=col, lw=1.5)
        ax.plot([e], [yi], "o", color=col, ms=4)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, sub["config_id"].tolist(), fontsize=6.5)
    ax.set_xlabel(f"{metric} minus CNN alone (percentage points), {n} rows")
    ax.set_title("Gain over the CNN alone, paired patient bootstrap (red: CI excludes 0, grey: oracle)",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- frames from the store


def _resolve_h5(p: str, base: Path) -> Path:
    cand = [Path(p), base / p, base / Path(p).name, base / "frames" / Path(p).name]
    for c in cand:
        if c.exists():
            return c
    raise FileNotFoundError(f"frame store file {p!r} not found (tried {[str(c) for c in cand]})")


def load_frame_images(frame_index_csv, frame_ids) -> list[np.ndarray]:
    """The stored uint8 frames (H, W, C) of ``frame_ids`` (in that order), via frame_index.csv."""
    fi = pd.read_csv(frame_index_csv).set_index("frame_id")
    frame_ids = np.asarray(frame_ids, dtype=np.int64)
    sub = fi.loc[frame_ids, ["h5", "row"]]
    base = Path(frame_index_csv).parent
    out: list[np.ndarray | None] = [None] * len(frame_ids)
    for h5, grp in sub.reset_index().groupby("h5", sort=True):
        rows = grp["row"].to_numpy(np.int64)
        uniq, inv = np.unique(rows, return_inverse=True)
        with h5py.File(_resolve_h5(str(h5), base), "r") as f:
            imgs = f["frames"][uniq]
        for pos, j in zip(grp.index.to_numpy(), inv.ravel(), strict=True):
            out[pos] = imgs[j]
    return out  # type: ignore[return-value]


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] == 3:
        return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if img.ndim == 3:
        return img[..., 0]
    return img


def _area_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Box-average a 2-D image to size x size (nearest sampling where it is smaller)."""
    out = img
    for axis in (0, 1):
        n = out.shape[axis]
        if n >= size:
            edges = np.linspace(0, n, size + 1).astype(np.int64)
            sums = np.add.reduceat(out, edges[:-1], axis=axis)
            widths = np.diff(edges).reshape((-1, 1) if axis == 0 else (1, -1))
            out = sums / widths
        else:
            idx = np.minimum((np.arange(size) * n) // size, n - 1)
            out = np.take(out, idx, axis=axis)
    return out


def raw_pixel_features(frame_index_csv, frame_ids, size: int = 16) -> np.ndarray:
    """(n, size*size) float32 in [0, 1]: frames as grayscale, box-downsampled to size x size."""
    imgs = load_frame_images(frame_index_csv, frame_ids)
    return np.stack([_area_resize(_gray(im), size).ravel() / 255.0 for im in imgs]).astype(np.float32)


# --------------------------------------------------------------------------- t-SNE


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of the rows of ``x`` (openTSNE, one thread; sklearn if openTSNE is missing)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 5:
        return np.zeros((n, 2))
    perp = float(max(2.0, min(perplexity, (n - 1) / 3.0)))
    x = (x - x.mean(axis=0)) / (x.std(axis=0).mean() + 1e-12)
    try:
        from openTSNE import TSNE

        emb = TSNE(n_components=2, perplexity=perp, random_state=seed, n_jobs=1, initialization="pca",
                   verbose=False).fit(x)
        return np.asarray(emb)
    except ImportError:
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=perp, random_state=seed, init="pca").fit_transform(x)


def plot_tsne_panels(panels: Mapping[str, np.ndarray], labels, class_names: Sequence[str], title: str,
                     out_png, is_test=None) -> Path:
    """One scatter per feature space, points coloured by score; test frames ringed in black."""
    labels = np.asarray(labels, dtype=np.int64)
    is_test = np.zeros(len(labels), bool) if is_test is None else np.asarray(is_test, bool)
    cols = _colors(len(class_names))
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    for ax, (name, xy) in zip(axes[0], panels.items(), strict=True):
        xy = np.asarray(xy)
        for ci, cname in enumerate(class_names):
            m = labels == ci
            ax.scatter(xy[m & ~is_test, 0], xy[m & ~is_test, 1], s=7, c=cols[ci], label=f"score {cname}",
                       linewidths=0)
            ax.scatter(xy[m & is_test, 0], xy[m & is_test, 1], s=11, c=cols[ci], edgecolors="black",
                       linewidths=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7, markerscale=2, frameon=False, loc="best")
    fig.suptitle(title + " (ringed: test patients)", fontsize=10)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- galleries


def _show(ax, img):
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def render_gallery_simple(query_img, neighbor_imgs, labels, patients, distances, out_png, *,
                          title: str | None = None, class_names: Sequence[str] | None = None) -> Path:
    """A query frame beside its nearest training frames (label, patient, distance under each).

    Same positional signature as ``lus_core.similarity.gallery.render_gallery``; used when that
    module is not there.
    """
    k = len(neighbor_imgs)
    fig, axes = plt.subplots(1, k + 1, figsize=(1.9 * (k + 1), 2.4), squeeze=False)
    _show(axes[0][0], query_img)
    axes[0][0].set_title("query", fontsize=8)
    for spine in axes[0][0].spines.values():
        spine.set_edgecolor("#d7191c")
        spine.set_linewidth(2)
    for i in range(k):
        ax = axes[0][i + 1]
        _show(ax, neighbor_imgs[i])
        lab = labels[i]
        name = class_names[int(lab)] if class_names is not None else lab
        ax.set_title(f"score {name}\n{patients[i]}  d={float(distances[i]):.3g}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    return _save(fig, out_png)


def get_gallery_renderer() -> Callable:
    """``lus_core.similarity.gallery.render_gallery`` when present, else :func:`render_gallery_simple`."""
    try:
        from lus_core.similarity.gallery import render_gallery
    except ModuleNotFoundError as e:
        if e.name not in ("lus_core.similarity", "lus_core.similarity.gallery"):
            raise
        return render_gallery_simple
    except ImportError as e:
        if "render_gallery" not in str(e):
            raise
        return render_gallery_simple
    return render_gallery


def _accepts(fn: Callable, *names: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return all(n in params for n in names) or any(p.kind is p.VAR_KEYWORD for p in params.values())


def make_galleries(query_ids, neighbor_ids, neighbor_labels, distances, frame_index_csv, out_dir, *,
                   render: Callable | None = None, captions: Sequence[str] | None = None,
                   prefix: str = "gallery", class_names: Sequence[str] | None = None) -> list[Path]:
    """One png per query frame: the frame and its neighbours, images read from the frame store.

    ``neighbor_ids``/``neighbor_labels``/``distances``: (n_queries, k); padded neighbours (id or
    label -1, non-finite distance) are left out.  ``render`` has the signature of
    ``render_gallery(query_img, neighbor_imgs, labels, patients, distances, out_png)``; ``title``
    and ``class_names`` keywords are passed when it takes them.
    """
    render = render or get_gallery_renderer()
    fi = pd.read_csv(frame_index_csv, usecols=["frame_id", "patient"]).set_index("frame_id")
    query_ids = np.asarray(query_ids, dtype=np.int64)
    neighbor_ids = np.asarray(neighbor_ids, dtype=np.int64).reshape(len(query_ids), -1)
    neighbor_labels = np.asarray(neighbor_labels, dtype=np.int64).reshape(neighbor_ids.shape)
    distances = np.asarray(distances, dtype=np.float64).reshape(neighbor_ids.shape)
    keep = [np.flatnonzero((neighbor_ids[i] >= 0) & (neighbor_labels[i] >= 0) & np.isfinite(distances[i]))
            for i in range(len(query_ids))]
    all_ids = np.concatenate([query_ids, *[neighbor_ids[i, kp] for i, kp in enumerate(keep)]])
    imgs = load_frame_images(frame_index_csv, all_ids)
    pos = len(query_ids)
    with_kw = _accepts(render, "title", "class_names")
    out = []
    for i in range(len(query_ids)):
        kp = keep[i]
        nb = imgs[pos:pos + len(kp)]
        pos += len(kp)
        ids = neighbor_ids[i, kp]
        pats = fi.loc[ids, "patient"].astype(str).tolist()
        path = Path(out_dir) / f"{prefix}_{i:02d}.png"
        args = (imgs[i], nb, neighbor_labels[i, kp].tolist(), pats, distances[i, kp], path)
        if with_kw:
            render(*args, title=captions[i] if captions else None, class_names=class_names)
        else:
            render(*args)
        out.append(path)
    return out


# --------------------------------------------------------------------------- the whole set


def _entry(path, title, caption, kind) -> dict:
    return {"file": str(path), "title": title, "caption": caption, "kind": kind}


def evaluation_figures(*, matrix: pd.DataFrame, ts, preds_test, preds_full, conf_full, neigh_full,
                       frame_index_csv, out_dir, class_names: Sequence[str], config: Mapping,
                       gallery_renderer: Callable | None = None,
                       neigh_gallery: Mapping | None = None) -> tuple[list[dict], list[dict]]:
    """All evaluation figures; returns (figures manifest, galleries manifest).

    ``neigh_gallery[(backbone, space)]``: the neighbours the galleries show (e.g. one per
    video); default ``neigh_full``, the lists the fallback scores come from."""
    from lus_core.evaluation import load_embedding

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = config.get("evaluate", {}) if isinstance(config, Mapping) else {}
    seed = int(config.get("seed", 0)) if isinstance(config, Mapping) else 0
    figs: list[dict] = []
    gals: list[dict] = []

    def _cm(row):
        import json

        return np.asarray(json.loads(row["confusion_matrix"]))

    # confusion matrices: CNN alone per backbone, and the best combined configuration
    for _, r in matrix[matrix["row_type"] == "cnn"].iterrows():
        p = plot_confusion(_cm(r), class_names, f"CNN alone, {r['backbone']}: accuracy {r['accuracy']:.1%}",
                           out_dir / f"confusion_cnn_{r['backbone']}.png")
        figs.append(_entry(p, f"Confusion matrix, CNN alone ({r['backbone']})",
                           "Test frames; rows true score, columns predicted, cells count and row share.",
                           "confusion"))
    comb = matrix[matrix["row_type"] == "combined"]
    best = comb.iloc[0] if len(comb) else None
    if best is not None:
        p = plot_confusion(_cm(best), class_names, f"Best: {best['config_id']}\naccuracy {best['accuracy']:.1%}",
                           out_dir / "confusion_best.png")
        figs.append(_entry(p, "Confusion matrix, best combined configuration", best["config_id"], "confusion"))

    # forest plot of the gains
    p = plot_forest(matrix, out_dir / "forest_accuracy.png")
    figs.append(_entry(p, "Gain over the CNN alone",
                       "Accuracy difference to the CNN alone of the same backbone with its 95% paired "
                       "patient-bootstrap interval; the top combined configurations and the best framing rows.",
                       "forest"))

    # risk-coverage per backbone
    for b in preds_test:
        curves = {m: (c, preds_test[b].pred == ts.y, t) for (bb, m), (c, t, _s) in conf_full.items() if bb == b}
        if not curves:
            continue
        p = plot_risk_coverage(curves, f"Risk-coverage on test frames, {b}", out_dir / f"risk_coverage_{b}.png")
        figs.append(_entry(p, f"Risk-coverage curves ({b})",
                           "Frames kept most-confident first; CNN error among kept frames. Dots: each "
                           "method's threshold. Lower is better; dashed: a perfect detector.", "risk_coverage"))

    # t-SNE maps, as in the study
    max_pts = int(ev.get("tsne_max_points", 500)) if isinstance(ev, Mapping) else 500
    ref = next(iter(preds_full.values()))
    rng = np.random.default_rng(seed)
    n_all = len(ref.frame_id)
    take = np.sort(rng.choice(n_all, size=min(max_pts, n_all), replace=False)) if n_all else np.zeros(0, int)
    if len(take) >= 5:
        ids = ref.frame_id[take]
        raw_xy = None
        try:
            size = int(config.get("similarity", {}).get("raw_size", 16))
            raw_xy = tsne_2d(raw_pixel_features(frame_index_csv, ids, size), seed)
        except (OSError, KeyError, ValueError) as e:
            log.warning("raw-pixel t-SNE skipped: %s", e)
        for b, pf in preds_full.items():
            rows = np.searchsorted(pf.frame_id, ids)  # predictions rows are in frame_id order
            if not np.array_equal(pf.frame_id[np.clip(rows, 0, len(pf.frame_id) - 1)], ids):
                order = np.argsort(pf.frame_id)
                rows = order[np.searchsorted(pf.frame_id[order], ids)]
            panels = {}
            if raw_xy is not None:
                panels["raw pixels (16x16 gray)"] = raw_xy
            panels["softmax"] = tsne_2d(pf.softmax[rows], seed)
            try:
                panels["CNN embedding"] = tsne_2d(load_embedding(pf.path, ids), seed)
            except (KeyError, OSError, ValueError) as e:
                log.warning("embedding t-SNE skipped for %s: %s", b, e)
            p = plot_tsne_panels(panels, pf.label[rows], class_names, f"t-SNE, {b}, {len(ids)} frames",
                                 out_dir / f"tsne_{b}.png", is_test=pf.split[rows] == "test")
            figs.append(_entry(p, f"t-SNE maps ({b})",
                               "Frames placed by similarity in each feature space, coloured by true score.",
                               "tsne"))

    # galleries: the most uncertain test frames of the best configuration and their neighbours
    n_gal = int(ev.get("n_gallery", 6)) if isinstance(ev, Mapping) else 6
    if best is not None and n_gal > 0:
        b, m, s, k = best["backbone"], best["confidence"], best["space"], int(best["k"])
        conf, trusted, _ = conf_full[(b, m)]
        div = best.get("diversity")
        nid, nlab, ndist = neigh_full[(b, s, div) if isinstance(div, str) and div not in ("", "none") else (b, s)]
        q = np.argsort(conf, kind="stable")[:n_gal]
        cnn = preds_test[b].pred
        from lus_core.evaluation import get_fallback_fn

        fb = np.asarray(get_fallback_fn()(nlab[q, :k], ndist[q, :k], len(class_names), best["fallback"]))
        caps = [
            f"test frame {int(ts.frame_id[i])} (patient {ts.patient[i]}): true {class_names[ts.y[i]]}, "
            f"CNN {class_names[cnn[i]]}, fallback ({best['fallback']}, k={k}, {s}) {class_names[fb[j]]}; "
            f"{m} confidence {conf[i]:.2f}{'' if trusted[i] else ' (not trusted)'}"
            for j, i in enumerate(q)
        ]
        try:
            gid, glab, gdist = (neigh_gallery or neigh_full)[(b, s)]
            paths = make_galleries(ts.frame_id[q], gid[q, :k], glab[q, :k], gdist[q, :k], frame_index_csv,
                                   out_dir, render=gallery_renderer, captions=caps, class_names=class_names)
            gals = [_entry(pth, f"Uncertain test frame {j + 1}", cap, "gallery") | {
                "frame_id": int(ts.frame_id[i]), "true": int(ts.y[i]), "cnn": int(cnn[i]), "fallback": int(fb[j]),
                "confidence": float(conf[i]), "trusted": bool(trusted[i])}
                for j, (i, pth, cap) in enumerate(zip(q, paths, caps, strict=True))]
        except (OSError, KeyError, ValueError) as e:
            log.warning("galleries skipped: %s", e)
    return figs, gals


def figure_paths(manifest: Sequence[Mapping], base: str | os.PathLike) -> list[Path]:
    return [Path(base) / m["file"] for m in manifest]
