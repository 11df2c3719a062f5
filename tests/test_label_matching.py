"""Label rows are matched to videos exactly: unmatched rows are reported, folder parts are honoured."""

import logging

import pytest

from lus_core.config import validate_config
from lus_core.frames.labels import DatasetError, build_video_table


def _dataset(tmp_path, rows, **dataset):
    """Two video folders (build_video_table does not decode the videos)."""
    for folder, name in (("site1", "patient_A_x.mp4"), ("site2", "patient_B_y.mp4")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"not decoded here")
    labels = tmp_path / "labels.csv"
    labels.write_text("video,score\n" + "".join(f"{v},{s}\n" for v, s in rows))
    cfg = validate_config({"dataset": {"video_dirs": [str(tmp_path / "site1"), str(tmp_path / "site2")],
                                       "labels": str(labels), "on_bad_video": "skip", **dataset}})
    return cfg


def _scores(entries):
    return {e.path.split("/")[-2]: [r[2] for r in e.ranges] for e in entries}


def test_rows_matching_no_video_are_listed_in_a_warning(tmp_path, caplog):
    cfg = _dataset(tmp_path, [("site1/patient_A_x.mp4", 1), ("site2/patient_B_y", 2), ("patient_C_gone.mp4", 3)])
    with caplog.at_level(logging.WARNING, logger="lus_core.frames.labels"):
        entries = build_video_table(cfg["dataset"], cfg["classes"])
    assert _scores(entries) == {"site1": [1], "site2": [2]}
    assert "1 label row(s) match no video" in caplog.text and "row 4 ('patient_C_gone.mp4')" in caplog.text


def test_unmatched_rows_stop_the_run_when_configured(tmp_path):
    cfg = _dataset(tmp_path, [("site1/patient_A_x.mp4", 1), ("patient_B_y.mp4", 2), ("patient_C_gone.mp4", 3)],
                   unmatched_labels="error")
    with pytest.raises(DatasetError, match="labels.csv: 1 label row.*patient_C_gone"):
        build_video_table(cfg["dataset"], cfg["classes"])


def test_a_folder_part_is_never_dropped(tmp_path, caplog):
    # '../../elsewhere/patient_A_x.mp4' names another file: it must not label site1's patient_A_x.mp4,
    # nor may 'site1/patient_B_y.mp4' label site2's patient_B_y.mp4
    cfg = _dataset(tmp_path, [("../../elsewhere/patient_A_x.mp4", 3), ("site1/patient_B_y.mp4", 1)])
    with caplog.at_level(logging.WARNING, logger="lus_core.frames.labels"):
        entries = build_video_table(cfg["dataset"], cfg["classes"])
    assert _scores(entries) == {"site1": [], "site2": []}  # both stay unlabelled (skipped)
    assert "../../elsewhere/patient_A_x.mp4" in caplog.text and "site1/patient_B_y.mp4" in caplog.text
    cfg["dataset"]["unmatched_labels"] = "error"
    with pytest.raises(DatasetError, match="elsewhere"):
        build_video_table(cfg["dataset"], cfg["classes"])
