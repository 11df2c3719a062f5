"""Write the synthetic cohort to disk exactly as a user's dataset looks: videos + labels CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..frames.decode import is_video
from ..io_utils import atomic_path, read_json, write_json
from .cohort import plan_cohort, resolve_config
from .render import VideoRenderer, with_doppler_box

LABEL_COLUMNS = ("video", "patient", "score", "start_frame", "end_frame", "a_lines", "b_lines")
# what a reader would tick: A-lines drawn bright enough to see; B-lines by the clinical rule of
# three or more in one intercostal space (fewer are physiological)
A_LINES_VISIBLE = 0.2
B_LINES_PATHOLOGICAL = 3


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
META = "synth_meta.json"  # written by every lus synth: what marks a folder as its own


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


def videos_written_before(out_dir: Path) -> set[str]:
    """The videos an earlier `lus synth` wrote into out_dir (its synth_meta.json). A folder it did
    not write (not empty, no synth_meta.json), or a video in videos/ it did not write, is refused:
    its labels.csv would be replaced, and a user's own video would sit unlabelled beside the cohort."""
    # empty folders are nobody's files (Snakemake makes videos/ before the synth job runs)
    if not out_dir.is_dir() or not any(p.is_file() for p in out_dir.rglob("*")):
        return set()
    try:
        earlier = {v["name"] for v in read_json(out_dir / META)["videos"]}
    except FileNotFoundError:
        raise ValueError(f"{out_dir}: not empty and holds no {META}, so it was not written by lus synth; "
                         "nothing there will be replaced: choose a new or empty folder") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{out_dir / META}: unreadable ({exc}); nothing in {out_dir} will be replaced") from exc
    video_dir = out_dir / "videos"
    foreign = sorted(p.name for p in video_dir.iterdir() if is_video(p) and p.name not in earlier) if video_dir.is_dir() else []
    if foreign:
        raise ValueError(f"{video_dir}: holds videos that lus synth did not write ({foreign[:5]}); the synthetic "
                         "labels.csv would not list them: move them out, or choose a new or empty folder")
    return earlier


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
    plans = plan_cohort(cfg, len(classes), seed)
    planned = {p.name for p in plans}
    earlier = videos_written_before(out_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    for stale in sorted(earlier - planned):  # an earlier cohort's videos that this one does not have
        (video_dir / stale).unlink(missing_ok=True)

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
        out_dir / META,
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
