"""Figures of the confidence report (matplotlib's Agg canvas, no pyplot state, no display)."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lus_core.io_utils import atomic_path

from . import metrics as M


def _save(fig: Figure, path: str | os.PathLike) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_risk_coverage(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path,
    title: str = "",
    error_rate: float | None = None,
    oracle: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One risk-coverage line per method; `curves[name] = (conf, correct)` on the test frames."""
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for name, (conf, correct) in curves.items():
        cov, risk, _ = M.risk_coverage_curve(conf, correct)
        if len(cov):
            ax.plot(
                np.concatenate([[0.0], cov]),
                np.concatenate([[risk[0]], risk]),
                drawstyle="steps-post",
                label=f"{name} (AUGRC {M.augrc(conf, correct):.4f})",
            )
    if oracle is not None:
        cov, risk, _ = M.risk_coverage_curve(*oracle)
        ax.plot(cov, risk, color="k", linestyle=":", label="oracle")
    if error_rate is not None:
        ax.axhline(error_rate, color="grey", linestyle="--", linewidth=0.8, label="no selection")
    ax.set_xlabel("coverage (fraction of frames trusted)")
    ax.set_ylabel("selective risk (error rate of trusted frames)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_title(title or "Risk-coverage (test patients)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_reliability(
    before: tuple[np.ndarray, np.ndarray],
    after: tuple[np.ndarray, np.ndarray],
    path,
    n_bins: int = 15,
    title: str = "",
    temperature: float | None = None,
) -> None:
    """Reliability diagrams of the CNN's softmax before / after temperature scaling;
    `before = (probs, labels)`, `after = (probs_scaled, labels)`."""
    fig = Figure(figsize=(10, 4.8), layout="constrained")
    for i, (name, (p, y)) in enumerate([("before", before), ("after", after)]):
        ax = fig.add_subplot(1, 2, i + 1)
        r = M.reliability_bins(p, y, n_bins)
        centers = 0.5 * (r["edges"][:-1] + r["edges"][1:])
        width = r["edges"][1] - r["edges"][0]
        m = r["count"] > 0
        ax.bar(centers[m], r["accuracy"][m], width=width, edgecolor="k", alpha=0.7, label="accuracy")
        ax.bar(
            centers[m],
            r["confidence"][m] - r["accuracy"][m],
            bottom=r["accuracy"][m],
            width=width,
            color="red",
            alpha=0.3,
            edgecolor="r",
            hatch="//",
            label="gap",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        sub = f"{name} temperature scaling" + (
            f" (T = {temperature:.2f})" if name == "after" and temperature else ""
        )
        ax.set_title(f"{sub}\nECE = {M.ece(p, y, n_bins):.3f}")
        ax.set_xlabel("confidence (max softmax)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title)
    _save(fig, path)
