"""Videos skipped with `dataset.on_bad_video: skip`: the one reader and writer of skipped_videos.csv,
and how they are shown (end of the run, report section, summary.json)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lus_core.io_utils import atomic_path

SKIPPED_CSV = "skipped_videos.csv"
COLUMNS = ["video", "source_path", "reason"]


def write_skipped(rows: list[dict], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)


def read_skipped(results_dir: str | Path) -> list[dict]:
    """The skipped videos of a run ([] when none, or before the frame index exists)."""
    path = Path(results_dir) / SKIPPED_CSV
    if not path.exists():
        return []
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return table[COLUMNS].to_dict("records")


def skipped_summary(results_dir: str | Path) -> dict:
    """What summary.json records: how many videos were skipped, and which, with the reason."""
    rows = read_skipped(results_dir)
    return {"count": len(rows), "videos": [{"video": r["video"], "reason": r["reason"]} for r in rows]}


def format_skipped(rows: list[dict], results_dir: str | Path = "") -> str:
    """The end-of-run message ("" when nothing was skipped)."""
    if not rows:
        return ""
    where = Path(results_dir) / SKIPPED_CSV if results_dir else SKIPPED_CSV
    lines = [f"{len(rows)} video(s) were SKIPPED (dataset.on_bad_video: skip) and are not in any result; see {where}:"]
    lines += [f"  - {r['source_path'] or r['video']}: {r['reason']}" for r in rows]
    return "\n".join(lines)
