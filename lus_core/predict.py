"""`lus predict`: score new videos with a finished run, flag uncertain frames, show similar cases.

Per frame: softmax, CNN score, confidence, trusted or not, fallback score with its neighbour
ids, and the final score (the CNN's when trusted, else the fallback's); per video: video-level
scores. Everything is written into a temporary folder and moved into place at the end, so a
failure leaves nothing partial in the output folder.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import joblib
import numpy as np
import pandas as pd
from tqdm import tqdm

from lus_core.frame_store import FrameReader, read_frame_index
from lus_core.io_utils import read_json
from lus_core.manifest import RunError, load_manifest, verified_path
from lus_core.safe_output import check_output_dir, publish, staging_dir
from lus_core.store_check import verified_stores
from lus_core.video import VIDEO_EXTENSIONS, VideoError, crop_resize, decode, find_sector, is_frame_folder

MAX_GALLERIES_PER_VIDEO = 25


@dataclass
class Choice:
    """One configuration of the evaluation matrix: what decides trust and what replaces a score."""

    config_id: str
    row_type: str
    backbone: str
    confidence: str | None
    space: str | None
    k: int | None
    fallback: str | None


def choose_configuration(run_dir: Path, name: str) -> Choice:
    """``selected`` (or its old name ``best``): the configuration the evaluation chose on the
    training patients (eval/summary.json ``selected``); any other name: that matrix row."""
    eval_dir = run_dir / "eval"
    if name in ("selected", "best"):
        summary = read_json(eval_dir / "summary.json")
        row = summary.get("selected")
        if row is None:
            raise RunError(f"{eval_dir / 'summary.json'}: no `selected` configuration; the run predates "
                           "selection on training patients: rerun `evaluate` (snakemake --forcerun evaluate)")
    else:
        matrix = pd.read_csv(eval_dir / "matrix.csv")
        hits = matrix[matrix["config_id"] == name]
        if hits.empty:
            raise RunError(
                f"{eval_dir / 'matrix.csv'}: no configuration named {name!r}; e.g. {matrix['config_id'].iloc[0]!r}"
            )
        row = hits.iloc[0].to_dict()
    if row["row_type"] not in ("cnn", "combined", "fallback_only"):
        raise RunError(f"configuration {row['config_id']!r} is an oracle row and cannot be deployed")

    def opt(key):
        v = row.get(key)
        return None if v is None or (isinstance(v, float) and np.isnan(v)) or v in ("none", "always", "never") else v

    return Choice(
        row["config_id"], row["row_type"], row["backbone"], opt("confidence"), opt("space"),
        int(row["k"]) if opt("k") is not None else None, opt("fallback"),
    )


class Predictor:
    """The loaded parts of one configuration of a run."""

    def __init__(self, run_dir: Path, choice: Choice, device: str = "auto"):
        import torch

        from lus_core.inference import load_model

        self.run_dir, self.choice = run_dir, choice
        manifest = load_manifest(run_dir)
        self.config = manifest["config"]
        self.classes = list(self.config["classes"])
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        b = choice.backbone
        self.model, self.model_meta = load_model(verified_path(run_dir, manifest, f"models/{b}/all.pt"), device)
        self.image_size = int(self.model_meta.get("image_size", self.config["train"]["image_size"]))
        self.confidence = None
        if choice.row_type == "combined":
            # our own pickle, checked against the run's manifest before it is loaded
            self.confidence = joblib.load(verified_path(run_dir, manifest, f"confidence/{b}/{choice.confidence}.joblib"))
        self.index = None
        if choice.row_type in ("combined", "fallback_only"):
            from lus_core.similarity.index import SimilarityIndex

            base = f"index/{b}/{choice.space}"
            tsne = f"{base}.tsne.pkl" if choice.space == "tsne" else None
            self.index = SimilarityIndex.load(
                verified_path(run_dir, manifest, f"{base}.ann"),
                verified_path(run_dir, manifest, f"{base}.ids.csv"),
                verified_path(run_dir, manifest, f"{base}.json"),
                verified_path(run_dir, manifest, tsne) if tsne else None,
            )
        self.frame_index = read_frame_index(verified_path(run_dir, manifest, "frame_index.csv"))
        stores = verified_stores(run_dir, manifest, self.frame_index["h5"].unique())  # every configuration
        self.frame_index["h5"] = self.frame_index["h5"].astype(str).map(stores)
        with h5py.File(self.frame_index["h5"].iloc[0], "r") as f:
            self.channels = int(f["frames"].shape[-1])

    def load_video(self, path: Path):
        fcfg = self.config["frames"]
        video = decode(path, stride=fcfg["stride"], max_frames=fcfg["max_frames_per_video"])
        if video.frames.shape[-1] != self.channels:
            kind = {1: "grayscale", 3: "colour"}
            raise VideoError(
                f"{path}: {kind[video.frames.shape[-1]]} video, but the run was trained on "
                f"{kind[self.channels]} frames ({self.channels} channel(s))"
            )
        box = find_sector(video.frames) if fcfg["crop"] == "auto" else (0, 0, *video.original_size[::-1])
        return crop_resize(video.frames, box, fcfg["size"]), video.frame_numbers

    def score(self, frames: np.ndarray) -> dict:
        from lus_core.inference import predict_frames
        from lus_core.similarity.fallback import fallback_scores

        logits, softmax, embedding = predict_frames(self.model, frames, self.image_size, self.device)
        cnn = softmax.argmax(1)
        n = len(frames)
        out = {"softmax": softmax, "cnn": cnn, "confidence": np.ones(n), "trusted": np.ones(n, bool),
               "fallback": np.full(n, -1), "neighbors": np.full((n, 0), -1), "distances": np.zeros((n, 0))}
        if self.confidence is not None:
            out["confidence"] = self.confidence.score(softmax, logits, embedding)
            out["trusted"] = self.confidence.trust(softmax, logits, embedding)
        elif self.choice.row_type == "fallback_only":
            out["confidence"], out["trusted"] = np.zeros(n), np.zeros(n, bool)
        if self.index is not None:
            vectors = self.index.features_for(frames=frames, softmax=softmax, embedding=embedding)
            ids, labels, dist = self.index.query(vectors, None, self.choice.k)  # a new patient: no exclusion
            out["fallback"] = fallback_scores(labels, dist, len(self.classes), self.choice.fallback)
            out["neighbors"], out["distances"], out["neighbor_labels"] = ids, dist, labels
        use_fallback = ~out["trusted"] & (out["fallback"] >= 0)
        out["final"] = np.where(use_fallback, out["fallback"], cnn)
        return out


def collect_videos(paths: list[Path]) -> list[Path]:
    videos = []
    for p in paths:
        if not p.exists():
            raise VideoError(f"{p}: file not found")
        if p.is_dir() and not is_frame_folder(p):
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_EXTENSIONS or is_frame_folder(q))
            if not found:
                raise VideoError(f"{p}: no video in this folder")
            videos += found
        else:
            videos.append(p)
    return videos


def video_level(final: np.ndarray, n_classes: int) -> dict:
    counts = np.bincount(final, minlength=n_classes)
    return {"max": int(final.max()), "mean": int(np.floor(final.mean() + 0.5)), "majority": int(counts.argmax())}


def run_predict(videos, run_dir, config_name: str = "selected", out_dir="predictions_out", device: str = "auto",
                overwrite: bool = False, gradcam: bool = False) -> Path:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: run folder not found")
    check_output_dir(out_dir, [Path(v) for v in videos], overwrite)  # before any work
    choice = choose_configuration(run_dir, config_name)
    predictor = Predictor(run_dir, choice, device)
    paths = collect_videos([Path(v) for v in videos])
    decoded = [(p, *predictor.load_video(p)) for p in paths]  # every input checked before any output
    staging = staging_dir(out_dir)
    try:
        rows, per_video = [], {}
        reader = FrameReader(predictor.frame_index)
        for path, frames, numbers in tqdm(decoded, desc="predict", unit="video", file=sys.stderr):
            res = predictor.score(frames)
            vid = path.stem
            per_video[vid] = {"source": str(path), "n_frames": len(frames),
                              "untrusted_frames": int((~res["trusted"]).sum()),
                              **{f"score_{k}": predictor.classes[v] for k, v in video_level(res["final"], len(predictor.classes)).items()}}
            for i in range(len(frames)):
                rows.append({
                    "video": vid, "frame": int(numbers[i]),
                    **{f"p_{c}": float(res["softmax"][i, j]) for j, c in enumerate(predictor.classes)},
                    "cnn_score": predictor.classes[res["cnn"][i]],
                    "confidence": float(res["confidence"][i]), "trusted": bool(res["trusted"][i]),
                    "fallback_score": predictor.classes[res["fallback"][i]] if res["fallback"][i] >= 0 else "",
                    "neighbor_frame_ids": " ".join(str(int(x)) for x in res["neighbors"][i] if x >= 0),
                    "final_score": predictor.classes[res["final"][i]],
                })
            _write_galleries(staging / "galleries", vid, frames, numbers, res, predictor, reader)
            if gradcam:
                from lus_core.gradcam import write_frame_gradcams

                write_frame_gradcams(staging / "galleries", vid, frames, numbers, _gallery_frames(res), predictor)
        reader.reset()
        pd.DataFrame(rows).to_csv(staging / "frames.csv", index=False)
        summary = {"run": str(run_dir.resolve()), "configuration": choice.__dict__, "videos": per_video,
                   "classes": predictor.classes}
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        publish(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    print(f"wrote {out_dir}/frames.csv, summary.json and galleries/ for {len(paths)} video(s)")
    return out_dir


def _write_galleries(folder: Path, vid, frames, numbers, res, predictor: Predictor, reader: FrameReader) -> None:
    if predictor.index is None:
        return
    from lus_core.similarity.gallery import render_gallery

    pos = pd.Series(np.arange(len(predictor.frame_index)), index=predictor.frame_index["frame_id"].to_numpy())
    patients = predictor.frame_index["patient"].to_numpy()
    for i in _gallery_frames(res):
        ids = [int(x) for x in res["neighbors"][i] if x >= 0]
        rows = pos[ids].to_numpy()
        render_gallery(
            frames[i], [reader.frame(r) for r in rows], res["neighbor_labels"][i][: len(ids)],
            patients[rows], res["distances"][i][: len(ids)], folder / f"{vid}_frame{int(numbers[i]):05d}.png",
            title=f"{vid} frame {int(numbers[i])}: CNN {predictor.classes[res['cnn'][i]]}, "
                  f"confidence {res['confidence'][i]:.2f} -> fallback {predictor.classes[res['final'][i]]}",
            class_names=predictor.classes,
        )


def _gallery_frames(res) -> np.ndarray:
    """The frames shown with a gallery: untrusted, the least confident first, a bounded number per video."""
    untrusted = np.flatnonzero(~res["trusted"])
    return untrusted[np.argsort(res["confidence"][untrusted], kind="stable")][:MAX_GALLERIES_PER_VIDEO]

