"""How long a workflow run took, from its own files: the one reader and writer of
`logs/last_run.json` and `logs/full_run.json`, and the per-rule sums of Snakemake's `benchmark:`
files.

Snakemake writes one benchmark file per job when the job ends, so the jobs of an invocation are
the benchmark files modified after it started. An invocation that re-ran every benchmarked job
of the results folder is a *full* run; its record is kept apart so that a later partial rerun
(one changed step) does not replace the figure a newcomer waits for.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from lus_core.io_utils import read_json, write_json

LAST_RUN = "logs/last_run.json"
FULL_RUN = "logs/full_run.json"


def benchmark_roots(results_dir: str | Path) -> list[Path]:
    """The benchmark folders of a run: the root scope's, each outer fold's (a nested run) and each
    seed replica's (train.seeds: `seed/{i}/` below either)."""
    root = Path(results_dir)
    return [root / "benchmarks", *sorted(root.glob("seed/*/benchmarks")), *sorted(root.glob("outer/*/benchmarks")),
            *sorted(root.glob("outer/*/seed/*/benchmarks"))]


def _benchmark_files(results_dir: str | Path):
    for bench in benchmark_roots(results_dir):
        for tsv in sorted(bench.rglob("*.tsv")):
            yield bench, tsv


def benchmark_table(results_dir: str | Path, since: float | None = None) -> pd.DataFrame:
    """One row per benchmarked job (rule, file, scope, wall s, CPU s, file mtime); `since` keeps
    the jobs whose benchmark file was written at or after that time (seconds since the epoch).
    `file` is relative to its scope's benchmarks folder; `scope` is "" or the scope's folder
    (`outer/2`, `seed/1`, `outer/2/seed/1`)."""
    root = Path(results_dir)
    rows = []
    for bench, tsv in _benchmark_files(results_dir):
        mtime = tsv.stat().st_mtime
        if since is not None and mtime < since:
            continue
        last = pd.read_csv(tsv, sep="\t").iloc[-1]
        scope = "" if bench.parent == root else bench.parent.relative_to(root).as_posix()
        rows.append({"rule": tsv.relative_to(bench).parts[0].removesuffix(".tsv"), "file": str(tsv.relative_to(bench)),
                     "scope": scope, "s": float(last["s"]), "cpu_s": float(last.get("cpu_time", float("nan"))),
                     "mtime": mtime, "path": str(tsv)})
    return pd.DataFrame(rows, columns=["rule", "file", "scope", "s", "cpu_s", "mtime", "path"])


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs, wall seconds and CPU seconds summed per rule, largest first."""
    return (jobs.groupby("rule").agg(jobs=("s", "size"), s=("s", "sum"), cpu_s=("cpu_s", "sum"))
            .sort_values("s", ascending=False))


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def record_run(results_dir: str | Path, started: float, cores: int | None, finished: float | None = None,
               workflow_benchmarks: Iterable[str | Path] | None = None) -> dict | None:
    """Write the record of an invocation that started at `started` (nothing when it ran no
    benchmarked job); also the full-run record when it re-ran every benchmarked job.
    `workflow_benchmarks`: the benchmark files of the workflow's jobs (the Snakefile passes its
    DAG's): files of jobs the workflow no longer has (an older layout's, a seed replica's after
    `train.seeds` was cut back) then neither count nor keep a run from being full."""
    finished = time.time() if finished is None else finished
    # a no-op rerun ran no job: say so from the files' times, without reading them
    if not any(tsv.stat().st_mtime >= started for _, tsv in _benchmark_files(results_dir)):
        return None
    everything = benchmark_table(results_dir)
    if workflow_benchmarks is not None:
        known = {Path(p).resolve() for p in workflow_benchmarks}
        everything = everything[[Path(p).resolve() in known for p in everything["path"]]]
    ran = everything[everything["mtime"] >= started]
    if ran.empty:
        return None
    rules = per_rule(ran)
    record = {
        "started_utc": _utc(started),
        "finished_utc": _utc(finished),
        "wall_seconds": round(finished - started, 1),
        "cores": cores,
        "machine_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "jobs_run": len(ran),
        "jobs_benchmarked": len(everything),
        "full": len(ran) == len(everything),
        "job_seconds": round(float(ran["s"].sum()), 1),
        "per_rule": {rule: {"jobs": int(r.jobs), "s": round(float(r.s), 1), "cpu_s": round(float(r.cpu_s), 1)}
                     for rule, r in rules.iterrows()},
    }
    root = Path(results_dir)
    write_json(root / LAST_RUN, record)
    if record["full"]:
        write_json(root / FULL_RUN, record)
    return record


def read_full_run(results_dir: str | Path) -> dict | None:
    """The record of the results folder's last full run (None before one finished)."""
    path = Path(results_dir) / FULL_RUN
    return read_json(path) if path.exists() else None


def run_time_line(results_dir: str | Path) -> str:
    """One sentence on how long the results folder took: its last full run's wall time and where
    it went (three largest rules), or, with no full run on record, the sum of its jobs' times."""
    record = read_full_run(results_dir)
    if record is None:
        jobs = benchmark_table(results_dir)
        if jobs.empty:
            return "No run time is on record (no `logs/full_run.json`, no benchmark files)."
        return (f"No full run is on record (`logs/full_run.json`: the folder was built in several invocations); "
                f"its {len(jobs)} benchmarked jobs took {jobs['s'].sum() / 60:.1f} job-minutes in all.")
    minutes, seconds = divmod(round(record["wall_seconds"]), 60)
    top = sorted(record["per_rule"].items(), key=lambda kv: -kv[1]["s"])[:3]
    where = ", ".join(f"{rule} {v['s']:.0f} s ({v['jobs']} jobs)" for rule, v in top)
    where_run = f"on {record['cores']} cores" if record.get("cores") else "through a cluster executor"
    return (f"The last full run of this results folder took **{minutes} min {seconds:02d} s** of wall time {where_run} "
            f"({record['jobs_run']} benchmarked jobs, {record['job_seconds']:.0f} "
            f"job-seconds; most in {where}), finished {record['finished_utc']} (`logs/full_run.json`).")
