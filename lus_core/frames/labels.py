"""Turn a dataset description (video folders + labels table + patient rule) into a video table.

The video table has one row per video: `video` (id), `path`, `patient`, and the label ranges.
Every problem is reported with the file it concerns. A dataset holding DICOM files has its
patients pseudonymised and its identifying file names replaced (lus_core.frames.identity).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lus_core.frames.decode import is_video
from lus_core.frames.dicom import DicomError, DicomHeaderFacts, header_facts, is_dicom, name_leaks
from lus_core.frames.identity import IdentityError, neutral_name, pseudonymise

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The dataset description does not match the files; the message names the file."""


@dataclass
class VideoEntry:
    video: str
    path: str
    patient: str
    # (start, end inclusive, class index); end None = to the last frame
    ranges: list[tuple[int, int | None, int]] = field(default_factory=list)
    # per range, the value of each configured finding (dataset.findings order): 1 yes, 0 no, -1 unknown
    findings: list[tuple[int, ...]] = field(default_factory=list)
    # what outputs record as the video's source ('' = its path): a DICOM's path relative to its
    # video folder, identifying names replaced
    source: str = ""


# yes/no spellings of a finding cell (compared stripped and lower-cased); an empty cell is unknown
FINDING_VALUES = {"yes": 1, "y": 1, "true": 1, "1": 1, "1.0": 1, "present": 1,
                  "no": 0, "n": 0, "false": 0, "0": 0, "0.0": 0, "absent": 0, "": -1}


def finding_value(value: str, where: str) -> int:
    """1 / 0 / -1 (unknown) for one finding cell; anything else is refused with its place."""
    key = str(value).strip().lower()
    if key not in FINDING_VALUES:
        raise DatasetError(f"{where}: finding value {value!r} is not yes/no (or true/false, 1/0, present/absent, empty)")
    return FINDING_VALUES[key]


def video_id(path: Path) -> str:
    """File-name-safe id: the file stem (folder name for frame folders)."""
    stem = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)


def discover_videos(video_dirs: list[str]) -> list[Path]:
    """Video files (any case of extension; DICOM `.dcm` too), PNG/JPEG frame folders and DICOM
    series folders, sorted."""
    return [p for _, p in _discover(video_dirs)]


def _discover(video_dirs: list[str]) -> list[tuple[Path, Path]]:
    """(video folder, video) of every video."""
    found = []
    for d in video_dirs:
        root = Path(d)
        if not root.is_dir():
            raise DatasetError(f"{root}: video folder not found")
        found += [(root, p) for p in sorted(root.iterdir()) if not p.name.startswith(".") and is_video(p)]
    return found


def _check_unique(named: dict[Path, tuple[str, str]]) -> None:
    seen: dict[str, Path] = {}
    for p, (vid, source) in named.items():
        if vid in seen:
            where = source or p
            raise DatasetError(f"{where}: duplicate video id '{vid}' (also {named[seen[vid]][1] or seen[vid]}); "
                               "rename one of them")
        seen[vid] = p


def dicom_names(root: Path, path: Path, facts: DicomHeaderFacts, salt: bytes) -> tuple[str, str]:
    """(video id, recorded source) of a DICOM file or series folder: its stem and its path below
    the video folder, each file or folder name that carries an identifying value of its header
    replaced by a neutral one (lus_core.frames.identity.neutral_name)."""
    parts = [neutral_name(part, salt) if name_leaks(part, facts.identifying) else part
             for part in path.relative_to(root).parts]
    name = parts[-1]
    stem = Path(name).stem if path.is_file() else name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem), "/".join(parts)


def class_index(value, classes: list, where: str) -> int:
    """Map a label value to its class index; 2.0 matches class 2."""
    for i, c in enumerate(classes):
        if str(c) == str(value):
            return i
        try:
            if float(c) == float(value):
                return i
        except (TypeError, ValueError):
            pass
    raise DatasetError(f"{where}: label {value!r} is not one of the classes {classes}")


def read_labels(labels_path: str, columns: dict, classes: list, findings: dict | None = None) -> pd.DataFrame:
    path = Path(labels_path)
    if not path.exists():
        raise DatasetError(f"{path}: labels file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise DatasetError(f"{path}: cannot read labels CSV: {exc}") from exc
    for key in ("video", "score"):
        if columns[key] not in table.columns:
            raise DatasetError(f"{path}: missing column '{columns[key]}' (dataset.label_columns.{key})")
    for name, column in (findings or {}).items():
        if column not in table.columns:
            raise DatasetError(f"{path}: missing column '{column}' (dataset.findings.{name}); "
                               f"columns are {list(table.columns)}")
    return table


def build_video_table(dataset: dict, classes: list, video_dirs=None, labels_path=None,
                      salt: Callable[[], bytes] | bytes | None = None) -> list[VideoEntry]:
    """Match every discovered video with its labels and patient; raise on any inconsistency.

    Returns the entries sorted by video id. With `on_bad_video: skip`, unlabelled videos are
    returned without ranges (the extraction step records them as skipped). A dataset with DICOM
    files needs `salt` (the run's, lus_core.frames.identity.results_salt; a callable is asked only
    then): its patients are pseudonymised (unless dataset.raw_patient_ids) and identifying file
    names replaced.
    """
    video_dirs = video_dirs if video_dirs is not None else dataset["video_dirs"]
    labels_path = labels_path if labels_path is not None else dataset["labels"]
    cols = dataset["label_columns"]
    table = read_labels(labels_path, cols, classes, dataset["findings"])
    by_key = rows_by_video(table, cols, [Path(labels_path).parent, *video_dirs])
    found = _discover(video_dirs)
    videos = [p for _, p in found]
    facts = _dicom_facts(videos, dataset)
    key = None
    if facts:
        if salt is None:
            raise DatasetError(f"{next(iter(facts))}: DICOM input needs the run's salt to pseudonymise patients")
        try:
            key = salt() if callable(salt) else salt
        except IdentityError as exc:
            raise DatasetError(str(exc)) from exc
    names = {p: dicom_names(root, p, facts[p], key) if p in facts else (video_id(p), "") for root, p in found}
    _check_unique(names)
    entries = [make_entry(path, table, by_key, dataset, classes, labels_path, names[path], facts.get(path))
               for path in videos]
    if not entries:
        raise DatasetError(f"no video found in {video_dirs}")
    if facts and not dataset["raw_patient_ids"]:
        # every patient of the run alike: one person's DICOM and video files stay one patient
        pseudonyms = pseudonymise([e.patient for e in entries], key)
        for e in entries:
            e.patient = pseudonyms[e.patient]
    matched = {r for path in videos for r in label_rows(path, by_key)}
    report_unmatched_labels(table, cols, matched, labels_path, dataset["unmatched_labels"])
    return sorted(entries, key=lambda e: e.video)


def report_unmatched_labels(table: pd.DataFrame, cols: dict, matched: set[int], labels_path, mode: str) -> list[int]:
    """Warn about (or, with dataset.unmatched_labels: error, refuse) label rows that match no video."""
    unmatched = [r for r in range(len(table)) if r not in matched]
    if not unmatched:
        return []
    names = [f"row {r + 2} ({table.at[r, cols['video']].strip()!r})" for r in unmatched]
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    message = (
        f"{labels_path}: {len(unmatched)} label row(s) match no video in dataset.video_dirs: {shown}. "
        "A name with a folder part must be the path relative to the labels file or to a video folder."
    )
    if mode == "error":
        raise DatasetError(message + " (set dataset.unmatched_labels: warn to go on without them)")
    log.warning("%s (ignored; set dataset.unmatched_labels: error to stop instead)", message)
    return unmatched


def rows_by_video(table: pd.DataFrame, cols: dict, bases=()) -> dict[str, list[int]]:
    """Label rows keyed by file name and by stem, so `a.mp4` matches `a.mp4` or `a`.

    A name with a folder part (`videos/a.mp4`) is keyed only by the full path it names relative
    to each of `bases` (the labels file's folder, the video folders): it matches that file and
    never another folder's file of the same name.
    """
    by_key: dict[str, list[int]] = {}
    for i, name in enumerate(table[cols["video"]]):
        name = name.strip()
        if "/" in name or "\\" in name:
            for base in bases:
                by_key.setdefault(_path_key(Path(base) / name.replace("\\", "/")), []).append(i)
            continue
        by_key.setdefault(name, []).append(i)
        if Path(name).suffix:
            by_key.setdefault(Path(name).stem, []).append(i)
    return by_key


def _path_key(path: Path) -> str:
    return "path:" + str(path.resolve())


def label_rows(path: Path, by_key: dict[str, list[int]]) -> list[int]:
    """The label rows of one video: by file name (or stem), or by its full path."""
    rows = by_key.get(path.name) or by_key.get(path.stem if path.is_file() else path.name) or []
    full = path.resolve()
    rows = rows + by_key.get(_path_key(full), [])
    if path.is_file():  # `videos/a` names videos/a.mp4 too
        rows = rows + by_key.get(_path_key(full.with_suffix("")), [])
    return sorted(set(rows))


def _dicom_facts(videos: list[Path], dataset: dict) -> dict[Path, DicomHeaderFacts]:
    """The header facts of each DICOM video (read once); patient_from: dicom needs DICOM files only."""
    facts = {}
    for p in videos:
        if is_dicom(p):
            try:
                facts[p] = header_facts(p)
            except DicomError as exc:
                raise DatasetError(str(exc)) from exc
        elif dataset["patient_from"] == "dicom":
            raise DatasetError(f"{p}: dataset.patient_from is 'dicom' but this video is not a DICOM file; "
                               "take the patient from a labels column (patient_from: column) instead")
    return facts


def make_entry(path: Path, table, by_key, dataset: dict, classes: list, labels_path,
               names: tuple[str, str] | None = None, facts: DicomHeaderFacts | None = None) -> VideoEntry:
    """One video's entry: patient and label ranges (empty ranges only with on_bad_video: skip);
    `names`: its (video id, recorded source), default its stem and path."""
    cols = dataset["label_columns"]
    has_ranges = cols["start"] in table.columns and cols["end"] in table.columns
    rows = label_rows(path, by_key)
    vid, source = names or (video_id(path), "")
    shown = source or path.name  # what messages call the video (never an identifying name)
    patient = _patient(path, table, rows, dataset, labels_path, facts, shown)
    entry = VideoEntry(vid, str(path), patient, source=source)
    for r in rows:
        where = f"{labels_path} row {r + 2} (video {shown})"
        score = table.at[r, cols["score"]]
        if score.strip() == "":
            raise DatasetError(f"{where}: empty score")
        idx = class_index(score, classes, where)
        start, end = 0, None
        if has_ranges and table.at[r, cols["start"]].strip() != "":
            start = _int(table.at[r, cols["start"]], where)
            end_s = table.at[r, cols["end"]].strip()
            end = _int(end_s, where) if end_s else None
            if end is not None and end < start:
                raise DatasetError(f"{where}: end frame {end} before start frame {start}")
        entry.ranges.append((start, end, idx))
        entry.findings.append(tuple(finding_value(table.at[r, column], f"{where} column '{column}'")
                                    for column in (dataset["findings"] or {}).values()))
    if not entry.ranges and dataset["on_bad_video"] == "error":
        if source:
            raise DatasetError(f"{source}: no label in {labels_path} (looked for its file or folder name)")
        raise DatasetError(f"{path}: no label in {labels_path} (looked for '{path.name}' or '{path.stem}')")
    _check_overlaps(entry, labels_path)
    return entry


def synthetic_entry(path: str | Path, dataset: dict, classes: list, labels_path: str) -> VideoEntry:
    """A generated video's entry: the synthetic labels table names its patient in a column."""
    return entry_for_file(path, dataset | {"patient_from": "column"}, classes, labels_path)


def entry_for_file(path: str | Path, dataset: dict, classes: list, labels_path: str) -> VideoEntry:
    table = read_labels(labels_path, dataset["label_columns"], classes, dataset["findings"])
    by_key = rows_by_video(table, dataset["label_columns"], [Path(labels_path).parent, Path(path).parent])
    return make_entry(Path(path), table, by_key, dataset, classes, labels_path)


def _patient(path: Path, table, rows, dataset, labels_path, facts: DicomHeaderFacts | None = None,
             shown: str = "") -> str:
    if dataset["patient_from"] == "dicom":
        if facts is None or not facts.patient_id:
            # the raw ids stay unnamed: a message is a written output too
            raise DatasetError(f"{shown or path}: no PatientID in its DICOM header (dataset.patient_from: dicom); "
                               "take the patient from a labels column (patient_from: column) instead")
        return facts.patient_id
    if dataset["patient_from"] == "column":
        col = dataset["label_columns"]["patient"]
        if col not in table.columns:
            raise DatasetError(f"{labels_path}: missing patient column '{col}' (dataset.label_columns.patient)")
        values = {table.at[r, col].strip() for r in rows} - {""}
        if len(values) != 1:
            what = "no patient" if not values else f"{len(values)} conflicting patients"
            if facts is None:
                what = "no patient" if not values else f"conflicting patients {sorted(values)}"
            raise DatasetError(f"{shown if facts is not None else path}: {what} in {labels_path}")
        return values.pop()
    match = re.search(dataset["patient_regex"], path.name)
    if not match or not match.groups() or not match.group(1):
        raise DatasetError(
            f"{shown if facts is not None else path}: cannot parse the patient from the file name with regex "
            f"{dataset['patient_regex']!r} (dataset.patient_regex)"
        )
    return match.group(1)


def _int(value: str, where: str) -> int:
    try:
        out = int(float(value))
    except ValueError as exc:
        raise DatasetError(f"{where}: frame number {value!r} is not an integer") from exc
    if out < 0:
        raise DatasetError(f"{where}: negative frame number {out}")
    return out


def _check_overlaps(entry: VideoEntry, labels_path) -> None:
    spans = sorted((s, float("inf") if e is None else e) for s, e, _ in entry.ranges)
    for (s1, e1), (s2, _) in zip(spans, spans[1:], strict=False):
        if s2 <= e1:
            raise DatasetError(f"{entry.path}: overlapping label ranges in {labels_path} ({s1}-{e1} and {s2}-...)")


def covering_ranges(ranges, frame_numbers) -> list[int | None]:
    """Position in `ranges` of the range covering each source frame number (None: no range)."""
    out = []
    for n in frame_numbers:
        found = None
        for i, (start, end, _) in enumerate(ranges):
            if n >= start and (end is None or n <= end):
                found = i
                break
        out.append(found)
    return out

