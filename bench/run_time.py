"""Where a workflow run's time went: Snakemake's `benchmark:` files of a results folder, summed
per rule (job wall seconds and CPU seconds), optionally beside a second run (e.g. before/after a
change, measured in the same conditions), and the wall time of the folder's last full run
(`logs/full_run.json`, written by the workflow itself).

    .venv/bin/python bench/run_time.py results/synthetic [results/synthetic-before]

Goal: the default run (config.yaml) fits five minutes of wall time on 2 cores, from the first
job to the report.  On a shared machine the wall seconds grow with the load; CPU seconds less so.
"""

import sys
from pathlib import Path

import pandas as pd

from lus_core.runs.bench_records import record
from lus_core.runs.run_time import benchmark_table, per_rule, read_full_run

GOAL_WALL_SECONDS = 300


def main(argv):
    runs = [Path(a) for a in argv[1:]]
    if not runs:
        raise SystemExit(__doc__)
    tables = [per_rule(benchmark_table(r)) for r in runs]
    joined = pd.concat(tables, axis=1, keys=[r.name for r in runs])
    print(joined.round(1).to_string())
    figures = {}
    for r, t in zip(runs, tables, strict=True):
        full = read_full_run(r) or {}
        figures[r.name] = {"jobs": int(t["jobs"].sum()), "job_seconds": round(float(t["s"].sum()), 1),
                           "cpu_seconds": round(float(t["cpu_s"].sum()), 1),
                           "full_run_wall_seconds": full.get("wall_seconds"), "full_run_cores": full.get("cores")}
    wall = figures[runs[0].name]["full_run_wall_seconds"]
    record({"bench": "run_time", "runs": figures, "goal_wall_seconds": GOAL_WALL_SECONDS,
                      "met": wall is not None and wall <= GOAL_WALL_SECONDS})


if __name__ == "__main__":
    main(sys.argv)
