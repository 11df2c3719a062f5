"""The model seeds of a single-split run (split.outer_folds 1, several train.seeds): every seed's
replica chose the same configuration and video score (on the mean of the seeds' validation
scores) and scored the same test patients with its own models; the report shows each seed's test
scores and their spread, beside the first seed's patient intervals. (A nested run shows its seeds
in the nested estimate: lus_core.evaluation.nested.seed_table.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lus_core.evaluation.answer_level import METRIC_NAMES
from lus_core.report.markup import fmt, fmt_ci, table


def _metrics(summary: Mapping) -> list[str]:
    return ["accuracy", "balanced_accuracy"] if summary.get("class_order") == "nominal" else ["accuracy", "qwk"]


def seed_rows(seeds: Sequence[int], summaries: Sequence[Mapping]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): each seed's test scores of the selected configuration (and of the video
    answer, when there is one), then their mean and sd over the seeds."""
    first = summaries[0]
    metrics = _metrics(first)
    video = bool(first.get("video_answer"))
    header = ["model seed", *(f"frame {METRIC_NAMES[m]}" for m in metrics),
              *((f"video {METRIC_NAMES[m]}" for m in metrics) if video else ())]
    rows, values = [], []
    for seed, s in zip(seeds, summaries, strict=True):
        test = (s.get("selected") or {}).get("test") or {}
        vtest = (s.get("video_answer") or {}).get("test") or {}
        cells = [test.get(m) or {} for m in metrics] + ([vtest.get(m) or {} for m in metrics] if video else [])
        rows.append([str(seed), *(fmt_ci(c.get("estimate"), c.get("lo"), c.get("hi")) for c in cells)])
        values.append([np.nan if c.get("estimate") is None else float(c["estimate"]) for c in cells])
    arr = np.array(values, np.float64)
    rows.append([f"mean over {len(seeds)} seeds", *(fmt(v, 3) for v in arr.mean(axis=0))])
    rows.append([f"sd over {len(seeds)} seeds", *(fmt(v, 3) for v in arr.std(axis=0, ddof=1))])
    return header, rows


def section_seed_replicas(seeds: Sequence[int], summaries: Sequence[Mapping]) -> str:
    if len(summaries) < 2:
        return ""
    header, rows = seed_rows(seeds, summaries)
    chosen = {(s.get("selected") or {}).get("config_id") for s in summaries}
    same = "the same configuration" if len(chosen) == 1 else f"{len(chosen)} different configurations (?)"
    return ("<h2>The model seeds</h2><p>Every model was trained once per seed (train.seeds); the choice was made on "
            f"the mean of the seeds' validation scores, so every seed used {same}. Each seed's test scores, with "
            "intervals over the test patients, and their spread: what re-seeding the procedure moves the answer by. "
            "The first seed's models are the deployed ones.</p>" + table(header, rows))
