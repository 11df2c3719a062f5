"""Skipped videos reach summary.json, the report and the end-of-run message."""

from test_evaluation import (  # tests/ is on sys.path under pytest's default import mode
    build_results,
    report_config,
)

from lus_core.evaluation.step import run_evaluate
from lus_core.frames.skipped import format_skipped, read_skipped, write_skipped
from lus_core.io_utils import read_json
from lus_core.report import html as R

SKIPPED = [
    {"video": "patient_X_corrupt", "source_path": "/data/patient_X_corrupt.mp4", "reason": "cannot decode"},
    {"video": "patient_X_unlabelled", "source_path": "/data/patient_X_unlabelled.mp4", "reason": "no label"},
]


def test_summary_and_report_list_the_skipped_videos(tmp_path):
    args = build_results(tmp_path, n_patients=6, frames_per_video=5, n_boot=20)
    # skipped_videos.csv sits beside frame_index.csv, as frame_index writes them
    write_skipped(SKIPPED, tmp_path / "skipped_videos.csv")
    run_evaluate(**args, figures=False)
    summary = read_json(args["out_summary_json"])
    assert summary["skipped_videos"]["count"] == 2
    assert [v["reason"] for v in summary["skipped_videos"]["videos"]] == ["cannot decode", "no label"]
    out = tmp_path / "report.html"
    R.run_report(tmp_path / "eval", args["split_json"], report_config(args), out)
    page = out.read_text()
    assert "Skipped videos (2)" in page and "patient_X_unlabelled" in page and "cannot decode" in page


def test_end_of_run_message(tmp_path):
    assert format_skipped(read_skipped(tmp_path)) == ""  # before the index exists
    write_skipped(SKIPPED, tmp_path / "skipped_videos.csv")
    message = format_skipped(read_skipped(tmp_path), tmp_path)
    assert message.startswith("2 video(s) were SKIPPED")
    assert "/data/patient_X_corrupt.mp4: cannot decode" in message
