"""Write the synthetic cohort to disk exactly as a user's dataset looks: videos + labels CSV."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..io_utils import atomic_path, write_json
from .cohort import plan_cohort, resolve_config
from .render import VideoRenderer, with_doppler_box

LABEL_COLUMNS = ("video", "patient", "score", "start_frame", "end_frame", "a_lines", "b_lines")
# what a reader would tick: A-lines drawn bright enough to see; B-lines by the clinical rule of
# three or more in one intercostal space (fewer are physiological)
A_LINES_VISIBLE = 0.2
B_LINES_PATHOLOGICAL = 3


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
_VIDEO_NAME = re.compile(r"patient_\w+?_v\d+\.mp4")


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Write uint8 frames, grey (n, h, w) or RGB (n, h, w, 3), to an `.mp4` (fourcc mp4v), atomically."""
    frames = np.asarray(frames)
    colour = frames.ndim == 4 and frames.shape[-1] == 3
    if frames.dtype != np.uint8 or not (frames.ndim == 3 or colour):
        raise ValueError(f"frames must be uint8 (n, h, w) or (n, h, w, 3), got {frames.dtype} {frames.shape}")
    n, h, w = frames.shape[:3]
    path = Path(path)
    with atomic_path(path) as tmp:
        # OpenCV picks the container from the extension, so encode to `<tmp>.mp4` first
        tmp_mp4 = tmp.with_name(tmp.name + ".mp4")
        try:
            writer = cv2.VideoWriter(
                str(tmp_mp4), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h), isColor=colour
            )
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot open an mp4v writer for {path}")
            try:
                for frame in frames:
                    writer.write(np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if colour else frame))
            finally:
                writer.release()
            os.replace(tmp_mp4, tmp)
        finally:
            tmp_mp4.unlink(missing_ok=True)
    return path


def generate_dataset(
    out_dir: str | os.PathLike, synth_cfg: dict, classes: list, seed: int, progress: bool = True
) -> Path:
    """Generate the synthetic LUS cohort into `out_dir`; return the path of `labels.csv`.

    Writes `out_dir/videos/patient_{pid}_v{j}.mp4` (one per `planned_videos(synth_cfg)` entry,
    grayscale content, mp4v), `out_dir/synth_meta.json` (seed, config, per-video acquisition
    settings and latent findings, for analysis only) and, last, `out_dir/labels.csv` with columns
    video, patient, score (the class *value* from `classes`), start_frame, end_frame (inclusive;
    one row per constant-score run), a_lines, b_lines (yes/no findings of the run, for
    `dataset.findings`). Every file is written atomically. Videos in `videos/` named
    like synthetic videos but no longer planned (e.g. after lowering n_patients) are removed.
    Deterministic: the same (synth_cfg, classes, seed) gives identical frames and labels.
    """
    classes = list(classes)
    if len(classes) < 2 or len(set(map(str, classes))) != len(classes):
        raise ValueError(f"classes must be >= 2 distinct values, got {classes!r}")
    cfg = resolve_config(synth_cfg)
    out_dir = Path(out_dir)
    video_dir = out_dir / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_cohort(cfg, len(classes), seed)
    planned = {p.name for p in plans}
    for stale in video_dir.iterdir():
        if _VIDEO_NAME.fullmatch(stale.name) and stale.name not in planned:
            stale.unlink()

    rows, meta = [], []
    for plan in tqdm(plans, desc="synthetic videos", unit="video", disable=not progress):
        renderer = VideoRenderer(plan)
        frames = np.stack([renderer.frame(t) for t in range(plan.n_frames)])
        write_video(video_dir / plan.name, with_doppler_box(frames, plan) if plan.colour else frames, plan.fps)
        for seg, found in zip(plan.segments, renderer.findings, strict=True):
            rows.append((plan.name, plan.patient, classes[seg.class_index], seg.start, seg.end,
                         yes_no(found.a_line_amp > A_LINES_VISIBLE), yes_no(found.n_b_lines >= B_LINES_PATHOLOGICAL)))
        info = plan.to_dict()
        info["b_lines"] = [f.n_b_lines for f in renderer.findings]
        info["consolidation"] = [bool(f.cons_mask.max() > 0.5) for f in renderer.findings]
        meta.append(info)

    write_json(
        out_dir / "synth_meta.json",
        {
            "seed": int(seed),
            "synthetic": cfg,
            "classes": classes,
            "videos": meta,
        },
    )
    labels = out_dir / "labels.csv"
    with atomic_path(labels) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(LABEL_COLUMNS)
        writer.writerows(rows)
    return labels
