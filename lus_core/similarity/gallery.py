"""A PNG of a query frame beside its nearest training frames: what the clinician is shown.

Each neighbour is captioned with its score, patient and distance.  Images are uint8 (H, W),
(H, W, 1) (grayscale, shown in gray) or (H, W, 3) RGB.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lus_core.frame_store import FrameReader  # noqa: E402
from lus_core.io_utils import atomic_path  # noqa: E402

__all__ = ["render_gallery", "render_frame_gallery"]

MAX_COLS = 6


def _show(ax, img: np.ndarray) -> None:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax, color: str, width: float) -> None:
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def render_gallery(
    query_img: np.ndarray,
    neighbor_imgs: Sequence[np.ndarray],
    labels: Sequence[int],
    patients: Sequence[str],
    distances: Sequence[float],
    out_png: str | Path,
    title: str | None = None,
    query_caption: str | None = None,
    class_names: Sequence | None = None,
) -> Path:
    """Write a gallery PNG (atomically): the query first (blue frame), then the neighbours.

    ``labels`` are class indices, shown through ``class_names`` when given (e.g. config
    ``classes``); a label -1 / NaN distance (padding) is skipped.  Returns the path.
    """

    def name(label) -> str:
        label = int(label)
        return (
            str(class_names[label])
            if class_names is not None and 0 <= label < len(class_names)
            else str(label)
        )

    shown = [
        (img, lab, pat, d)
        for img, lab, pat, d in zip(neighbor_imgs, labels, patients, distances, strict=True)
        if int(lab) >= 0 and np.isfinite(d)
    ]
    n_panels = 1 + len(shown)
    ncols = min(n_panels, MAX_COLS)
    nrows = int(np.ceil(n_panels / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.2 * ncols, 2.6 * nrows + (0.4 if title else 0)), squeeze=False
    )
    axes = axes.ravel()
    _show(axes[0], query_img)
    _frame(axes[0], "tab:blue", 3)
    axes[0].set_title(query_caption or "query", fontsize=9, color="tab:blue")
    for i, (img, lab, pat, d) in enumerate(shown, start=1):
        _show(axes[i], img)
        _frame(axes[i], "0.3", 1.0)
        axes[i].set_title(f"#{i} score {name(lab)}\npatient {pat}\nd = {float(d):.3g}", fontsize=8)
    for ax in axes[n_panels:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return out_png


def render_frame_gallery(
    frame_index: pd.DataFrame,
    query_frame_id: int,
    neighbor_frame_ids: Sequence[int],
    neighbor_labels: Sequence[int],
    distances: Sequence[float],
    out_png: str | Path,
    title: str | None = None,
    query_caption: str | None = None,
    class_names: Sequence | None = None,
) -> Path:
    """Gallery from frame ids (frame_index.csv + the frame store), e.g. one row of a neighbours file."""
    pos = pd.Series(np.arange(len(frame_index)), index=frame_index["frame_id"].to_numpy())
    ids = [int(f) for f in neighbor_frame_ids]
    keep = [i for i, f in enumerate(ids) if f >= 0]
    reader = FrameReader(frame_index)
    try:
        query_img = reader.frame(int(pos[int(query_frame_id)]))
        imgs = [reader.frame(int(pos[ids[i]])) for i in keep]
    finally:
        reader.reset()
    patients = frame_index["patient"].astype(str).to_numpy()
    return render_gallery(
        query_img,
        imgs,
        [neighbor_labels[i] for i in keep],
        [patients[pos[ids[i]]] for i in keep],
        [distances[i] for i in keep],
        out_png,
        title=title,
        query_caption=query_caption,
        class_names=class_names,
    )
