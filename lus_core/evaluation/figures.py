"""Figures of the evaluation: confusion matrices, risk-coverage curves, the gain-over-CNN
forest plot, t-SNE maps (raw pixels, softmax, embeddings; as in the study) and galleries of the
most uncertain test frames beside their nearest training frames.

Every ``plot_*`` function takes plain arrays and one output path and writes one png
(matplotlib, Agg backend, written atomically).  :func:`evaluation_figures` draws the whole set
for :func:`lus_core.evaluation.step.run_evaluate` and returns a manifest the report reads.
Risk-coverage curves and their areas come from lus_core.confidence.failure_metrics, raw-pixel vectors
from lus_core.similarity.features, fallback scores from lus_core.similarity.fallback and the
galleries from lus_core.similarity.gallery: one implementation of each.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from openTSNE import TSNE

from lus_core import plotting
from lus_core.confidence.plots import plot_risk_coverage
from lus_core.frames.store import read_frame_index
from lus_core.similarity.fallback import fallback_scores
from lus_core.similarity.features import raw_features_from_store
from lus_core.similarity.gallery import render_frame_gallery

log = logging.getLogger(__name__)

__all__ = [
    "FigureInputs",
    "plot_confusion",
    "plot_forest",
    "plot_tsne_panels",
    "tsne_2d",
    "evaluation_figures",
]



# --------------------------------------------------------------------------- confusion matrix


def plot_confusion(cm, class_names: Sequence[str], title: str, out_png, normalize: bool = True) -> Path:
    """Row-normalised confusion matrix (colour = recall share), counts written in each cell."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm
    c = cm.shape[0]
    fig = plotting.figure((1.0 + 0.9 * c, 0.8 + 0.9 * c))
    ax = plotting.subplots(fig)
    ax.grid(False)
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
    return plotting.save_png(fig, out_png)


# --------------------------------------------------------------------------- forest plot


def plot_forest(matrix: pd.DataFrame, out_png, top: int = 30, metric: str = "accuracy") -> Path:
    """Gain over the CNN alone (paired bootstrap CI) for the ``top`` combined configurations and
    the best row of every framing type; red = CI excludes 0, grey = oracle rows."""
    d = f"delta_{metric}"
    comb = matrix[matrix["row_type"] == "combined"].head(top)
    framing = [matrix[matrix["row_type"] == t].head(1) for t in
               ("fallback_only", "oracle_detector", "oracle_fallback")]
    sub = pd.concat([comb, *framing])
    if sub.empty:
        sub = matrix.head(top)
    sig = sub[f"{d}_significant"].astype(bool).to_numpy()
    oracle = sub["row_type"].str.startswith("oracle").to_numpy()
    colors = [plotting.ROW_COLORS["oracle"] if o else ("#d7191c" if s else "#2c7bb6") for s, o in zip(sig, oracle, strict=True)]
    fig = plotting.forest(sub["config_id"].tolist(), sub[d].to_numpy(float) * 100, sub[f"{d}_lo"].to_numpy(float) * 100,
                          sub[f"{d}_hi"].to_numpy(float) * 100, colors,
                          xlabel=f"{metric} minus CNN alone (percentage points), {len(sub)} rows",
                          title="Gain over the CNN alone, paired patient bootstrap (red: CI excludes 0, grey: oracle)",
                          reference=[0.0], width=8.0)
    return plotting.save_png(fig, out_png)


# --------------------------------------------------------------------------- t-SNE


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of the rows of ``x`` (openTSNE, one thread)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 5:
        return np.zeros((n, 2))
    perp = float(max(2.0, min(perplexity, (n - 1) / 3.0)))
    x = (x - x.mean(axis=0)) / (x.std(axis=0).mean() + 1e-12)
    emb = TSNE(n_components=2, perplexity=perp, random_state=seed, n_jobs=1, initialization="pca", verbose=False).fit(x)
    return np.asarray(emb)


def plot_tsne_panels(panels: Mapping[str, np.ndarray], labels, class_names: Sequence[str], title: str,
                     out_png, is_test=None) -> Path:
    """One scatter per feature space, points coloured by score; test frames ringed in black."""
    labels = np.asarray(labels, dtype=np.int64)
    is_test = np.zeros(len(labels), bool) if is_test is None else np.asarray(is_test, bool)
    cols = plotting.score_colors(len(class_names))
    n = len(panels)
    fig = plotting.figure((3.6 * n, 3.6))
    axes = plotting.subplots(fig, 1, n, squeeze=False)
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
        ax.grid(False)
    axes[0][0].legend(markerscale=2, loc="best")
    fig.suptitle(title + " (ringed: test patients)", fontsize=10)
    return plotting.save_png(fig, out_png)


# --------------------------------------------------------------------------- the whole set


def _entry(path, title, caption, kind) -> dict:
    return {"file": str(path), "title": title, "caption": caption, "kind": kind}


@dataclass
class FigureInputs:
    """What the evaluation's figures are drawn from. ``selected``: the matrix row of the selected
    configuration; ``gallery_config``: the row whose confidence and fallback the galleries show (a
    configuration with a fallback), or None; ``neigh_gallery``: the galleries' neighbour lists."""

    matrix: pd.DataFrame
    ts: object  # lus_core.evaluation.matrix.TestSet
    cnn_test: Mapping[str, np.ndarray]
    preds_full: Mapping
    conf_full: Mapping
    neigh_full: Mapping
    neigh_gallery: Mapping | None
    frame_index_csv: str | Path
    out_dir: str | Path
    class_names: Sequence[str]
    selected: Mapping
    gallery_config: Mapping | None
    seed: int
    n_gallery: int
    tsne_max_points: int
    raw_size: int


def evaluation_figures(inputs: FigureInputs) -> tuple[list[dict], list[dict]]:
    """All evaluation figures; returns (figures manifest, galleries manifest)."""
    matrix, ts, cnn_test, preds_full = inputs.matrix, inputs.ts, inputs.cnn_test, inputs.preds_full
    conf_full, neigh_full, neigh_gallery = inputs.conf_full, inputs.neigh_full, inputs.neigh_gallery
    frame_index_csv, class_names, selected = inputs.frame_index_csv, inputs.class_names, inputs.selected
    seed, n_gallery, raw_size = inputs.seed, inputs.n_gallery, inputs.raw_size
    out_dir = Path(inputs.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs: list[dict] = []
    gals: list[dict] = []

    def _cm(row):
        return np.asarray(json.loads(row["confusion_matrix"]))

    # confusion matrices: CNN alone per backbone, and the selected configuration
    for _, r in matrix[matrix["row_type"] == "cnn"].iterrows():
        p = plot_confusion(_cm(r), class_names, f"CNN alone, {r['backbone']}: accuracy {r['accuracy']:.1%}",
                           out_dir / f"confusion_cnn_{r['backbone']}.png")
        figs.append(_entry(p, f"Confusion matrix, CNN alone ({r['backbone']})",
                           "Test frames; rows true score, columns predicted, cells count and row share.",
                           "confusion"))
    p = plot_confusion(_cm(selected), class_names,
                       f"Selected: {selected['config_id']}\ntest accuracy {selected['accuracy']:.1%}",
                       out_dir / "confusion_selected.png")
    figs.append(_entry(p, "Confusion matrix, selected configuration (chosen on training patients)",
                       selected["config_id"], "confusion"))

    # forest plot of the gains
    p = plot_forest(matrix, out_dir / "forest_accuracy.png")
    figs.append(_entry(p, "Gain over the CNN alone (exploratory)",
                       "Accuracy difference to the CNN alone of the same backbone with its paired "
                       "patient-bootstrap interval; the top combined configurations by test accuracy and the "
                       "best framing rows. Sorted on the test patients: exploratory, not a selection.",
                       "forest"))

    # risk-coverage per backbone
    for b, cnn in cnn_test.items():
        curves = {m: (c, cnn == ts.y, t) for (bb, m), (c, t, _s) in conf_full.items() if bb == b}
        if not curves:
            continue
        p = plot_risk_coverage(curves, out_dir / f"risk_coverage_{b}.png", f"Risk-coverage on test frames, {b}")
        figs.append(_entry(p, f"Risk-coverage curves ({b})",
                           "Frames kept most-confident first (tied confidences as one step); CNN error among "
                           "kept frames. Legend: AUGRC (lower is better). Dots: each method's threshold; "
                           "dashed: a perfect detector.", "risk_coverage"))

    # t-SNE maps, as in the study
    ref = next(iter(preds_full.values()))
    rng = np.random.default_rng(seed)
    n_all = len(ref.frame_id)
    take = (np.sort(rng.choice(n_all, size=min(inputs.tsne_max_points, n_all), replace=False)) if n_all
            else np.zeros(0, int))
    if len(take) >= 5:
        ids = ref.frame_id[take]
        raw_xy = None
        try:
            raw_xy = tsne_2d(raw_features_from_store(read_frame_index(frame_index_csv), ids, raw_size), seed)
        except (OSError, KeyError, ValueError) as e:
            log.warning("raw-pixel t-SNE skipped: %s", e)
        for b, pf in preds_full.items():
            order = np.argsort(pf.frame_id, kind="stable")
            rows = order[np.searchsorted(pf.frame_id[order], ids)]
            panels = {}
            if raw_xy is not None:
                panels[f"raw pixels ({raw_size}x{raw_size} gray)"] = raw_xy
            panels["softmax"] = tsne_2d(pf.softmax[rows], seed)
            panels["CNN embedding (all model)"] = tsne_2d(pf.embedding_all[rows], seed)
            p = plot_tsne_panels(panels, pf.label[rows], class_names, f"t-SNE, {b}, {len(ids)} frames",
                                 out_dir / f"tsne_{b}.png", is_test=pf.split[rows] == "test")
            figs.append(_entry(p, f"t-SNE maps ({b})",
                               "Frames placed by similarity in each feature space, coloured by true score.",
                               "tsne"))

    # galleries: the most uncertain test frames of a configuration with a fallback, and their neighbours
    g = inputs.gallery_config
    if g is not None and n_gallery > 0 and g["row_type"] == "combined":
        b, m, s, k = g["backbone"], g["confidence"], g["space"], int(g["k"])
        conf, trusted, _ = conf_full[(b, m)]
        nid, nlab, ndist = neigh_full[(b, s, g.get("diversity") or "none")]  # the lists the fallback used
        # the pictures: the gallery's list (e.g. one neighbour per video), else the fallback's
        gid, glab, gdist = (neigh_gallery or {}).get((b, s), (nid, nlab, ndist))
        q = np.argsort(conf, kind="stable")[:n_gallery]
        cnn = cnn_test[b]
        fb = fallback_scores(nlab[q, :k], ndist[q, :k], len(class_names), g["fallback"])
        fb = np.where(fb < 0, cnn[q], fb)
        caps = [
            f"test frame {int(ts.frame_id[i])} (patient {ts.patient[i]}): true {class_names[ts.y[i]]}, "
            f"CNN {class_names[cnn[i]]}, fallback ({g['fallback']}, k={k}, {s}) {class_names[fb[j]]}; "
            f"{m} confidence {conf[i]:.2f}{'' if trusted[i] else ' (not trusted)'}"
            for j, i in enumerate(q)
        ]
        try:
            index = read_frame_index(frame_index_csv)
            for j, i in enumerate(q):
                pth = render_frame_gallery(index, int(ts.frame_id[i]), gid[i, :k], glab[i, :k], gdist[i, :k],
                                           out_dir / f"gallery_{j:02d}.png", title=caps[j],
                                           class_names=list(class_names))
                gals.append(_entry(pth, f"Uncertain test frame {j + 1}", caps[j], "gallery") | {
                    "frame_id": int(ts.frame_id[i]), "true": int(ts.y[i]), "cnn": int(cnn[i]),
                    "fallback": int(fb[j]), "confidence": float(conf[i]), "trusted": bool(trusted[i]),
                    "config_id": g["config_id"]})
        except (OSError, KeyError, ValueError) as e:
            log.warning("galleries skipped: %s", e)
    return figs, gals
