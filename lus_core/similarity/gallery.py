"""PNG galleries of query frames beside their nearest training frames: what the clinician is shown.

Drawn at image speed: the stored uint8 frames are tiled with numpy, captions are drawn with
OpenCV and the PNG is encoded by OpenCV at a low compression level (a gallery costs a few
milliseconds, not a matplotlib figure).  One gallery holds one or more *rows*; a row is a
query frame (blue border, captioned with e.g. its CNN score and confidence), an optional extra
tile (e.g. a Grad-CAM overlay, uint8 RGB), then its neighbours, each captioned with score,
patient and distance.  Small frames (64 px) are upscaled by an integer factor with nearest
neighbour (crisp pixels), other sizes with linear interpolation.

Images are uint8 (H, W), (H, W, 1) (grayscale) or (H, W, 3) RGB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lus_core.frames.store import FrameReader
from lus_core.io_utils import atomic_path

__all__ = ["GalleryRow", "compose_gallery", "write_png", "render_gallery", "render_rows", "render_frame_gallery"]

TILE = 128  # tile side in px: smaller frames are upscaled to it, larger ones keep their size up to MAX_TILE
MAX_TILE = 224
GAP = 8
FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_SCALE = 0.42
TITLE_SCALE = 0.5
LINE_H = 15
# zlib level 1 with the 'up' filter only: a fraction of the default's time, files ~5% larger
PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
WHITE, BLACK, GRAY = (255, 255, 255), (20, 20, 20), (110, 110, 110)
QUERY_BLUE = (31, 119, 180)  # matplotlib's tab:blue, as before
# ordinal scores from mild to severe: green, olive, orange, red (RGB); more classes reuse the ramp
SCORE_COLOURS = [(26, 150, 65), (140, 140, 20), (230, 120, 20), (200, 30, 30)]


@dataclass
class GalleryRow:
    """One query and its neighbours (padding: label -1 or a non-finite distance, skipped)."""

    query: np.ndarray
    neighbors: Sequence[np.ndarray]
    labels: Sequence[int]
    patients: Sequence[str]
    distances: Sequence[float]
    caption: Sequence[str] = ("query",)
    title: str | None = None
    extra: np.ndarray | None = None
    extra_caption: Sequence[str] = ("Grad-CAM",)


def _rgb(img) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"gallery images must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    if img.ndim == 3 and img.shape[-1] == 3:
        return img
    raise ValueError(f"gallery images must be (H, W), (H, W, 1) or (H, W, 3), got {img.shape}")


def _tile_side(images: Sequence[np.ndarray]) -> int:
    largest = max(max(np.asarray(i).shape[:2]) for i in images)
    return int(min(max(TILE, largest), MAX_TILE))


def _fit(img: np.ndarray, side: int) -> np.ndarray:
    """The image scaled (aspect kept) into a side x side square on a black background."""
    img = _rgb(img)
    h, w = img.shape[:2]
    scale = side / max(h, w)
    if scale != 1:
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        if scale > 1 and float(scale).is_integer():
            interp = cv2.INTER_NEAREST  # crisp pixels for e.g. 64 -> 128
        else:
            interp = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        img = cv2.resize(img, new, interpolation=interp)
    out = np.zeros((side, side, 3), np.uint8)
    h, w = img.shape[:2]
    y, x = (side - h) // 2, (side - w) // 2
    out[y : y + h, x : x + w] = img
    return out


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, FONT, scale, 1)[0][0]


def _shorten(text: str, width: int, scale: float = TEXT_SCALE) -> str:
    if _text_width(text, scale) <= width:
        return text
    while text and _text_width(text + "..", scale) > width:
        text = text[:-1]
    return text + ".."


def _wrap(text: str, width: int, scale: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and _text_width(trial, scale) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def _put(canvas, text, x, y, colour=BLACK, scale=TEXT_SCALE, thickness=1) -> None:
    cv2.putText(canvas, text, (int(x), int(y)), FONT, scale, colour, thickness, cv2.LINE_AA)


def _border(canvas, x, y, side, colour, width) -> None:
    cv2.rectangle(canvas, (x - width, y - width), (x + side + width - 1, y + side + width - 1), colour, width)


def _score_colour(label: int, n_classes: int):
    if n_classes <= 1:
        return BLACK
    pos = label / (n_classes - 1) * (len(SCORE_COLOURS) - 1)
    return SCORE_COLOURS[int(round(pos))]


def _class_name(label, class_names) -> str:
    label = int(label)
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _shown(row: GalleryRow):
    return [
        (img, int(lab), str(pat), float(d))
        for img, lab, pat, d in zip(row.neighbors, row.labels, row.patients, row.distances, strict=True)
        if int(lab) >= 0 and np.isfinite(d)
    ]


def compose_gallery(rows: Sequence[GalleryRow], title: str | None = None, class_names: Sequence | None = None) -> np.ndarray:
    """The gallery as one uint8 RGB image: an optional title, then one block per row."""
    if not rows:
        raise ValueError("a gallery needs at least one row")
    shown = [_shown(r) for r in rows]
    every = [r.query for r in rows] + [s[0] for sh in shown for s in sh] + [r.extra for r in rows if r.extra is not None]
    side = _tile_side(every)
    n_classes = len(class_names) if class_names is not None else 1 + max([s[1] for sh in shown for s in sh], default=0)
    n_cols = max(1 + (r.extra is not None) + len(sh) for r, sh in zip(rows, shown, strict=True))
    width = GAP + n_cols * (side + GAP)
    caption_h = 3 * LINE_H + 4
    title_lines = _wrap(title, width - 2 * GAP, TITLE_SCALE) if title else []
    row_titles = [_wrap(r.title, width - 2 * GAP, TEXT_SCALE) if r.title else [] for r in rows]
    height = GAP + len(title_lines) * (LINE_H + 4) + 2 * bool(title_lines) + sum(
        len(t) * LINE_H + 4 * bool(t) + side + caption_h + GAP for t in row_titles
    )
    canvas = np.full((height, width, 3), 255, np.uint8)
    y = GAP
    for line in title_lines:
        _put(canvas, line, GAP, y + LINE_H - 3, BLACK, TITLE_SCALE)
        y += LINE_H + 4
    if title_lines:
        y += 2
    text_w = side - 2
    for row, sh, row_title in zip(rows, shown, row_titles, strict=True):
        for line in row_title:
            _put(canvas, line, GAP, y + LINE_H - 4, GRAY)
            y += LINE_H
        if row_title:
            y += 4  # clear of the query's border
        x = GAP
        tiles: list[tuple[np.ndarray, list[tuple[str, tuple]], tuple, int]] = [
            (row.query, [(c, QUERY_BLUE) for c in row.caption], QUERY_BLUE, 3)
        ]
        if row.extra is not None:
            tiles.append((row.extra, [(c, BLACK) for c in row.extra_caption], GRAY, 1))
        for i, (img, lab, pat, d) in enumerate(sh, start=1):
            captions = [
                (f"#{i} score {_class_name(lab, class_names)}", _score_colour(lab, n_classes)),
                (f"patient {pat}", BLACK),
                (f"d = {d:.3g}", BLACK),
            ]
            tiles.append((img, captions, GRAY, 1))
        for img, captions, colour, border in tiles:
            canvas[y : y + side, x : x + side] = _fit(img, side)
            _border(canvas, x, y, side, colour, border)
            for j, (text, text_colour) in enumerate(captions[:3]):
                _put(canvas, _shorten(text, text_w), x + 1, y + side + 4 + (j + 1) * LINE_H - 3, text_colour)
            x += side + GAP
        y += side + caption_h + GAP
    return canvas


def write_png(image_rgb: np.ndarray, out_png: str | Path) -> Path:
    """Write an RGB uint8 image as PNG (atomically, OpenCV's encoder at a low compression level)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), PNG_OPTIONS)
    if not ok:
        raise ValueError(f"{out_png}: PNG encoding failed")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        tmp.write_bytes(buf.tobytes())
    return out_png


def render_rows(
    rows: Sequence[GalleryRow], out_png: str | Path, title: str | None = None, class_names: Sequence | None = None
) -> Path:
    """A gallery of several queries (e.g. the untrusted frames of one video), one row each."""
    return write_png(compose_gallery(rows, title, class_names), out_png)


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
    extra_img: np.ndarray | None = None,
    extra_caption: str = "Grad-CAM",
) -> Path:
    """Write a one-query gallery PNG (atomically): the query (blue frame), ``extra_img`` if
    given, then the neighbours.

    ``labels`` are class indices, shown through ``class_names`` when given (e.g. config
    ``classes``); a label -1 / NaN distance (padding) is skipped.  ``query_caption`` lines are
    separated by newlines.  Returns the path.
    """
    row = GalleryRow(
        query_img, neighbor_imgs, labels, patients, distances,
        caption=(query_caption or "query").split("\n"), extra=extra_img,
        extra_caption=extra_caption.split("\n"),
    )
    return render_rows([row], out_png, title, class_names)


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
