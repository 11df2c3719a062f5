"""The ``evaluate`` step: the matrix on the test patients, the configuration chosen on the
training patients, ``eval/matrix.csv``, ``eval/summary.json`` and the figures."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lus_core import metrics as M
from lus_core.class_order import class_order, selection_criterion, video_metric, video_scores
from lus_core.cnn.predictions import Predictions, read_predictions
from lus_core.cnn.settings import embedding_is_learned
from lus_core.frames.skipped import skipped_summary
from lus_core.frames.store import read_frame_index
from lus_core.io_utils import read_json
from lus_core.similarity.neighbors import read_neighbors, stored_diversities
from lus_core.split.scopes import scope_split
from lus_core.videolevel.table import VIDEO_SCORES, read_video_table, video_metrics

from .answer_level import labels_are_per_video, resolve_level, video_answer
from .inputs import check_neighbours_are_training_frames, load_confidence
from .matrix import CONFIG_COLUMNS, TestSet, config_id, deployable_scores, evaluate_matrix, write_matrix
from .seeds import mean_over_seeds, read_validation, video_level_mean, write_validation
from .selected_scores import empty_selected_scores, write_selected_scores
from .selection import VAL_COLUMNS, select_configuration, validation_table
from .summary import build_summary, dataset_counts, selected_entry, write_summary

log = logging.getLogger(__name__)

__all__ = ["run_evaluate", "run_validate", "inputs_from_keys", "video_inputs_from_keys", "CHOSEN_ON"]

CHOSEN_ON = (
    "the training patients only, out of fold ({n_frames} frames of {n_patients} patients): the CNN's "
    "out-of-fold softmax (fold models that did not train on the frame's patient), cross-fitted confidence "
    "with a trust threshold chosen without the frame's fold, and fallback neighbours among training frames "
    "of other patients in the space the test frames are searched in; configurations that would read training "
    "frames through an embedding the `all` model learned on them (embedding / tsne spaces, trust score, "
    "unless the encoder is frozen) are not candidates; criterion {criterion}, {n_candidates} candidate "
    "configurations; no test-patient value was read"
)


def _safe_name(x) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(x))


def _part(p: Predictions, mask: np.ndarray) -> Predictions:
    """Rows of ``mask`` in frame_id order."""
    idx = np.flatnonzero(mask)
    return p.subset(idx[np.argsort(p.frame_id[idx], kind="stable")])


def _check_predictions(preds_full: Mapping[str, Predictions], test_patients: list[str]) -> None:
    ref = None
    for p in preds_full.values():
        is_test = p.split == "test"
        got = sorted(set(p.patient[is_test]))
        if got != test_patients:
            raise ValueError(f"predictions {p.path}: test patients {got} differ from split.json {test_patients}")
        leak = set(p.patient[~is_test]) & set(test_patients)
        if leak:
            raise ValueError(f"predictions {p.path}: test patient(s) {sorted(leak)} have frames marked 'train'")
        unknown = set(np.unique(p.split)) - {"train", "test"}
        if unknown:
            raise ValueError(f"predictions {p.path}: unexpected split values {sorted(unknown)}")
        key = (np.sort(p.frame_id), p.label[np.argsort(p.frame_id, kind="stable")])
        if ref is None:
            ref = (p, key)
        elif not (np.array_equal(ref[1][0], key[0]) and np.array_equal(ref[1][1], key[1])):
            raise ValueError(f"predictions {ref[0].path} and {p.path} disagree on the frames or their labels")


def inputs_from_keys(input_keys: str | Mapping, named: Mapping[str, str]) -> tuple[dict, dict, dict]:
    """(predictions, confidence, neighbors) mappings for :func:`run_evaluate` from the rule's
    named inputs and its ``input_keys`` (rules/common.smk: evaluate_input_keys), checked both ways:
    every listed name must be an input, and no predictions/scores/summary/neighbors input may be
    left unlisted."""
    keys = json.loads(input_keys) if isinstance(input_keys, str) else input_keys

    def get(name: str) -> str:
        if name not in named:
            raise KeyError(f"evaluate: input_keys names input {name!r}, which the rule does not have")
        return str(named[name])

    predictions = {b: get(k) for b, k in keys["predictions"].items()}
    confidence = {(b, m): (get(c), get(j)) for b, m, c, j in keys["confidence"]}
    neighbors = {(b, s): get(k) for b, s, k in keys["neighbors"]}
    listed = set(keys["predictions"].values()) | {k for row in keys["confidence"] for k in row[2:]} | {
        row[2] for row in keys["neighbors"]}
    unlisted = sorted(n for n in named if n.startswith(("predictions_", "scores_", "summary_", "neighbors_"))
                      and n not in listed)
    if unlisted:
        raise KeyError(f"evaluate: inputs {unlisted} are not in input_keys")
    return predictions, confidence, neighbors


def video_inputs_from_keys(input_keys: str | Mapping, named: Mapping[str, str]) -> dict[str, str]:
    """backbone -> its video table among the rule's named inputs (empty without video models)."""
    keys = json.loads(input_keys) if isinstance(input_keys, str) else input_keys
    return {b: str(named[k]) for b, k in keys.get("video", {}).items()}


# the video metrics summary.json lists (balanced accuracy chooses the video answer of nominal classes)
VIDEO_METRICS = {"ordinal": ("accuracy", "qwk"), "nominal": ("accuracy", "balanced_accuracy", "qwk")}


@dataclass
class EvaluationSettings:
    """What the ``evaluate`` step reads from its config slice."""

    classes: list
    seed: int
    n_bootstrap: int
    ci: float
    criterion: str  # resolved (lus_core.class_order.selection_criterion: never auto)
    level: str  # evaluate.selection.level: auto | frame | video (lus_core.evaluation.answer_level)
    ks: list[int]
    modes: list[str]
    diversities: list[str]  # the fallback's neighbour lists (a matrix dimension)
    gallery_diversity: str
    n_gallery: int
    tsne_max_points: int
    raw_size: int
    learned_embedding: dict = field(default_factory=dict)  # backbone -> its embedding trains
    class_order: str = "ordinal"  # lus_core.class_order

    @classmethod
    def from_config(cls, config: Mapping) -> EvaluationSettings:
        ev, sim = config["evaluate"], config["similarity"]
        return cls(
            classes=list(config["classes"]), seed=int(config["seed"]), n_bootstrap=int(ev["n_bootstrap"]),
            ci=float(ev["ci"]), criterion=selection_criterion(ev["selection"]["criterion"], class_order(config)),
            level=ev["selection"]["level"], ks=[int(k) for k in sim["k"]],
            modes=list(sim["fallback"]), diversities=list(sim["fallback_diversity"]),
            gallery_diversity=str(sim["diversity"]), n_gallery=int(ev["n_gallery"]),
            tsne_max_points=int(ev["tsne_max_points"]), raw_size=int(sim["raw_size"]),
            class_order=class_order(config),
        )

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class EvaluationInputs:
    """Every input of the step, aligned: test rows to ``ts.frame_id``, training rows to ``ref_train``."""

    preds_full: dict[str, Predictions]
    test: dict[str, Predictions]
    train: dict[str, Predictions]
    ts: TestSet
    conf_full: dict = field(default_factory=dict)  # (b, m) -> (confidence, trusted, set size) on test frames
    conf_json: dict = field(default_factory=dict)
    trusted_train: dict = field(default_factory=dict)  # (b, m) -> out-of-fold trust on training frames
    neigh_full: dict = field(default_factory=dict)  # (b, s, d) -> (ids, labels, distances) of test frames
    neigh_train: dict = field(default_factory=dict)  # (b, s, d) -> (labels, distances) of training frames
    neigh_gallery: dict = field(default_factory=dict)  # (b, s) -> the galleries' lists of test frames

    @property
    def ref_train(self) -> Predictions:
        return next(iter(self.train.values()))

    @property
    def cnn_test(self) -> dict[str, np.ndarray]:
        return {b: p.pred for b, p in self.test.items()}

    @property
    def conf_test(self) -> dict:
        return {key: (c, t) for key, (c, t, _) in self.conf_full.items()}

    @property
    def neigh_test(self) -> dict:
        return {key: (labels, dist) for key, (_, labels, dist) in self.neigh_full.items()}


def load_inputs(predictions, confidence, neighbors, test_patients: list[str], settings: EvaluationSettings,
                ) -> EvaluationInputs:
    """Read and check the predictions, confidence tables and neighbour files of every backbone."""
    if not predictions:
        raise ValueError("no predictions given")
    preds_full = {b: read_predictions(p) for b, p in sorted(predictions.items())}
    _check_predictions(preds_full, test_patients)
    test = {b: _part(p, p.split == "test") for b, p in preds_full.items()}
    train = {b: _part(p, p.split == "train") for b, p in preds_full.items()}
    ref = next(iter(test.values()))
    n_classes = settings.n_classes
    if ref.label.size and (ref.label.min() < 0 or ref.label.max() >= n_classes):
        raise ValueError(f"labels outside 0..{n_classes - 1}: are they class indices?")
    # no test patient (the deployed scope of a nested run): nothing to resample
    counts = (M.patient_resample_counts(len(test_patients), settings.n_bootstrap, settings.seed) if test_patients
              else np.zeros((settings.n_bootstrap, 0), np.int64))
    ts = TestSet(ref.frame_id, ref.label, ref.patient, ref.video, n_classes, counts, settings.ci)
    data = EvaluationInputs(preds_full, test, train, ts)
    _load_confidence(data, confidence)
    _load_neighbors(data, neighbors, settings)
    return data


def _load_confidence(data: EvaluationInputs, confidence) -> None:
    for (b, m), (csv_path, json_path) in sorted(confidence.items()):
        if b not in data.test:
            raise ValueError(f"confidence {csv_path}: backbone {b!r} has no predictions")
        data.conf_full[(b, m)] = load_confidence(csv_path, data.ts.frame_id)
        data.trusted_train[(b, m)] = load_confidence(csv_path, data.ref_train.frame_id)[1]
        try:
            data.conf_json[(b, m)] = read_json(json_path) if json_path else {}
        except (OSError, ValueError) as e:
            log.warning("confidence json %s unreadable: %s", json_path, e)
            data.conf_json[(b, m)] = {}


def _load_neighbors(data: EvaluationInputs, neighbors, settings: EvaluationSettings) -> None:
    """One neighbour list per (backbone, space, diversity): the fallback's lists are a matrix
    dimension (similarity.fallback_diversity); the galleries show the similarity.diversity list
    when stored."""
    ts, ref_train = data.ts, data.ref_train
    gallery = settings.gallery_diversity
    for (b, s), path in sorted(neighbors.items()):
        if b not in data.test:
            raise ValueError(f"neighbors {path}: backbone {b!r} has no predictions")
        stored = stored_diversities(path)
        for d in dict.fromkeys([*settings.diversities, gallery if gallery in stored else "none"]):
            t = read_neighbors(path, ts.frame_id, diversity=d)
            check_neighbours_are_training_frames(path, ts.patient, t.neighbor_frame_id, ref_train.frame_id,
                                                 ref_train.patient)
            lists = (t.neighbor_frame_id, t.neighbor_label, t.distance)
            if d == gallery or (d == "none" and gallery not in stored):
                data.neigh_gallery[(b, s)] = lists
            if d not in settings.diversities:
                continue
            data.neigh_full[(b, s, d)] = lists
            v = read_neighbors(path, ref_train.frame_id, diversity=d)
            check_neighbours_are_training_frames(path, ref_train.patient, v.neighbor_frame_id, ref_train.frame_id,
                                                 ref_train.patient)
            data.neigh_train[(b, s, d)] = (v.neighbor_label, v.distance)


def validation_of(data: EvaluationInputs, settings: EvaluationSettings,
                  seed_validations: Sequence[Mapping] | None = None) -> pd.DataFrame:
    """Every deployable configuration's validation scores on the training patients (out of fold);
    with several model seeds, their mean over the seeds' replicas (lus_core.evaluation.seeds)."""
    ref_train = data.ref_train
    val = validation_table(ref_train.label, ref_train.patient, {b: p.pred for b, p in data.train.items()},
                           data.trusted_train, data.neigh_train, settings.ks, settings.modes, settings.n_classes,
                           settings.learned_embedding)
    return mean_over_seeds(val, seed_validations, settings.criterion) if seed_validations else val


def score_and_select(data: EvaluationInputs, settings: EvaluationSettings,
                     seed_validations: Sequence[Mapping] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the matrix with its validation columns and ``selected``, the validation table). The
    selection sees training-patient arrays only; the test score of what it chose is in the matrix."""
    class_names = [_safe_name(c) for c in settings.classes]
    matrix = evaluate_matrix(data.cnn_test, data.conf_test, data.neigh_test, data.ts, settings.ks, settings.modes,
                             class_names)
    val = validation_of(data, settings, seed_validations)
    chosen = select_configuration(val, settings.criterion)
    matrix = matrix.merge(val.drop(columns=list(CONFIG_COLUMNS)), on="config_id", how="left", validate="one_to_one")
    matrix["selected"] = matrix["config_id"] == chosen["config_id"]
    return matrix, val


def selected_scores(data: EvaluationInputs, settings: EvaluationSettings, selected: Mapping) -> pd.DataFrame:
    """The selected configuration's scores of every test frame (the nested estimate pools them):
    frame_id, patient, video, label, the CNN's score, the final score and whether it was trusted."""
    b = selected["backbone"]
    trusted_by = {m: t for (bb, m), (_, t) in data.conf_test.items() if bb == b}
    neigh_by = {(s, d): nb for (bb, s, d), nb in data.neigh_test.items() if bb == b}
    cnn = data.cnn_test[b]
    for cfg, final, trusted in deployable_scores(cnn, trusted_by, neigh_by, settings.ks, settings.modes,
                                                 settings.n_classes):
        meta = {"row_type": "", "backbone": b, "confidence": "", "space": "", "k": None, "fallback": "",
                "diversity": "", **cfg}
        if config_id(meta) == selected["config_id"]:
            ts = data.ts
            return pd.DataFrame({"frame_id": ts.frame_id, "patient": ts.patient, "video": ts.video, "label": ts.y,
                                 "cnn": cnn, "final": final, "trusted": trusted, "config_id": selected["config_id"]})
    raise ValueError(f"selected configuration {selected['config_id']!r} is none of {b}'s")


def run_evaluate(
    predictions: Mapping[str, str | os.PathLike],
    confidence: Mapping[tuple[str, str], tuple[str | os.PathLike, str | os.PathLike]],
    neighbors: Mapping[tuple[str, str], str | os.PathLike],
    split_json: str | os.PathLike,
    frame_index_csv: str | os.PathLike,
    out_matrix_csv: str | os.PathLike,
    out_summary_json: str | os.PathLike,
    out_dir_figures: str | os.PathLike,
    config: Mapping,
    *,
    figures: bool = True,
    video_tables: Mapping[str, str | os.PathLike] | None = None,
    scope: str = "",
    out_selected_csv: str | os.PathLike | None = None,
    seed_validations: Sequence[str | os.PathLike] = (),
) -> pd.DataFrame:
    """Score every configuration on the test patients of `scope` (lus_core.split.scopes), select
    one on its training patients; write matrix.csv, summary.json, figures and the selected
    configuration's scores of the test frames (`out_selected_csv`). The deployed scope of a nested
    run has no test patients: it selects on every patient (out of fold) and writes the
    validation table as its matrix.

    predictions: backbone -> predictions/{backbone}.h5
    confidence: (backbone, method) -> (confidence/{b}/{m}.csv, confidence/{b}/{m}.json)
    neighbors: (backbone, space) -> neighbors/{b}/{space}.h5
    config: the step's slice of the validated config (lus_core.workflow.step_config: the schema's
    defaults are the only defaults).
    figures: False skips the png files (tests, quick runs, and the seed replicas after the first:
    their figures would repeat the first seed's with other models; their numbers are pooled).
    video_tables: backbone -> video/{backbone}.csv (lus_core.videolevel.model): the video-level table
    (fixed aggregations and the learned score; test with patient intervals, training out of fold).
    seed_validations: with several model seeds (train.seeds), every replica's eval/validation.json
    of this scope: the choices are made on the mean over the seeds (lus_core.evaluation.seeds).
    Returns the matrix (sorted by test accuracy: exploratory).
    """
    settings = EvaluationSettings.from_config(config)
    seeds = [read_validation(p) for p in seed_validations] or None
    split = scope_split(read_json(split_json), scope)
    test_patients = sorted(map(str, split["test_patients"]))
    data = load_inputs(predictions, confidence, neighbors, test_patients, settings)
    settings.learned_embedding = {b: embedding_is_learned(config, b) for b in data.train}
    if not test_patients:
        return _select_on_every_patient(data, settings, split, frame_index_csv, config, out_matrix_csv,
                                        out_summary_json, out_dir_figures, out_selected_csv, video_tables, seeds)
    matrix, val = score_and_select(data, settings, seeds)
    write_matrix(matrix, out_matrix_csv)
    if out_selected_csv is not None:
        sel = matrix.loc[matrix["selected"]].iloc[0]
        write_selected_scores(selected_scores(data, settings, sel), out_selected_csv)

    summary = build_summary(
        matrix, val, data, settings, test_patients, split, frame_index_csv, config,
        matrix_csv=os.path.relpath(out_matrix_csv, Path(out_summary_json).parent),
        chosen_on=CHOSEN_ON.format(n_frames=len(data.ref_train.frame_id),
                                   n_patients=len(set(data.ref_train.patient)), criterion=settings.criterion,
                                   n_candidates=int(val["val_out_of_fold"].sum())),
    )
    add_video_answer(summary, video_tables, test_patients, settings, frame_index_csv, seeds)
    if figures:
        _draw_figures(summary, matrix, data, settings, frame_index_csv, out_dir_figures, Path(out_summary_json).parent)
    else:
        Path(out_dir_figures).mkdir(parents=True, exist_ok=True)  # the step's output folder, empty
    write_summary(summary, out_summary_json)
    return matrix


def video_level_of(video_tables: Mapping, test_patients: list[str], settings: EvaluationSettings) -> dict:
    """Every backbone's video scores: test metrics with patient intervals, `val_*` out of fold."""
    return {
        b: video_metrics(read_video_table(path, test_patients), settings.n_classes, settings.n_bootstrap,
                         settings.ci, settings.seed, scores=video_scores(VIDEO_SCORES, settings.class_order),
                         metrics=VIDEO_METRICS[settings.class_order]).to_dict("records")
        for b, path in sorted(video_tables.items())
    }


def add_video_answer(summary: dict, video_tables: Mapping | None, test_patients: list[str],
                     settings: EvaluationSettings, frame_index_csv,
                     seed_validations: Sequence[Mapping] | None = None) -> None:
    """summary.json's `video_level` (every backbone's video scores; with several model seeds their
    validation values are the mean over the seeds), `answer_level` and, at video level,
    `video_answer` (lus_core.evaluation.answer_level)."""
    if video_tables:
        summary["video_level"] = video_level_of(video_tables, test_patients, settings)
        if seed_validations:
            summary["video_level"] = video_level_mean(summary["video_level"], seed_validations)
    summary["class_order"] = settings.class_order
    per_video = labels_are_per_video(read_frame_index(frame_index_csv))
    summary["answer_level"] = resolve_level(settings.level, bool(video_tables), per_video)
    if summary["answer_level"] == "video":
        summary["video_answer"] = video_answer(summary["video_level"], video_metric(settings.class_order))


def _select_on_every_patient(data: EvaluationInputs, settings: EvaluationSettings, split: Mapping, frame_index_csv,
                             config: Mapping, out_matrix_csv, out_summary_json, out_dir_figures,
                             out_selected_csv, video_tables: Mapping | None = None,
                             seed_validations: Sequence[Mapping] | None = None) -> pd.DataFrame:
    """The deployed scope of nested cross-validation: the selection rule on every patient's
    out-of-fold scores; the matrix is the validation table (there is no test patient to score)."""
    ref_train = data.ref_train
    val = validation_of(data, settings, seed_validations)
    chosen = select_configuration(val, settings.criterion)
    matrix = val.assign(selected=val["config_id"] == chosen["config_id"])
    write_matrix(matrix, out_matrix_csv)
    n_candidates = int(val["val_out_of_fold"].sum())
    chosen_on = CHOSEN_ON.format(n_frames=len(ref_train.frame_id), n_patients=len(set(ref_train.patient)),
                                 criterion=settings.criterion, n_candidates=n_candidates)
    chosen_entry = selected_entry(matrix.loc[matrix["selected"]].iloc[0].to_dict(), settings.criterion,
                                  n_candidates, chosen_on)
    for no_test in ("test", "delta_vs_cnn", "confusion_matrix", "fallback_rate"):
        chosen_entry.pop(no_test, None)  # no patient is held out of this scope
    summary = {
        "scope": "deployed: every patient trains; the estimate of the procedure is the nested one",
        "selected": chosen_entry,
        "counts": {"n_validation_frames": int(len(ref_train.frame_id)),
                   "n_validation_patients": int(len(set(ref_train.patient))), "backbones": list(data.train),
                   "dataset": dataset_counts(frame_index_csv, split, settings.n_classes)},
        "test_patients": [], "classes": settings.classes, "n_bootstrap": settings.n_bootstrap, "ci": settings.ci,
        "seed": settings.seed, "matrix_csv": os.path.relpath(out_matrix_csv, Path(out_summary_json).parent),
        "validation_columns": list(VAL_COLUMNS), "figures": [], "galleries": [], "config": dict(config),
        "skipped_videos": skipped_summary(Path(frame_index_csv).parent),
    }
    add_video_answer(summary, video_tables, [], settings, frame_index_csv, seed_validations)  # validation only
    Path(out_dir_figures).mkdir(parents=True, exist_ok=True)
    if out_selected_csv is not None:
        write_selected_scores(empty_selected_scores(), out_selected_csv)
    write_summary(summary, out_summary_json)
    return matrix


def _draw_figures(summary: dict, matrix: pd.DataFrame, data: EvaluationInputs, settings: EvaluationSettings,
                  frame_index_csv, out_dir, base: Path) -> None:
    from lus_core.evaluation.figures import FigureInputs, evaluation_figures  # matplotlib only when drawing

    records = matrix.to_dict("records")
    sel_row = next(r for r in records if r["selected"])
    combined = [r for r in records if r["row_type"] == "combined"]
    # galleries show a configuration with a fallback: the selected one, else the combined
    # configuration with the best validation score
    gal = sel_row if sel_row["row_type"] == "combined" else None
    if gal is None and combined:
        key = f"val_{settings.criterion}"
        gal = max(combined, key=lambda r: (r[key] if r[key] == r[key] else -np.inf))
    figs, gals = evaluation_figures(FigureInputs(
        matrix=matrix, ts=data.ts, cnn_test=data.cnn_test, preds_full=data.preds_full, conf_full=data.conf_full,
        neigh_full=data.neigh_full, neigh_gallery=data.neigh_gallery, frame_index_csv=frame_index_csv,
        out_dir=out_dir, class_names=[str(c) for c in settings.classes], selected=sel_row, gallery_config=gal,
        seed=settings.seed, n_gallery=settings.n_gallery, tsne_max_points=settings.tsne_max_points,
        raw_size=settings.raw_size,
    ))
    summary["figures"] = [{**f, "file": os.path.relpath(f["file"], base)} for f in figs]
    summary["galleries"] = [{**g, "file": os.path.relpath(g["file"], base)} for g in gals]


def run_validate(predictions, confidence, neighbors, split_json, frame_index_csv, out_json, config: Mapping, *,
                 video_tables: Mapping[str, str | os.PathLike] | None = None, scope: str = "") -> pd.DataFrame:
    """Step `validate` (several model seeds): this replica's validation scores of every
    configuration and video score, for every replica's evaluate to choose on their mean."""
    settings = EvaluationSettings.from_config(config)
    split = scope_split(read_json(split_json), scope)
    test_patients = sorted(map(str, split["test_patients"]))
    data = load_inputs(predictions, confidence, neighbors, test_patients, settings)
    settings.learned_embedding = {b: embedding_is_learned(config, b) for b in data.train}
    val = validation_of(data, settings)
    write_validation(out_json, val, video_level_of(video_tables, test_patients, settings) if video_tables else {})
    return val
