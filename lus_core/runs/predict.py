"""`lus predict`: score new videos with a finished run, flag uncertain frames, show similar cases.

Per frame: softmax, CNN score, confidence, trusted or not, fallback score with its neighbour
ids, and the final score (the CNN's when trusted, else the fallback's); per video: video-level
scores. Everything is written into a temporary folder and moved into place at the end, so a
failure leaves nothing partial in the output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lus_core.cnn.gradcam import gradcam_maps, gradcam_overlay
from lus_core.cnn.infer import predict_frames_with
from lus_core.cnn.model_file import load_model
from lus_core.frames.decode import VideoError, grey, is_frame_folder, is_video
from lus_core.frames.dicom import DicomError, header_facts, is_dicom, is_dicom_series
from lus_core.frames.extract import decode_video, stored_frames
from lus_core.frames.identity import SALT_FILE, results_salt
from lus_core.frames.labels import dicom_names, video_id
from lus_core.frames.store import FrameReader, read_frame_index
from lus_core.runs.reader import FinishedRun
from lus_core.runs.safe_output import check_output_dir, publish, staged
from lus_core.similarity.fallback import fallback_scores
from lus_core.similarity.gallery import GalleryRow, render_rows
from lus_core.similarity.index import SimilarityIndex
from lus_core.videolevel.model import VideoModel, frame_features
from lus_core.videolevel.table import confident_mean

MAX_GALLERY_ROWS = 10  # untrusted frames shown per video (least confident first)
# videos scored together: their untrusted frames share one similarity search (a t-SNE placement
# costs about 0.5 s per call whatever its size); bounds the decoded frames held at once
BATCH_FRAMES = 2048


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
    diversity: str = "none"  # the fallback's neighbour list: plain, or at most one per video / patient


    @classmethod
    def of(cls, fields: dict) -> Choice:
        """From a run's configuration fields (lus_core.runs.reader.FinishedRun.configuration): the
        matrix writes "none" / "always" / "never" where a configuration has no such part."""
        def part(key):
            v = fields.get(key)
            return None if v in (None, "none", "always", "never") else v

        k = part("k")
        return cls(fields["config_id"], fields["row_type"], fields["backbone"], part("confidence"), part("space"),
                   int(k) if k is not None else None, part("fallback"), part("diversity") or "none")


def choose_configuration(run: FinishedRun, name: str) -> Choice:
    """``selected`` (or its old name ``best``): the configuration the evaluation chose on the
    training patients (eval/summary.json ``selected``); any other name: that matrix row."""
    return Choice.of(run.configuration(name))


class Predictor:
    """The loaded parts of one configuration of a run."""

    def __init__(self, run: FinishedRun, choice: Choice, device: str = "auto"):
        self.run, self.choice = run, choice
        layout = run.layout
        # the run's config with today's defaults for keys it predates (e.g. frames.drop_blank)
        self.config = run.config
        self.classes = list(self.config["classes"])
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        b = choice.backbone
        # the `all` model, and with train.ensemble: folds the fold models beside it
        model_files = list(run.scoring_models(b).values())
        self.model, self.model_meta = load_model(model_files[0], device)
        self.fold_models = [load_model(f, device)[0] for f in model_files[1:]]
        self.image_size = int(self.model_meta.get("image_size", self.config["train"]["image_size"]))
        self.confidence = None
        if choice.row_type == "combined":
            # our own pickle, checked against the run's manifest before it is loaded
            self.confidence = joblib.load(run.verified(layout.confidence_model(b, choice.confidence)))
        self.frame_index = read_frame_index(run.verified(layout.frame_index()))
        stores = run.verified_stores(self.frame_index["h5"].unique())  # every configuration
        self.frame_index["h5"] = self.frame_index["h5"].astype(str).map(stores)
        self.index = None
        self.gallery_diversity = str(self.config["similarity"]["diversity"])
        self._groups: dict[str, np.ndarray] = {}
        if choice.row_type in ("combined", "fallback_only"):
            files = {key: run.verified(path) for key, path in layout.index_files(b, choice.space).items()}
            self.index = SimilarityIndex.load(files["ann"], files["ids"], files["meta"], files.get("tsne"))
            for diversity in {choice.diversity, self.gallery_diversity} - {"none"}:
                self._groups[diversity] = self.index.groups_of_items(self.frame_index, diversity)
        # the learned video-level score of this backbone (lus_core.videolevel.model), when the run made one
        self.video_model = None
        if run.has(layout.video_model(b)):
            self.video_model, meta = VideoModel.load(run.verified(layout.video_model(b)))
            # what the video model takes per frame (video_model.frame_features)
            self.video_features = {"input": str(meta.get("input", "softmax")),
                                   "use_findings": bool(meta.get("use_findings", False)),
                                   "motion": bool(meta.get("motion", False))}
        # frame id -> row of the frame index (neighbour images and patients for the galleries)
        self.frame_pos = pd.Series(np.arange(len(self.frame_index)), index=self.frame_index["frame_id"].to_numpy())
        self.patients = self.frame_index["patient"].astype(str).to_numpy()

    def load_video(self, path: Path) -> DecodedFrames:
        """The video's frames exactly as the workflow stored its training videos' frames (grey or
        colour: the CNN sees every frame grey, lus_core.cnn.frame_dataset.grey)."""
        video = decode_video(path, self.config)
        kept = stored_frames(path, video, self.config)
        declared = video.n_declared_frames
        return DecodedFrames(kept.frames, kept.numbers, video.n_source_frames / declared if declared else None,
                             video.burned_in)

    def neighbors(self, vectors: np.ndarray, diversity: str):
        """(frame ids, labels, distances) of the configuration's k neighbours of each vector."""
        if diversity == "none":
            return self.index.query(vectors, None, self.choice.k)  # a new patient: no exclusion
        return self.index.query_diverse(vectors, None, self.choice.k, self._groups[diversity])

    def score(self, frames: np.ndarray) -> dict:
        """Scores of one video's frames (see score_videos)."""
        return self.score_videos([frames])[0]

    def score_videos(self, videos: list[np.ndarray]) -> list[dict]:
        """Scores of the frames of each video (see add_fallbacks)."""
        return self.add_fallbacks(videos, [self.score_cnn(frames) for frames in videos])

    def add_fallbacks(self, videos: list[np.ndarray], results: list[dict]) -> list[dict]:
        """Complete ``score_cnn``'s results of ``videos`` with the fallback of their untrusted
        frames and the final scores. The similarity work for all of them is one batch: one feature
        call (e.g. one t-SNE placement, whose fixed cost of about 0.5 s is then paid once instead
        of per video) and one set of annoy queries."""
        asked = [np.flatnonzero(~res["trusted"]) for res in results]
        n_asked = np.array([len(a) for a in asked])
        if self.index is not None and n_asked.sum():
            vectors = self.index.features_for(
                # grey and colour videos in one batch: the raw space's grey image of each frame
                frames=np.concatenate([grey(f[a]) for f, a in zip(videos, asked, strict=True)]),
                softmax=np.concatenate([r["softmax"][a] for r, a in zip(results, asked, strict=True)]),
                embedding=np.concatenate([r["embedding"][a] for r, a in zip(results, asked, strict=True)]),
            )
            ids, labels, dist = self.neighbors(vectors, self.choice.diversity)
            fallback = fallback_scores(labels, dist, len(self.classes), self.choice.fallback)
            for res, a, lo, hi in zip(results, asked, np.cumsum(n_asked) - n_asked, np.cumsum(n_asked), strict=True):
                if not len(a):
                    continue
                res["fallback"][a] = fallback[lo:hi]
                res["neighbors"][a], res["neighbor_labels"][a], res["distances"][a] = ids[lo:hi], labels[lo:hi], dist[lo:hi]
                res["asked"], res["vectors"] = a, vectors[lo:hi]
        for res in results:
            use_fallback = ~res["trusted"] & (res["fallback"] >= 0)
            res["final"] = np.where(use_fallback, res["fallback"], res["cnn"])
        return results

    def score_cnn(self, frames: np.ndarray) -> dict:
        """The CNN's softmax and the confidence model's trust of one video's frames."""
        logits, softmax, embedding, findings = predict_frames_with(self.model, self.fold_models, frames, self.image_size,
                                                                   self.device)
        n, k = len(frames), self.choice.k or 0
        out = {"softmax": softmax, "embedding": embedding, "findings": findings,
               "cnn": softmax.argmax(1), "confidence": np.ones(n),
               "trusted": np.ones(n, bool), "fallback": np.full(n, -1), "neighbors": np.full((n, k), -1),
               "neighbor_labels": np.full((n, k), -1), "distances": np.full((n, k), np.nan),
               "asked": np.zeros(0, int), "vectors": None}
        if self.confidence is not None:
            out["confidence"] = self.confidence.score(softmax, logits, embedding)
            out["trusted"] = self.confidence.trust(softmax, logits, embedding)
        elif self.choice.row_type == "fallback_only":
            out["confidence"], out["trusted"] = np.zeros(n), np.zeros(n, bool)
        return out

    def gallery_neighbors(self, res: dict, rows: np.ndarray):
        """Neighbours shown for frames ``rows`` (untrusted ones): the gallery's diversity, which
        may differ from the fallback's list."""
        where = np.searchsorted(res["asked"], rows)
        if self.gallery_diversity == self.choice.diversity:
            return res["neighbors"][rows], res["neighbor_labels"][rows], res["distances"][rows]
        return self.neighbors(res["vectors"][where], self.gallery_diversity)


def collect_videos(paths: list[Path]) -> list[Path]:
    """The videos of the command line: files, frame folders and the videos of folders, each once."""
    videos, seen = [], set()
    for p in paths:
        if not p.exists():
            raise VideoError(f"{p}: file not found")
        if p.is_dir() and not (is_frame_folder(p) or is_dicom_series(p)):
            found = sorted(q for q in p.iterdir() if not q.name.startswith(".") and is_video(q))
            nested = folders_of_videos(p)
            hint = f"; its sub-folders {nested[:5]} hold videos: name them to score theirs" if nested else ""
            if not found:
                raise VideoError(f"{p}: no video in this folder{hint}")
            if nested:  # a folder's videos are its own files only: never silently fewer than the user meant
                print(f"warning: {p}: sub-folders not searched{hint}", file=sys.stderr)
        else:
            found = [p]
        for q in found:
            # a video named twice (itself and its folder) is scored once; another name of the same
            # file (a symlink, a hard link) is the user's own video and keeps its id: not resolved
            if absolute(q) not in seen:
                seen.add(absolute(q))
                videos.append(q)
    return videos


def folders_of_videos(folder: Path) -> list[str]:
    """The sub-folders of `folder` (not videos themselves: frame folders, DICOM series) that hold videos."""
    return sorted(q.name for q in folder.iterdir() if q.is_dir() and not q.name.startswith(".") and not is_video(q)
                  and any(not r.name.startswith(".") and is_video(r) for r in q.iterdir()))


def absolute(path: Path) -> Path:
    """The path as the user named it, made absolute and normalised (a/./b, a/../b), symlinks kept."""
    return Path(os.path.abspath(path))


def dicom_sources(paths: list[Path], salt: bytes) -> dict[Path, str]:
    """Each DICOM video's written name (its file or folder name, replaced by a neutral one where it
    carries an identifying value of its header: lus_core.frames.labels.dicom_names); an unreadable
    one keeps its name (the error names it as the user did)."""
    out = {}
    for p in paths:
        if is_dicom(p):
            try:
                out[p] = dicom_names(p.parent, p, header_facts(p), salt)[1]
            except DicomError:
                continue
    return out


def predict_salt(run: FinishedRun) -> bytes:
    """The run's salt where it has one (neutral names then match the run's), else one for this call."""
    salt_file = run.config["dataset"]["patient_salt_file"]
    if salt_file or (run.root / SALT_FILE).is_file():
        return results_salt(run.root, salt_file)
    return os.urandom(32).hex().encode()


def video_ids(paths: list[Path], names: dict[Path, str] | None = None) -> dict[Path, str]:
    """A unique, file-name-safe id per video: its file stem where no other video of the call has
    the same one; where several do (a/x.mp4 and b/x.mp4, or x.mp4 and x.MP4), each one's path
    below their deepest common folder, extension included, folders joined by "__" (a__x.mp4,
    b__x.mp4; x.mp4, x.MP4). Paths count as the user gave them (symlinks are not followed).
    Names that differ only in characters a file name cannot safely hold (`a b.mp4`, `a_b.mp4`)
    still share an id then: each of those gets "~" and a short hash of its path below their
    common folder (`a_b.mp4~a1f10cd9`, `a_b.mp4~38eec280`). summary.json keeps every video's
    source path beside its id.
    `names`: a DICOM video's written name (dicom_sources) stands for its own."""
    names = names or {}
    safe = {p: video_id(Path(names[p])) if p in names else video_id(p) for p in paths}
    by_stem: dict[str, list[Path]] = {}
    for p in paths:
        by_stem.setdefault(safe[p].lower(), []).append(p)
    ids = {}
    for group in by_stem.values():
        if len(group) == 1:
            ids[group[0]] = safe[group[0]]
            continue
        for p, parts in relative_parts(group, names).items():
            ids[p] = safe_name("__".join(parts))
    return with_unique_ids(ids, names)


def relative_parts(group: list[Path], names: dict[Path, str]) -> dict[Path, tuple[str, ...]]:
    """Each video's path below the deepest folder common to the group, as given (not resolved: a
    symlink counts by its own name), a DICOM video's written name standing for its own."""
    common = Path(os.path.commonpath([absolute(p).parent for p in group]))
    parts = {p: absolute(p).relative_to(common).parts for p in group}
    return {p: (*parts[p][:-1], names[p]) if p in names else parts[p] for p in group}


def safe_name(text: str) -> str:
    """``text`` with every character a file name may not safely hold (anywhere) as "_"."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def with_unique_ids(ids: dict[Path, str], names: dict[Path, str]) -> dict[Path, str]:
    """``ids`` where each id that several videos share gets "~" and the first 8 hex digits of the
    sha1 of the video's path below their common folder: deterministic whatever the order of the
    paths, and "~" is never in a made-safe name, so it collides with no other id."""
    sharing: dict[str, list[Path]] = {}
    for p, vid in ids.items():
        sharing.setdefault(vid, []).append(p)
    unique = dict(ids)
    for group in (g for g in sharing.values() if len(g) > 1):
        for p, parts in relative_parts(group, names).items():
            unique[p] = f"{ids[p]}~{hashlib.sha1('/'.join(parts).encode()).hexdigest()[:8]}"
    return unique


def video_level(final: np.ndarray, n_classes: int) -> dict:
    counts = np.bincount(final, minlength=n_classes)
    return {"max": int(final.max()), "mean": int(np.floor(final.mean() + 0.5)), "majority": int(counts.argmax())}


def learned_video_scores(predictor: Predictor, res: dict) -> dict:
    """The video-level scores beside max / mean / majority: the mean of the CNN's most confident
    frames (Khan et al. 2023) and, when the run fitted one, the attention model's score with its
    class probabilities (lus_core.videolevel.model)."""
    classes = predictor.classes
    fraction = float(predictor.config["video_model"]["confident_fraction"])
    out = {"score_confident_mean": classes[confident_mean(res["cnn"], res["softmax"].max(axis=1), fraction)]}
    if predictor.video_model is not None:
        features = frame_features(res["softmax"], res["embedding"], res["findings"], predictor.video_features)
        proba = predictor.video_model.predict_proba([features])[0]
        out["score_attention"] = classes[int(proba.argmax())]
        out["p_attention"] = {str(c): round(float(p), 4) for c, p in zip(classes, proba, strict=True)}
    return out


@dataclass
class DecodedFrames:
    frames: np.ndarray  # uint8 (N, size, size, C), as the workflow stores them
    numbers: np.ndarray  # source frame numbers
    decoded_fraction: float | None  # frames decoded / frames the container declares (None: not declared)
    burned_in: str = ""  # a DICOM's BurnedInAnnotation ('YES' / 'NO' / '' not stated)


def decoded_videos(predictor: Predictor, paths: list[Path]) -> Iterator[tuple[Path, DecodedFrames | VideoError]]:
    """(path, its frames, or why it cannot be used) per video; the next video decodes in a
    background thread while the caller scores the current one (decoding and cropping release the GIL)."""
    def load(path: Path) -> DecodedFrames | VideoError:
        try:
            return predictor.load_video(path)
        except VideoError as exc:
            return exc

    if not paths:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending = pool.submit(load, paths[0])
        for i, path in enumerate(paths):
            result = pending.result()
            if i + 1 < len(paths):
                pending = pool.submit(load, paths[i + 1])
            yield path, result


EXIT_SOME_FAILED = 3  # `lus predict`'s exit status when some videos could not be scored (documented in the README)
ON_BAD_VIDEO = ("skip", "error")


@dataclass
class PredictResult:
    out_dir: Path
    scored: list[str]  # ids of the videos scored
    failed: dict[str, dict]  # id -> {"source", "reason"} of the videos that could not be


def run_predict(videos, run_dir, config_name: str = "selected", out_dir="predictions_out", device: str = "auto",
                overwrite: bool = False, gradcam: bool = False, galleries: bool = True,
                max_gallery_rows: int = MAX_GALLERY_ROWS, on_bad_video: str = "skip",
                min_decoded_fraction: float | None = None) -> PredictResult:
    """Score ``videos`` with a finished run; ``galleries=False`` skips the pictures, and
    ``max_gallery_rows`` caps the untrusted frames drawn per video; ``gradcam`` adds where the
    CNN looked beside each gallery row. ``out_dir`` must be new or empty, or hold only an earlier
    ``lus predict``'s files with ``overwrite`` (lus_core.runs.safe_output).

    A video that cannot be used (unreadable, too few decodable frames: below
    ``min_decoded_fraction``, default the run's ``dataset.min_decoded_fraction``) is listed in
    summary.json's ``failed`` with the reason and the others are scored (``on_bad_video="skip"``),
    or it stops the command with nothing written (``"error"``)."""
    if on_bad_video not in ON_BAD_VIDEO:
        raise ValueError(f"on_bad_video must be one of {ON_BAD_VIDEO}, got {on_bad_video!r}")
    if max_gallery_rows < 0:
        raise ValueError(f"max_gallery_rows must be >= 0, got {max_gallery_rows}")
    if min_decoded_fraction is not None and not 0 <= min_decoded_fraction <= 1:
        raise ValueError(f"min_decoded_fraction must be in [0, 1], got {min_decoded_fraction}")
    run, out_dir = FinishedRun(run_dir), Path(out_dir)
    check_output_dir(out_dir, [Path(v) for v in videos], overwrite)  # before any work
    choice = choose_configuration(run, config_name)
    predictor = Predictor(run, choice, device)
    if min_decoded_fraction is not None:
        predictor.config["dataset"]["min_decoded_fraction"] = float(min_decoded_fraction)
    paths = collect_videos([Path(v) for v in videos])
    sources = dicom_sources(paths, predict_salt(run))
    ids = video_ids(paths, sources)
    # nothing reaches out_dir before every video is done (everything is staged); the staging
    # folder goes however this ends, a SIGTERM from `timeout`, `kill` or SLURM included
    with staged(out_dir) as staging:
        rows, per_video, failed = _score_videos(predictor, paths, ids, staging, galleries, max_gallery_rows, gradcam,
                                                on_bad_video, sources)
        pd.DataFrame(rows, columns=frame_columns(predictor)).to_csv(staging / "frames.csv", index=False)
        summary = {"run": str(run.root.resolve()), "configuration": choice.__dict__, "videos": per_video,
                   "failed": failed, "classes": predictor.classes,
                   "min_decoded_fraction": predictor.config["dataset"]["min_decoded_fraction"]}
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        publish(staging, out_dir)
    print(f"wrote {out_dir}/frames.csv, summary.json{' and galleries/' if galleries else ''} for {len(per_video)} "
          f"video(s)")
    if failed:
        print(f"{len(failed)} of {len(paths)} video(s) could not be scored (summary.json: failed):", file=sys.stderr)
        for why in failed.values():
            print(f"  - {why['source']}: {why['reason']}", file=sys.stderr)
    burned = [vid for vid, v in per_video.items() if v.get("burned_in_annotation") == "YES"]
    if burned:
        print(f"{len(burned)} DICOM video(s) declare burned-in annotation (text in the pixels, possibly identifying; "
              f"summary.json: burned_in_annotation): {', '.join(burned)}", file=sys.stderr)
    return PredictResult(out_dir, list(per_video), failed)


def _score_videos(predictor: Predictor, paths: list[Path], ids: dict[Path, str], staging: Path, galleries: bool,
                  max_rows: int, gradcam: bool = False, on_bad_video: str = "skip", sources: dict | None = None):
    """frames.csv rows, summary.json entries and failures of every video. The CNN scores each
    video as it is decoded (the next one decodes meanwhile); the fallbacks of batches of about
    BATCH_FRAMES frames share one similarity search; galleries are drawn in a background thread
    while the next batch is scored (and finished before this returns, also on an error)."""
    rows, per_video, failed, drawn = [], {}, {}, []
    sources = sources or {}

    def shown(path: Path) -> str:
        return sources.get(path, str(path))

    def usable(decoded):
        for path, result in decoded:
            if isinstance(result, VideoError):
                if on_bad_video == "error":
                    raise result
                reason = str(result).replace(str(path), shown(path)) if path in sources else str(result)
                failed[ids[path]] = {"source": shown(path), "reason": reason}
                continue
            yield path, result, predictor.score_cnn(result.frames)

    reader = FrameReader(predictor.frame_index)  # used by the drawing thread only
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gallery") as drawing:
            decoded = tqdm(decoded_videos(predictor, paths), total=len(paths), desc="predict", unit="video",
                           file=sys.stderr)
            for batch in frame_batches(usable(decoded), BATCH_FRAMES):
                predictor.add_fallbacks([item[1].frames for item in batch], [item[2] for item in batch])
                for path, video, res in batch:
                    vid = ids[path]
                    per_video[vid] = {**video_summary(predictor, path, res), "source": shown(path),
                                      "decoded_fraction": video.decoded_fraction}
                    if is_dicom(path):
                        per_video[vid]["burned_in_annotation"] = video.burned_in
                    rows += frame_rows(predictor, vid, video.numbers, res)
                    if galleries:
                        # Grad-CAM needs the model (this thread); the drawing thread only places its tiles
                        extras = gradcam_tiles(predictor, video.frames, gallery_frames(res, max_rows)) if gradcam else None
                        drawn.append((vid, drawing.submit(write_video_gallery, staging / "galleries", vid, video.frames,
                                                          video.numbers, res, predictor, reader, max_rows, extras)))
            for vid, future in drawn:
                png = future.result()
                if png is not None:
                    per_video[vid]["gallery"] = str(png.relative_to(staging))
    finally:
        reader.reset()
    return rows, per_video, failed


def frame_batches(decoded, max_frames: int):
    """Consecutive videos of ``decoded`` ((path, DecodedFrames, ...) items) grouped until a group
    holds ``max_frames`` frames (a longer video is a group of its own): bounded memory, one
    similarity search per group."""
    batch, n = [], 0
    for item in decoded:
        size = len(item[1].frames)
        if batch and n + size > max_frames:
            yield batch
            batch, n = [], 0
        batch.append(item)
        n += size
    if batch:
        yield batch


def video_summary(predictor: Predictor, path: Path, res: dict) -> dict:
    """summary.json's entry of one video: its frame counts and video-level scores."""
    classes = predictor.classes
    findings = {f"p_finding_{name}": round(float(res["findings"][:, j].mean()), 4)
                for j, name in enumerate(predictor.model.finding_names)}
    return {"source": str(path), "n_frames": len(res["cnn"]), "untrusted_frames": int((~res["trusted"]).sum()),
            **{f"score_{k}": classes[v] for k, v in video_level(res["final"], len(classes)).items()},
            **learned_video_scores(predictor, res), **findings}


def frame_columns(predictor: Predictor) -> list[str]:
    """frames.csv's columns (also when no video could be scored)."""
    return ["video", "frame", *(f"p_{c}" for c in predictor.classes), "cnn_score", "confidence", "trusted",
            "fallback_score", "neighbor_frame_ids", "final_score",
            *(f"p_finding_{name}" for name in predictor.model.finding_names)]


def frame_rows(predictor: Predictor, vid: str, numbers: np.ndarray, res: dict) -> list[dict]:
    """frames.csv rows of one video."""
    classes = predictor.classes
    return [{
        "video": vid, "frame": int(numbers[i]),
        **{f"p_{c}": float(res["softmax"][i, j]) for j, c in enumerate(classes)},
        "cnn_score": classes[res["cnn"][i]],
        "confidence": float(res["confidence"][i]), "trusted": bool(res["trusted"][i]),
        "fallback_score": classes[res["fallback"][i]] if res["fallback"][i] >= 0 else "",
        "neighbor_frame_ids": " ".join(str(int(x)) for x in res["neighbors"][i] if x >= 0),
        "final_score": classes[res["final"][i]],
        **{f"p_finding_{name}": float(res["findings"][i, j]) for j, name in enumerate(predictor.model.finding_names)},
    } for i in range(len(res["cnn"]))]


def gallery_frames(res: dict, max_rows: int) -> np.ndarray:
    """Positions of the frames a video's gallery shows: untrusted frames with a fallback, the
    least confident first, at most ``max_rows``."""
    shown = np.flatnonzero(~res["trusted"] & (res["fallback"] >= 0))
    return shown[np.argsort(res["confidence"][shown], kind="stable")][:max_rows]


def write_video_gallery(folder: Path, vid, frames, numbers, res, predictor: Predictor, reader: FrameReader,
                        max_rows: int = MAX_GALLERY_ROWS, extras: dict | None = None) -> Path | None:
    """One PNG per video, ``{folder}/{vid}.png``: a row per shown untrusted frame (query, an
    optional extra tile such as a Grad-CAM overlay from ``extras[frame position]``, then its
    neighbours).  None when the video has nothing to show."""
    if predictor.index is None:
        return None
    shown = gallery_frames(res, max_rows)
    if not len(shown):
        return None
    ids, labels, dist = predictor.gallery_neighbors(res, shown)
    names, extras = predictor.classes, extras or {}
    rows = []
    for j, i in enumerate(shown):
        valid = ids[j] >= 0
        pos = predictor.frame_pos[ids[j][valid]].to_numpy()
        rows.append(GalleryRow(
            frames[i], [reader.frame(r) for r in pos], labels[j][valid], predictor.patients[pos], dist[j][valid],
            caption=[f"frame {int(numbers[i])}", f"CNN {names[res['cnn'][i]]}", f"confidence {res['confidence'][i]:.2f}"],
            title=f"frame {int(numbers[i])}: CNN {names[res['cnn'][i]]}, confidence {res['confidence'][i]:.2f} "
                  f"-> fallback {names[res['final'][i]]}",
            extra=extras.get(int(i)),
        ))
    c = predictor.choice
    n_untrusted = int((~res["trusted"]).sum())
    shown_as = "the nearest frames" if predictor.gallery_diversity == "none" else f"one frame per {predictor.gallery_diversity}"
    title = (f"{vid}: {len(shown)} of {n_untrusted} untrusted frame(s), least confident first; "
             f"{c.space} space, fallback {c.fallback} of k={c.k}; neighbours shown: {shown_as}")
    return render_rows(rows, folder / f"{vid}.png", title=title, class_names=names)


def gradcam_tiles(predictor: Predictor, frames: np.ndarray, positions: np.ndarray) -> dict[int, np.ndarray]:
    """Grad-CAM overlays (where the CNN looked, for the class it chose) of the frames at
    ``positions``, keyed by position: the extra tile of their gallery rows."""
    positions = np.asarray(positions, dtype=np.int64)
    if not len(positions):
        return {}
    maps = gradcam_maps(predictor.model, frames[positions], predictor.image_size, device=predictor.device)
    return {int(i): gradcam_overlay(frames[i], m) for i, m in zip(positions, maps, strict=True)}
