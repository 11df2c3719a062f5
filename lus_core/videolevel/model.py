"""A learned video-level score: attention pooling over a video's frames (multiple-instance learning).

Real LUS data is labelled per video (every frame carries its video's score), and a video's score
is what a clinician reports. Besides the fixed aggregations of frame scores (max / mean /
majority, `lus_core.metrics`) and Khan et al.'s (Ultrasonics 2023) mean over the most confident
frames (`confident_mean`), this module learns the aggregation: gated attention pooling (Ilse et
al., ICML 2018) of per-frame features into one video vector, then a linear layer to the classes
(the frame-feature pooling that MeDiVLAD found to beat sequence models for video scores).

Frame features (`video_model.input`): the CNN's softmax (C values; out-of-fold for training
patients, so they look like the `all` model's softmax on test patients) or its embedding; with
auxiliary findings (`dataset.findings`, `video_model.use_findings`), the CNN's finding
probabilities of the frame after them (`frame_features`).

Honest by construction: for training videos the score is out-of-fold (the model that scores a
fold's videos is trained on the other folds' patients, the folds of split.json), so the
selection of a configuration can use it without touching test patients; test videos are scored
by a model trained on every training video. Training is full-batch Adam on padded bags with a
mask, seeded, so the same inputs give the same model.

`R/video/{backbone}.csv`: one row per video: `video`, `patient`, `split`, `fold` (-1: the model
trained on all training videos), `label` (the video's class index: its frames' majority),
`n_frames`, `attention` (class index), `p_0..p_{C-1}`, and `max`, `mean`, `majority`,
`confident_mean` (the fixed aggregations of the CNN's frame scores, for comparison).
`R/video/{backbone}.pt`: the model trained on all training videos (`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lus_core.cnn.losses import make_criterion
from lus_core.cnn.predictions import read_predictions
from lus_core.io_utils import atomic_path, config_json, read_json
from lus_core.metrics import aggregate_by_group
from lus_core.split.scopes import scope_split

# the video table's contract (reader, writer, fixed aggregations, metrics) lives without torch
from lus_core.videolevel.table import FIXED_AGGREGATIONS, fixed_aggregations, write_video_table


class AttentionMIL(nn.Module):
    """Gated attention pooling of (B, N, D) frame features (mask (B, N)) -> (B, C) logits."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 32, dropout: float = 0.0):
        super().__init__()
        # dropout on each frame's encoding: about 200 videos train it (no parameters: any value loads)
        self.encode = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.att_v = nn.Linear(hidden, hidden)
        self.att_u = nn.Linear(hidden, hidden)
        self.att_w = nn.Linear(hidden, 1)
        self.classify = nn.Linear(hidden, n_classes)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        a = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h))).squeeze(-1)
        a = torch.softmax(a.masked_fill(~mask, float("-inf")), dim=1)
        return a, h

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a, h = self.attention(x, mask)
        return self.classify((a.unsqueeze(-1) * h).sum(dim=1))


def pad_bags(bags: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (n_i, D) arrays -> padded (B, max n, D) float tensor and (B, max n) bool mask."""
    if not bags:
        raise ValueError("no videos")
    n_max = max(len(b) for b in bags)
    x = torch.zeros(len(bags), n_max, bags[0].shape[1])
    mask = torch.zeros(len(bags), n_max, dtype=torch.bool)
    for i, b in enumerate(bags):
        x[i, : len(b)] = torch.from_numpy(np.asarray(b, dtype=np.float32))
        mask[i, : len(b)] = True
    return x, mask


@dataclass
class VideoModel:
    """A trained attention model with the feature standardisation it was trained with."""

    net: AttentionMIL
    mean: np.ndarray
    std: np.ndarray
    steps: int = 0  # the training steps it got (chosen by early stopping, or video_model.epochs)

    @torch.inference_mode()
    def predict_proba(self, bags: list[np.ndarray]) -> np.ndarray:
        self.net.eval()
        x, mask = pad_bags([(b - self.mean) / self.std for b in bags])
        return torch.softmax(self.net(x, mask), dim=1).numpy()

    def save(self, path: str | Path, meta: dict) -> None:
        obj = {
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "mean": torch.from_numpy(self.mean.astype(np.float32)),
            "std": torch.from_numpy(self.std.astype(np.float32)),
            "in_dim": int(self.mean.shape[0]),
            "n_classes": int(self.net.classify.out_features),
            "hidden": int(self.net.classify.in_features),
            "steps": int(self.steps),
            **meta,
        }
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)

    @classmethod
    def load(cls, path: str | Path) -> tuple[VideoModel, dict]:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or "state_dict" not in obj or "in_dim" not in obj:
            raise ValueError(f"{path}: not a video model written by lus_core.videolevel.model")
        net = AttentionMIL(int(obj["in_dim"]), int(obj["n_classes"]), int(obj["hidden"]))
        net.load_state_dict(obj["state_dict"])
        meta = {k: v for k, v in obj.items() if k not in ("state_dict", "mean", "std")}
        return cls(net.eval(), obj["mean"].numpy(), obj["std"].numpy(), int(obj.get("steps", 0))), meta


def fit_video_model(bags: list[np.ndarray], labels: np.ndarray, n_classes: int, cfg: dict, seed: int,
                    steps: int | None = None, watch: list[np.ndarray] | None = None,
                    every: int = 0) -> tuple[VideoModel, dict[int, np.ndarray]]:
    """Full-batch Adam on padded bags; class-weighted like the frame CNN (inverse frequency).

    `steps` (default `cfg["epochs"]`) full-batch steps. With `watch` bags and `every` > 0, their
    class probabilities after every `every` steps ({step: (len(watch), C)}): the curve early
    stopping reads. Returns (model, that curve)."""
    labels = np.asarray(labels, dtype=np.int64)
    stacked = np.concatenate(bags)
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0) + 1e-6
    torch.manual_seed(seed)
    net = AttentionMIL(stacked.shape[1], n_classes, int(cfg["hidden"]), float(cfg["dropout"]))
    x, mask = pad_bags([(b - mean) / std for b in bags])
    y = torch.from_numpy(labels)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weight = torch.tensor(np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0), dtype=torch.float32)
    criterion = make_criterion({"loss": cfg["loss"], "sord_alpha": cfg["sord_alpha"]}, n_classes, weight)
    opt = torch.optim.AdamW(net.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    curve: dict[int, np.ndarray] = {}
    n_steps = int(cfg["epochs"] if steps is None else steps)
    model = VideoModel(net, mean, std, n_steps)
    for step in range(1, n_steps + 1):
        net.train()
        opt.zero_grad(set_to_none=True)
        loss = criterion(net(x, mask), y)
        loss.backward()
        opt.step()
        if watch is not None and every and step % every == 0:
            curve[step] = model.predict_proba(watch)
    net.eval()
    return model, curve


def early_stopping_step(curves: list[dict[int, np.ndarray]], labels: list[np.ndarray]) -> int:
    """The step count with the lowest mean negative log-likelihood of the held-out videos' labels,
    over the folds' curves (ties: fewer steps)."""
    steps = sorted(curves[0])
    nll = []
    for step in steps:
        losses = [-np.log(np.maximum(c[step][np.arange(len(y)), y], 1e-12)) for c, y in zip(curves, labels, strict=True)]
        nll.append(float(np.concatenate(losses).mean()))
    return steps[int(np.argmin(nll))]


@dataclass
class VideoBags:
    """Per video: frame features, CNN frame scores and softmax confidence, label, patient, split."""

    video: np.ndarray
    patient: np.ndarray
    split: np.ndarray
    label: np.ndarray
    features: list[np.ndarray]
    frame_pred: list[np.ndarray]
    frame_conf: list[np.ndarray]

    @classmethod
    def from_frames(cls, video, patient, split, label, features, softmax) -> VideoBags:
        video = np.asarray(video).astype(str)
        names, first, codes = np.unique(video, return_index=True, return_inverse=True)
        codes = codes.ravel()
        n_classes = softmax.shape[1]
        label = np.asarray(label, dtype=np.int64)
        rows = [np.flatnonzero(codes == i) for i in range(len(names))]
        split = np.asarray(split).astype(str)
        mixed = [names[i] for i, r in enumerate(rows) if len(set(split[r])) > 1]
        if mixed:
            raise ValueError(f"videos with frames in both train and test: {mixed[:5]}")
        return cls(
            video=names,
            patient=np.asarray(patient).astype(str)[first],
            split=split[first],
            label=aggregate_by_group(label, codes, len(names), "majority", n_classes),
            features=[np.asarray(features[r], dtype=np.float32) for r in rows],
            frame_pred=[softmax[r].argmax(axis=1) for r in rows],
            frame_conf=[softmax[r].max(axis=1) for r in rows],
        )


def fold_of_patient(split: dict) -> dict[str, int]:
    return {str(p): int(f["fold"]) for f in split["folds"] for p in f["val_patients"]}


def score_videos(bags: VideoBags, split: dict, n_classes: int, cfg: dict, seed: int) -> tuple[pd.DataFrame, VideoModel]:
    """Out-of-fold attention scores for training videos, `all`-model scores for test videos,
    next to the fixed aggregations. Returns (table, the model trained on all training videos)."""
    train = np.flatnonzero(bags.split == "train")
    test = np.flatnonzero(bags.split == "test")
    if len(train) == 0:
        raise ValueError("no training videos to fit the video model on")
    folds = fold_of_patient(split)
    fold = np.array([folds.get(p, -1) if s == "train" else -1 for p, s in zip(bags.patient, bags.split, strict=True)])
    proba = np.full((len(bags.video), n_classes), np.nan, np.float32)
    # early stopping: each fold's held-out videos scored every `every` steps; the step count with
    # the lowest held-out loss over all folds is then every fold's and the final model's
    every = max(1, int(cfg["epochs"]) // 30) if cfg["early_stopping"] else 0
    curves, held_out = [], []
    for f in sorted(set(fold[train])):
        fit_rows = train[fold[train] != f]
        score_rows = train[fold[train] == f]
        if len(fit_rows) == 0:
            raise ValueError(f"fold {f}: no training videos outside it")
        watch = [bags.features[i] for i in score_rows]
        model, curve = fit_video_model([bags.features[i] for i in fit_rows], bags.label[fit_rows], n_classes, cfg,
                                       seed + f + 1, watch=watch, every=every)
        proba[score_rows] = model.predict_proba(watch)
        curves.append(curve)
        held_out.append(score_rows)
    steps = int(cfg["epochs"])
    if every:
        steps = early_stopping_step(curves, [bags.label[r] for r in held_out])
        for rows, curve in zip(held_out, curves, strict=True):
            proba[rows] = curve[steps]
    final, _ = fit_video_model([bags.features[i] for i in train], bags.label[train], n_classes, cfg, seed, steps=steps)
    if len(test):
        proba[test] = final.predict_proba([bags.features[i] for i in test])
    fraction = float(cfg["confident_fraction"])
    fixed = [fixed_aggregations(bags.frame_pred[i], bags.frame_conf[i], n_classes, fraction) for i in range(len(bags.video))]
    table = pd.DataFrame(
        {
            "video": bags.video,
            "patient": bags.patient,
            "split": bags.split,
            "fold": fold,
            "label": bags.label,
            "n_frames": [len(f) for f in bags.features],
            "attention": proba.argmax(axis=1),
            **{f"p_{c}": proba[:, c] for c in range(n_classes)},
            **{how: [row[how] for row in fixed] for how in FIXED_AGGREGATIONS},
        }
    )
    return table, final


def frame_motion(embedding: np.ndarray, video: np.ndarray | None = None) -> np.ndarray:
    """(N, 1): how far each frame's embedding moved from the previous frame of its video (the
    root-mean-square difference; 0 for a video's first frame). B-lines and lung sliding move:
    a still frame and a moving one can share an embedding but not this. Frames in video order;
    `video` None: all one video."""
    embedding = np.asarray(embedding, dtype=np.float64)
    step = np.zeros(len(embedding))
    if len(embedding) > 1:
        same = np.ones(len(embedding) - 1, bool) if video is None else np.asarray(video)[1:] == np.asarray(video)[:-1]
        rms = np.sqrt(np.mean((embedding[1:] - embedding[:-1]) ** 2, axis=1))
        step[1:] = np.where(same, rms, 0.0)
    return step[:, None].astype(np.float32)


def frame_features(softmax: np.ndarray, embedding: np.ndarray, findings: np.ndarray, cfg: dict,
                   video: np.ndarray | None = None) -> np.ndarray:
    """The video model's per-frame input (the workflow's and `lus predict`'s): the softmax or the
    embedding (`input`), then the finding probabilities when `use_findings` and there are any,
    then the frame's motion (`frame_motion`) when `motion`. `video`: each frame's video (frames in
    video order); None: all one video."""
    parts = [softmax if cfg["input"] == "softmax" else embedding]
    if cfg["use_findings"] and findings.shape[1]:
        parts.append(findings)
    if cfg["motion"]:
        parts.append(frame_motion(embedding, video))
    return parts[0] if len(parts) == 1 else np.hstack(parts).astype(np.float32)


def run_video_model(predictions_h5: str | Path, split_json: str | Path, out_csv, out_model, config: dict,
                    scope: str = "") -> pd.DataFrame:
    """Step `fit_video_model`: read a backbone's predictions of `scope`, write its video table and model."""
    cfg = config["video_model"]
    n_classes = len(config["classes"])
    p = read_predictions(predictions_h5)
    features = frame_features(p.softmax, p.embedding_oof, p.findings, cfg, p.video)
    bags = VideoBags.from_frames(p.video, p.patient, p.split, p.label, features, p.softmax)
    table, final = score_videos(bags, scope_split(read_json(split_json), scope), n_classes, cfg, int(config["seed"]))
    write_video_table(table, out_csv)
    final.save(out_model, {"input": cfg["input"], "use_findings": bool(cfg["use_findings"]), "motion": bool(cfg["motion"]),
                           "finding_names": p.finding_names, "classes": json.dumps(list(config["classes"])), "config": config_json(config)})
    return table
