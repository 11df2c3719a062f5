"""Where a workflow run's time went: Snakemake's `benchmark:` files of a results folder, summed
per rule (job wall seconds and CPU seconds), optionally beside a second run (e.g. before/after a
change, measured in the same conditions).

    .venv/bin/python bench/run_time.py results/synthetic [results/synthetic-before]

Goal: the default run (config.yaml) fits five minutes on 2 cores, i.e. its job seconds sum to
at most 2 x 300 s.  On a shared machine the wall seconds grow with the load; CPU seconds less so.
"""

import json
import sys
from pathlib import Path

import pandas as pd

GOAL_JOB_SECONDS = 2 * 300


def per_rule(results: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        last = pd.read_csv(tsv, sep="\t").iloc[-1]
        rows.append({"rule": rule, "s": float(last["s"]), "cpu_s": float(last.get("cpu_time", float("nan")))})
    if not rows:
        raise SystemExit(f"{results}: no benchmark files under benchmarks/")
    df = pd.DataFrame(rows)
    return df.groupby("rule").agg(jobs=("s", "size"), s=("s", "sum"), cpu_s=("cpu_s", "sum")).sort_values("s", ascending=False)


def main(argv):
    runs = [Path(a) for a in argv[1:]]
    if not runs:
        raise SystemExit(__doc__)
    tables = [per_rule(r) for r in runs]
    joined = pd.concat(tables, axis=1, keys=[r.name for r in runs])
    print(joined.round(1).to_string())
    figures = {r.name: {"jobs": int(t["jobs"].sum()), "job_seconds": round(float(t["s"].sum()), 1),
                        "cpu_seconds": round(float(t["cpu_s"].sum()), 1)} for r, t in zip(runs, tables, strict=True)}
    first = figures[runs[0].name]
    print(json.dumps({"bench": "run_time", "runs": figures, "goal_job_seconds": GOAL_JOB_SECONDS,
                      "met": first["job_seconds"] <= GOAL_JOB_SECONDS}))


if __name__ == "__main__":
    main(sys.argv)
