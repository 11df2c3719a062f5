"""Figures of the confidence methods: the one risk-coverage plot (the confidence report's and the
evaluation's) and the reliability diagram, in the project's figure style (lus_core.plotting)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lus_core import plotting
from lus_core.confidence import failure_metrics as M


def plot_risk_coverage(curves: Mapping[str, tuple], path: str | os.PathLike, title: str = "") -> Path:
    """One curve per confidence method: keep the most confident frames first; y = the CNN's error
    among the kept frames. ``curves[method] = (confidence, correct)`` or ``(confidence, correct,
    trusted)``: with ``trusted`` a dot marks the method's operating point. Beside them: the CNN's
    error on all frames (no selection) and, dashed, the best any detector could do (the oracle
    keeps every correct frame first)."""
    fig = plotting.figure((6.0, 4.2))
    ax = plotting.subplots(fig)
    colors = plotting.matplotlib.colormaps["tab10"]
    correct_any = None
    for i, (name, curve) in enumerate(sorted(curves.items())):
        conf, correct = curve[0], np.asarray(curve[1], bool)
        trusted = np.asarray(curve[2], bool) if len(curve) > 2 and curve[2] is not None else None
        correct_any = correct
        cov, risk, _ = M.risk_coverage_curve(conf, correct)
        if not len(cov):
            continue
        col = colors(i % 10)
        ax.plot(cov, risk, color=col, lw=1.4, label=f"{name} (AUGRC {M.augrc(conf, correct):.3f})")
        if trusted is not None and trusted.any():
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
    ax.set_title(title or "Risk-coverage (test patients)")
    ax.legend(loc="upper left")
    return plotting.save_png(fig, path)


def plot_reliability(
    before: tuple[np.ndarray, np.ndarray],
    after: tuple[np.ndarray, np.ndarray],
    path,
    n_bins: int = 15,
    title: str = "",
    temperature: float | None = None,
) -> Path:
    """Reliability diagrams of the CNN's softmax before / after temperature scaling;
    `before = (probs, labels)`, `after = (probs_scaled, labels)`."""
    fig = plotting.figure((10, 4.8), layout="constrained")
    axes = plotting.subplots(fig, 1, 2)
    for ax, (name, (p, y)) in zip(axes, [("before", before), ("after", after)], strict=True):
        r = M.reliability_bins(p, y, n_bins)
        centers = 0.5 * (r["edges"][:-1] + r["edges"][1:])
        width = r["edges"][1] - r["edges"][0]
        m = r["count"] > 0
        ax.bar(centers[m], r["accuracy"][m], width=width, edgecolor="k", alpha=0.7, label="accuracy")
        ax.bar(centers[m], r["confidence"][m] - r["accuracy"][m], bottom=r["accuracy"][m], width=width,
               color="red", alpha=0.3, edgecolor="r", hatch="//", label="gap")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        sub = f"{name} temperature scaling" + (f" (T = {temperature:.2f})" if name == "after" and temperature else "")
        ax.set_title(f"{sub}\nECE = {M.ece(p, y, n_bins):.3f}")
        ax.set_xlabel("confidence (max softmax)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left")
    if title:
        fig.suptitle(title)
    return plotting.save_png(fig, path)
