"""`lus score`: external validation of a `lus predict` output against labels another site sends.

The labels CSV gives one score per video, named by its id or, as the workflow matches a dataset's
labels to files, by its source's file name, stem or path (match_videos). Every frame of a labelled
video gets the video's label (frame level: ``cnn_score``, ``final_score`` of frames.csv); every
``score_*`` of summary.json is scored per video (video level). Metrics are lus_core.metrics'
(accuracy, balanced accuracy, macro-F1, QWK) with percentile intervals from resampling patients;
every score and the majority-class baseline are scored on the same resamples, so their
differences are paired.

Written into ``--out`` (default ``PRED_DIR/score/``) through a staging folder and moved in only
when complete (lus_core.runs.safe_output): ``score.json``, ``metrics.csv``, ``index.html``. A
non-empty ``--out`` is refused unless an earlier ``lus score`` wrote it, and then only the files
listed in its ``.lus_score.json`` are replaced.
"""

from __future__ import annotations

import csv as csv_module
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lus_core.frames.labels import DatasetError, class_index, label_rows, rows_by_video
from lus_core.io_utils import sha256_file, write_json
from lus_core.metrics import CM_METRICS, bootstrap_ci, confusion_matrix, paired_bootstrap_diff
from lus_core.report.markup import CSS, ci_pct, esc, fmt, fmt_ci, kv, table
from lus_core.runs.safe_output import OutputError, publish, staged

FRAME_SCORES = ("cnn_score", "final_score")  # frames.csv's class columns (fallback_score is empty when trusted)
BASELINE = "majority_class_baseline"
SCORE_MANIFEST = ".lus_score.json"
OUTPUTS = ("score.json", "metrics.csv", "index.html")
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
                "qwk": "QWK"}
PAGE_CSS = "tr.baseline td{color:#666;font-style:italic}"  # the report's CSS plus the baseline row
MAX_LISTED = 10  # rows / videos named in one error message


class LabelsError(ValueError):
    """The labels CSV cannot be used; the message names the file and the rows."""


class PredictionError(ValueError):
    """The `lus predict` folder is incomplete or inconsistent; the message names the file."""


# --------------------------------------------------------------------------- the prediction


@dataclass
class Prediction:
    """What `lus score` reads of a `lus predict` folder."""

    folder: Path
    summary: dict  # summary.json
    frames: pd.DataFrame  # frames.csv: video, frame and FRAME_SCORES, as text
    classes: list
    video_scores: list[str]  # the score_* keys of summary.json's videos

    @property
    def videos(self) -> dict:
        return self.summary["videos"]

    @property
    def failed(self) -> dict:
        return self.summary.get("failed") or {}


def read_prediction(pred_dir: str | Path) -> Prediction:
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise PredictionError(f"{folder}: not a folder (give the --out folder of `lus predict`)")
    summary = read_summary(folder / "summary.json")
    return Prediction(folder, summary, read_frames(folder / "frames.csv"), list(summary["classes"]),
                      video_score_keys(summary, folder / "summary.json"))


def read_summary(path: Path) -> dict:
    if not path.is_file():
        raise PredictionError(f"{path}: not found; is {path.parent} the --out folder of `lus predict`?")
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PredictionError(f"{path}: unreadable ({exc})") from exc
    missing = [k for k in ("videos", "classes") if k not in summary]
    if missing:
        raise PredictionError(f"{path}: no {missing} key(s); not a `lus predict` summary")
    if len(summary["classes"]) < 2:
        raise PredictionError(f"{path}: classes {summary['classes']} (need at least two)")
    return summary


def read_frames(path: Path) -> pd.DataFrame:
    """frames.csv's video, frame and class columns as text (video ids such as "007" stay text)."""
    if not path.is_file():
        raise PredictionError(f"{path}: not found; is {path.parent} the --out folder of `lus predict`?")
    wanted = ("video", "frame", *FRAME_SCORES)
    try:
        frames = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c in wanted)
    except (OSError, ValueError) as exc:
        raise PredictionError(f"{path}: unreadable ({exc})") from exc
    missing = [c for c in wanted if c not in frames.columns]
    if missing:
        raise PredictionError(f"{path}: no column(s) {missing}; not a `lus predict` frames.csv")
    return frames


def video_score_keys(summary: dict, path: Path) -> list[str]:
    """The video-level scores (``score_*``, in summary.json's order); every video must have each."""
    keys = list(dict.fromkeys(k for entry in summary["videos"].values() for k in entry if k.startswith("score_")))
    for vid, entry in summary["videos"].items():
        lacking = [k for k in keys if k not in entry]
        if lacking:
            raise PredictionError(f"{path}: video {vid!r} has no {lacking} (the other videos do)")
    return keys


def class_codes(values, classes: list) -> np.ndarray:
    """Class indices of class names as a CSV or JSON writes them (2, "2" and "2.0" all name class
    2: lus_core.frames.labels.class_index); -1 where a value names no class."""
    text = pd.Series(list(values), dtype=object).map(lambda v: str(v).strip())
    lookup = {}
    for value in text.unique():  # few distinct values: look each up once
        try:
            lookup[value] = class_index(value, classes, "")
        except DatasetError:
            lookup[value] = -1
    return text.map(lookup).to_numpy(np.int64)


# --------------------------------------------------------------------------- the labels


def read_labels(csv: str | Path, classes: list, video_col: str = "video", score_col: str = "score",
                patient_col: str | None = None) -> pd.DataFrame:
    """The labels CSV, one row per video: ``video`` (the name the CSV gives it), ``label`` (class
    index), ``line`` (the file line the row starts on) and, with ``patient_col``, ``patient``.
    Refuses missing columns, empty or repeated names, scores that are not one of ``classes`` and
    empty patients, naming the lines."""
    csv = Path(csv)
    text = read_csv_text(csv)
    missing = [f"{c!r} ({opt})" for c, opt in ((video_col, "--video-col"), (score_col, "--score-col"),
                                                (patient_col, "--patient-col")) if c and c not in text.header]
    if missing:
        raise LabelsError(f"{csv}: no column {', '.join(missing)}; its columns are {text.header}")
    if not text.records:
        raise LabelsError(f"{csv}: no rows")
    out = pd.DataFrame({"video": text.column(video_col).str.strip(), "line": text.lines})
    _refuse_lines(csv, out, out["video"] == "", f"have no video id (column {video_col!r})")
    _refuse_lines(csv, out, out["video"].duplicated(keep=False), "name the same video more than once")
    scores = text.column(score_col)
    out["label"] = class_codes(scores, classes)
    bad = (out["label"] < 0).to_numpy()
    if bad.any():
        listed = [f"line {line} ({vid}: {value!r})" for line, vid, value
                  in zip(out["line"][bad], out["video"][bad], scores[bad], strict=True)]
        raise LabelsError(f"{csv}: column {score_col!r} is not one of the run's classes {classes} in "
                          f"{_listing(listed)}")
    if patient_col:
        out["patient"] = text.column(patient_col).str.strip()
        _refuse_lines(csv, out, out["patient"] == "", f"have no patient (column {patient_col!r})")
    return out


@dataclass
class CsvText:
    """A CSV as text: its header, its records and the file line each record starts on."""

    header: list[str]
    records: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> pd.Series:
        """One column's cells ("" where a short record lacks it); a repeated name is its first column."""
        j = self.header.index(name)
        return pd.Series([r[j] if j < len(r) else "" for r in self.records], dtype=object)


def read_csv_text(csv: Path) -> CsvText:
    """Read with the csv module rather than pandas, which skips blank lines and joins quoted
    multi-line cells without saying where a row began: error messages must name the file's lines."""
    if not csv.is_file():
        raise LabelsError(f"{csv}: labels file not found")
    header, records, lines = None, [], []
    try:
        with csv.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a spreadsheet's byte-order mark
            reader = csv_module.reader(f)
            start = 1
            for record in reader:
                if not _is_blank(record):
                    if header is None:
                        header = record
                    else:
                        records.append(_within_header(record, header, start, csv))
                        lines.append(start)
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv_module.Error) as exc:
        raise LabelsError(f"{csv}: cannot read the labels CSV ({exc})") from exc
    if header is None:
        raise LabelsError(f"{csv}: cannot read the labels CSV (the file is empty: no header line)")
    return CsvText(header, records, lines)


def _is_blank(record: list[str]) -> bool:
    """An empty or whitespace-only line, which pandas (and so the workflow) skips too."""
    return not record or (len(record) == 1 and not record[0].strip())


def _within_header(record: list[str], header: list[str], line: int, csv: Path) -> list[str]:
    """``record`` without empty trailing cells beyond the header; refused when those hold values,
    since which column each value belongs to is then unknown."""
    extra = record[len(header):]
    if any(cell.strip() for cell in extra):
        raise LabelsError(f"{csv}: cannot read the labels CSV (line {line} has {len(record)} fields, "
                          f"the header {len(header)})")
    return record[:len(header)]


def _refuse_lines(csv: Path, labels: pd.DataFrame, mask, problem: str) -> None:
    mask = np.asarray(mask, bool)
    if mask.any():
        listed = [f"line {line} ({vid!r})" for line, vid in zip(labels["line"][mask], labels["video"][mask], strict=True)]
        raise LabelsError(f"{csv}: {_listing(listed)} {problem}")


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


# --------------------------------------------------------------------------- labels x prediction


@dataclass
class Matching:
    scored: list[str]  # ids of the labelled, predicted videos (sorted)
    row_of: dict[str, int]  # scored video id -> its row of the labels
    labelled_as: dict[str, str]  # scored video id -> the labels' name for it, where that is not the id
    unlabelled: list[str]  # predicted, without a label
    not_predicted: dict[str, str]  # labelled (the labels' name), not predicted -> why


def match_videos(labels: pd.DataFrame, prediction: Prediction, csv: str | Path) -> Matching:
    """Which labelled videos the prediction scored; refuses labels that match none of them, a
    row that matches several videos and a video that several rows match."""
    rows_of = video_label_rows(labels, prediction, csv)
    row_of = one_row_per_video(rows_of, labels, prediction, csv)
    scored = sorted(vid for vid in row_of if vid in prediction.videos)
    if not scored:
        predicted = sorted(prediction.videos)
        raise LabelsError(
            f"{csv}: no labelled video is among the {len(predicted)} video(s) of {prediction.folder / 'summary.json'} "
            f"(labels name e.g. {sorted(labels['video'])[:3]}, the prediction has e.g. {predicted[:3]}); "
            "a label names a video by the id `lus predict` gave it or by its source's file name, stem or path "
            "(summary.json's videos hold each id and source)")
    names = {vid: labels.at[row_of[vid], "video"] for vid in scored}
    return Matching(scored, {vid: row_of[vid] for vid in scored},
                    {vid: name for vid, name in names.items() if name != vid},
                    sorted(set(prediction.videos) - set(scored)), _not_predicted(labels, row_of, prediction))


def _not_predicted(labels: pd.DataFrame, row_of: dict[str, int], prediction: Prediction) -> dict[str, str]:
    """The labels' name of each row whose video was not scored -> why (by name)."""
    video_of = {row: vid for vid, row in row_of.items()}
    out = {}
    for row in sorted(labels.index, key=lambda r: labels.at[r, "video"]):
        vid = video_of.get(row)
        if vid in prediction.videos:
            continue
        failed = prediction.failed.get(vid)
        out[labels.at[row, "video"]] = (f"`lus predict` could not score it: {failed.get('reason', '')}" if failed
                                        else "not among the predicted videos")
    return out


def video_label_rows(labels: pd.DataFrame, prediction: Prediction, csv: str | Path) -> dict[str, list[int]]:
    """The labels rows naming each video of the prediction (scored or failed): its id, or its
    source as the workflow matches a dataset's labels to files (lus_core.frames.labels): the file
    name, the stem, or the path relative to the labels file's folder or to the video's folder."""
    sources = {vid: entry.get("source") or "" for vid, entry in {**prediction.failed, **prediction.videos}.items()}
    folders = sorted({Path(source).parent for source in sources.values() if source})
    by_key = rows_by_video(labels, {"video": "video"}, [Path(csv).parent, *folders])
    # a row that is a video's id names that video alone: ids are unique, names and stems need not be
    id_row = {name: row for row, name in labels["video"].items() if name in sources}
    rows_of = {}
    for vid, source in sources.items():
        found = {*by_key.get(vid, []), *(source_rows(Path(source), by_key) if source else [])}
        rows_of[vid] = sorted((found - set(id_row.values())) | ({id_row[vid]} if vid in id_row else set()))
    return rows_of


def source_rows(source: Path, by_key: dict[str, list[int]]) -> list[int]:
    """lus_core.frames.labels.label_rows of a recorded source (a relative one read from the
    current folder). That function asks the disk whether a path is a file (whose stem names it
    too); a source not found here (moved, or predicted on another machine) counts as a file when
    its name has an extension."""
    rows = label_rows(source, by_key)
    if source.suffix and not source.exists():
        rows += label_rows(source.with_suffix(""), by_key)
    return rows


def one_row_per_video(rows_of: dict[str, list[int]], labels: pd.DataFrame, prediction: Prediction,
                      csv: str | Path) -> dict[str, int]:
    """Each named video's one row; refuses a row naming several videos and a video named by several rows."""
    videos_of: dict[int, list[str]] = {}
    for vid, rows in rows_of.items():
        for row in rows:
            videos_of.setdefault(row, []).append(vid)
    ambiguous = [f"line {labels.at[row, 'line']} ({labels.at[row, 'video']!r}) names "
                 + " and ".join(_described(vid, prediction) for vid in sorted(vids))
                 for row, vids in sorted(videos_of.items()) if len(vids) > 1]
    if ambiguous:
        raise LabelsError(f"{csv}: {_listing(ambiguous)}; name each video by its id or its path")
    twice = [f"{_described(vid, prediction)} is named by "
             + " and ".join(f"line {labels.at[row, 'line']} ({labels.at[row, 'video']!r})" for row in rows)
             for vid, rows in sorted(rows_of.items()) if len(rows) > 1]
    if twice:
        raise LabelsError(f"{csv}: {_listing(twice)}; keep one row per video")
    return {vid: rows[0] for vid, rows in rows_of.items() if rows}


def _described(vid: str, prediction: Prediction) -> str:
    entry = prediction.videos.get(vid) or prediction.failed.get(vid) or {}
    return f"video {vid} ({entry.get('source', '')})"


def scored_labels(labels: pd.DataFrame, matching: Matching) -> pd.DataFrame:
    """The labels rows of the scored videos in ``matching.scored``'s order, ``video`` holding the
    ids `lus predict` gave them."""
    return labels.loc[[matching.row_of[vid] for vid in matching.scored]].assign(video=matching.scored)


def video_patients(labels: pd.DataFrame, videos: list[str], patient_col: str | None = None,
                   patient_regex: str | None = None) -> tuple[np.ndarray, str]:
    """The patient of each of ``videos`` and how it was found: the labels' patient column, the
    first group of a regex on the video id, or, with neither, the video itself."""
    if patient_col and patient_regex:
        raise ValueError("give --patient-col or --patient-regex, not both")
    if patient_col:
        by_video = labels.set_index("video")["patient"]
        return by_video.loc[videos].to_numpy(str), f"column {patient_col!r} of the labels CSV"
    if patient_regex:
        return _regex_patients(videos, patient_regex), f"the first group of --patient-regex '{patient_regex}' on the video id"
    return np.asarray(videos, dtype=str), ("each video is its own patient (no --patient-col or --patient-regex): "
                                           "videos of one patient are resampled as if independent, so the "
                                           "intervals are too narrow when a patient has several videos")


def _regex_patients(videos: list[str], regex: str) -> np.ndarray:
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"--patient-regex '{regex}': not a regular expression ({exc})") from exc
    if pattern.groups < 1:
        raise ValueError(f"--patient-regex '{regex}': needs a group, e.g. 'patient_(\\d+)_': its first group is the patient")
    found = [pattern.search(v) for v in videos]
    unmatched = [v for v, m in zip(videos, found, strict=True) if not m or not m.group(1)]
    if unmatched:
        raise ValueError(f"--patient-regex '{regex}': no patient in the video id(s) {_listing(unmatched)}")
    return np.array([m.group(1) for m in found], dtype=str)


# --------------------------------------------------------------------------- what is scored


@dataclass
class Level:
    """One level's truth, patients and predictions (class indices), row by row."""

    name: str  # "frame" or "video"
    y_true: np.ndarray
    patients: np.ndarray
    predictions: dict[str, np.ndarray]  # score column -> prediction


def frame_level(prediction: Prediction, videos: list[str], labels: np.ndarray, patients: np.ndarray) -> Level:
    """Every frame of ``videos`` with its video's label and patient."""
    frames = prediction.frames[prediction.frames["video"].isin(set(videos))]
    empty = sorted(set(videos) - set(frames["video"]))
    if empty:
        raise PredictionError(f"{prediction.folder / 'frames.csv'}: no frame of the video(s) {_listing(empty)} "
                              "that summary.json lists; the folder is incomplete")
    pos = pd.Series(np.arange(len(videos)), index=videos).loc[frames["video"]].to_numpy()
    predictions = {}
    for col in FRAME_SCORES:
        predictions[col] = _checked_codes(frames[col], prediction.classes, prediction.folder / "frames.csv", col)
    return Level("frame", labels[pos], patients[pos], predictions)


def video_level(prediction: Prediction, videos: list[str], labels: np.ndarray, patients: np.ndarray) -> Level:
    predictions = {key: _checked_codes([prediction.videos[v][key] for v in videos], prediction.classes,
                                       prediction.folder / "summary.json", key)
                   for key in prediction.video_scores}
    return Level("video", labels, patients, predictions)


def _checked_codes(values, classes: list, path: Path, column: str) -> np.ndarray:
    codes = class_codes(values, classes)
    if (codes < 0).any():
        odd = sorted({str(v) for v, c in zip(values, codes, strict=True) if c < 0})
        raise PredictionError(f"{path}: {column} holds value(s) {odd[:MAX_LISTED]} that are not classes {classes}")
    return codes


def majority_class(video_labels: np.ndarray, n_classes: int) -> int:
    """The most frequent label among the scored videos (ties: the lower class). Chosen on the
    labels being scored, so it is the best constant guess in hindsight, not a model."""
    return int(np.bincount(video_labels, minlength=n_classes).argmax())


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Bootstrap:
    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0

    def check(self) -> None:
        if self.n_boot < 1:
            raise ValueError(f"--n-bootstrap must be at least 1, got {self.n_boot}")
        if not 0 < self.ci < 1:
            raise ValueError(f"--ci must lie between 0 and 1 (e.g. 0.95), got {self.ci}")


def score_level(level: Level, baseline: int, n_classes: int, boot: Bootstrap) -> dict:
    """Per score column (and the baseline): metrics with patient intervals, the paired difference
    to the baseline, and the confusion matrix. Every call resamples the same patients with the
    same seed, so all columns (and both levels) share their resamples."""
    kw = {"n_boot": boot.n_boot, "ci": boot.ci, "seed": boot.seed, "n_classes": n_classes}
    constant = np.full(len(level.y_true), baseline)
    scores = {}
    for col, pred in {**level.predictions, BASELINE: constant}.items():
        scores[col] = {
            "metrics": {m: bootstrap_ci(m, level.y_true, pred, level.patients, **kw).as_dict() for m in CM_METRICS},
            "vs_baseline": None if col == BASELINE else {
                m: paired_bootstrap_diff(m, level.y_true, pred, constant, level.patients, **kw).as_dict()
                for m in CM_METRICS},
            "confusion_matrix": confusion_matrix(level.y_true, pred, n_classes).tolist(),
        }
    return {"n": len(level.y_true), "n_patients": len(np.unique(level.patients)), "scores": scores}


def metrics_table(levels: dict[str, dict]) -> pd.DataFrame:
    """metrics.csv: one row per level x score column."""
    rows = []
    for level, result in levels.items():
        for col, s in result["scores"].items():
            row = {"level": level, "score": col, "n": result["n"], "n_patients": result["n_patients"]}
            for m, v in s["metrics"].items():
                row.update({m: v["estimate"], f"{m}_lo": v["lo"], f"{m}_hi": v["hi"]})
            for m in CM_METRICS:
                d = (s["vs_baseline"] or {}).get(m, {})
                row.update({f"{m}_vs_baseline": d.get("diff"), f"{m}_vs_baseline_lo": d.get("lo"),
                            f"{m}_vs_baseline_hi": d.get("hi"), f"{m}_vs_baseline_p": d.get("p_value")})
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the whole command


@dataclass
class ScoreResult:
    out_dir: Path
    record: dict  # score.json
    warnings: list[str]


def run_score(pred_dir, labels_csv, video_col: str = "video", score_col: str = "score",
              patient_col: str | None = None, patient_regex: str | None = None, out_dir=None,
              n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0) -> ScoreResult:
    """Score ``pred_dir`` (a `lus predict` output) against ``labels_csv`` and write score.json,
    metrics.csv and index.html into ``out_dir`` (default ``pred_dir/score``)."""
    boot = Bootstrap(int(n_bootstrap), float(ci), int(seed))
    boot.check()
    pred_dir, labels_csv = Path(pred_dir), Path(labels_csv)
    out_dir = Path(out_dir) if out_dir is not None else pred_dir / "score"
    check_score_out(out_dir)  # before any work
    prediction = read_prediction(pred_dir)
    labels = read_labels(labels_csv, prediction.classes, video_col, score_col, patient_col)
    matching = match_videos(labels, prediction, labels_csv)
    labelled = scored_labels(labels, matching)
    patients, patients_from = video_patients(labelled, matching.scored, patient_col, patient_regex)
    y = labelled["label"].to_numpy(np.int64)
    baseline = majority_class(y, len(prediction.classes))
    levels = {lv.name: score_level(lv, baseline, len(prediction.classes), boot) for lv in (
        frame_level(prediction, matching.scored, y, patients), video_level(prediction, matching.scored, y, patients))}
    warnings = matching_warnings(matching, labels_csv)
    record = score_record(prediction, labels_csv, matching, patients, patients_from, baseline, levels, boot, warnings)
    write_outputs(record, metrics_table(levels), out_dir)
    for w in warnings:
        print(f"lus score: warning: {w}", file=sys.stderr)
    print(headline(record, out_dir))
    return ScoreResult(out_dir, record, warnings)


def matching_warnings(matching: Matching, csv: Path) -> list[str]:
    out = []
    if matching.unlabelled:
        out.append(f"{len(matching.unlabelled)} predicted video(s) have no label in {csv} and are not scored: "
                   f"{_listing(matching.unlabelled)}")
    if matching.not_predicted:
        out.append(f"{len(matching.not_predicted)} labelled video(s) of {csv} were not predicted: "
                   + _listing([f"{v} ({why})" for v, why in matching.not_predicted.items()]))
    return out


def score_record(prediction: Prediction, labels_csv: Path, matching: Matching, patients: np.ndarray,
                 patients_from: str, baseline: int, levels: dict, boot: Bootstrap, warnings: list[str]) -> dict:
    """score.json: inputs (with checksums, so a later `lus predict --overwrite` is noticed), the
    videos scored and left out, the patients, the baseline, and each level's results."""
    classes = prediction.classes
    summary = prediction.summary
    return {
        "written_by": "lus score",
        "predictions": {"folder": str(prediction.folder.resolve()),
                        "sha256": {f: sha256_file(prediction.folder / f) for f in ("frames.csv", "summary.json")}},
        "labels": {"file": str(labels_csv.resolve()), "sha256": sha256_file(labels_csv)},
        "run": summary.get("run"),
        "configuration": (summary.get("configuration") or {}).get("config_id"),
        "classes": classes,
        "patients": {"from": patients_from, "n": len(np.unique(patients)),
                     "of_video": dict(zip(matching.scored, patients.tolist(), strict=True))},
        "videos": {"scored": matching.scored, "labelled_as": matching.labelled_as,
                   "predicted_without_label": matching.unlabelled,
                   "labelled_not_predicted": matching.not_predicted},
        "bootstrap": {"unit": "patient", "n_boot": boot.n_boot, "ci": boot.ci, "seed": boot.seed,
                      "paired": "every score and the baseline are scored on the same patient resamples"},
        "baseline": {"name": BASELINE, "class": classes[baseline],
                     "chosen_on": "the labels being scored: the most frequent video label among the scored "
                                  "videos (ties: the lower class), i.e. the best constant guess in hindsight"},
        "levels": levels,
        "level_notes": {"frame": "every frame of a labelled video gets the video's label",
                        "video": "each summary.json score_* against the video's label"},
        "warnings": warnings,
    }


def headline(record: dict, out_dir: Path) -> str:
    """What the console shows: where the files are and each score's QWK."""
    lines = [f"wrote {out_dir}/score.json, metrics.csv and index.html: {len(record['videos']['scored'])} video(s), "
             f"{record['patients']['n']} patient(s), {record['levels']['frame']['n']} frame(s)"]
    for level, result in record["levels"].items():
        for col, s in result["scores"].items():
            q = s["metrics"]["qwk"]
            lines.append(f"  {level:5s} {col:24s} QWK {fmt_ci(q['estimate'], q['lo'], q['hi'])}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- output


def check_score_out(out_dir: Path) -> None:
    """Refuse an --out that is a file, or a non-empty folder an earlier `lus score` did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / SCORE_MANIFEST).is_file():
        raise OutputError(f"--out {out_dir}: folder is not empty and holds no {SCORE_MANIFEST}, so it is not an "
                          "earlier `lus score` output; nothing there will be replaced: choose a new or empty folder")


def write_outputs(record: dict, metrics: pd.DataFrame, out_dir: Path) -> None:
    """Stage the three files, then move them in at once (only an earlier `lus score`'s files are replaced)."""
    with staged(out_dir) as staging:  # removed however it ends, a SIGTERM included
        write_json(staging / "score.json", finite(record))
        metrics.to_csv(staging / "metrics.csv", index=False)
        (staging / "index.html").write_text(render_html(record))
        publish(staging, out_dir, SCORE_MANIFEST, "lus score")


def finite(obj):
    """NaN (a metric undefined on these labels, e.g. QWK with one class) as null: strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- the page


def render_html(record: dict) -> str:
    """index.html: one self-contained page (inline CSS, tables only, no script or link)."""
    classes = record["classes"]
    boot = record["bootstrap"]
    parts = [
        f"<h1>External validation: {esc(Path(record['predictions']['folder']).name)}</h1>",
        f'<p class="sub"><code>lus score</code> of a <code>lus predict</code> output against {esc(record["labels"]["file"])}; '
        f"{ci_pct(boot['ci'])} intervals from {boot['n_boot']} resamples of patients (seed {boot['seed']}), "
        "every score paired with the baseline on the same resamples.</p>",
        kv([("predictions", record["predictions"]["folder"]), ("labels", record["labels"]["file"]),
            ("run", record["run"] or "-"), ("configuration", record["configuration"] or "-"),
            ("classes", classes), ("videos scored", len(record["videos"]["scored"])),
            ("patients", f"{record['patients']['n']}: {record['patients']['from']}"),
            ("frames scored", record["levels"]["frame"]["n"]),
            ("baseline", f"always {record['baseline']['class']}; chosen on {record['baseline']['chosen_on']}")]),
    ]
    if record["warnings"]:
        parts.append('<div class="answer yes"><b>Warnings</b><ul>'
                     + "".join(f"<li>{esc(w)}</li>" for w in record["warnings"]) + "</ul></div>")
    for level, result in record["levels"].items():
        parts += level_section(level, result, record["level_notes"][level], classes)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lus score</title>"
            f"<style>{CSS}{PAGE_CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def level_section(level: str, result: dict, note: str, classes: list) -> list[str]:
    header = ["score", *METRIC_NAMES.values()]
    metrics = [[col, *(fmt_ci(v["estimate"], v["lo"], v["hi"]) for v in s["metrics"].values())]
               for col, s in result["scores"].items()]
    diffs = [[col, *(f"{fmt_ci(d['diff'], d['lo'], d['hi'])} (p={fmt(d['p_value'], 3)})" for d in s["vs_baseline"].values())]
             for col, s in result["scores"].items() if s["vs_baseline"]]
    out = [f"<h2>{esc(level.capitalize())} level</h2>",
           f'<p class="small">{esc(note)}; {result["n"]} {esc(level)}(s) of {result["n_patients"]} patient(s).</p>',
           table(header, metrics, row_classes=["baseline" if c == BASELINE else "" for c in result["scores"]]),
           "<h3>Difference to the majority-class baseline (paired)</h3>", table(header, diffs),
           "<h3>Confusion matrices</h3><div class=\"pair\">"]
    for col, s in result["scores"].items():
        out.append(f"<figure>{confusion_table(s['confusion_matrix'], classes)}"
                   f"<figcaption><b>{esc(col)}</b>: rows true, columns predicted</figcaption></figure>")
    out.append("</div>")
    return out


def confusion_table(cm: list[list[int]], classes: list) -> str:
    return table(["true \\ predicted", *map(str, classes)],
                 [[str(c), *row] for c, row in zip(classes, cm, strict=True)])
