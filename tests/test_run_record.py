"""The run-time record: the jobs of an invocation are the benchmark files written after it
started; only an invocation that re-ran every benchmarked job replaces the full-run record."""

import json
import os

import pandas as pd

from lus_core.runs import markdown as S
from lus_core.runs.readme_blocks import block_text
from lus_core.runs.run_time import (
    FULL_RUN,
    LAST_RUN,
    benchmark_table,
    per_rule,
    read_full_run,
    record_run,
    run_time_line,
)


def _bench(root, rel, seconds, mtime):
    path = root / "benchmarks" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"s": [seconds], "cpu_time": [seconds / 2]}).to_csv(path, sep="\t", index=False)
    os.utime(path, (mtime, mtime))


def test_full_then_partial_run(tmp_path):
    t0 = 1_000_000.0
    _bench(tmp_path, "train/a/0.tsv", 30.0, t0 + 10)
    _bench(tmp_path, "train/a/all.tsv", 40.0, t0 + 50)
    _bench(tmp_path, "evaluate.tsv", 5.0, t0 + 60)
    full = record_run(tmp_path, started=t0, cores=2, finished=t0 + 70)
    assert full["full"] and full["jobs_run"] == 3 and full["wall_seconds"] == 70.0
    assert full["per_rule"]["train"] == {"jobs": 2, "s": 70.0, "cpu_s": 35.0}
    assert json.loads((tmp_path / FULL_RUN).read_text()) == full

    # a later invocation re-runs evaluate only: the last-run record changes, the full one stays
    _bench(tmp_path, "evaluate.tsv", 6.0, t0 + 1000)
    partial = record_run(tmp_path, started=t0 + 990, cores=2, finished=t0 + 1001)
    assert not partial["full"] and partial["jobs_run"] == 1 and partial["job_seconds"] == 6.0
    assert json.loads((tmp_path / LAST_RUN).read_text()) == partial
    assert read_full_run(tmp_path) == full
    assert "1 min 10 s" in run_time_line(tmp_path) and "train 70 s (2 jobs)" in run_time_line(tmp_path)

    # an invocation that ran nothing writes nothing
    assert record_run(tmp_path, started=t0 + 5000, cores=2) is None
    assert json.loads((tmp_path / LAST_RUN).read_text()) == partial


def test_per_rule_sums_against_pandas(tmp_path):
    for i, (rel, s) in enumerate([("a/1.tsv", 1.5), ("a/2.tsv", 2.5), ("b.tsv", 7.0)]):
        _bench(tmp_path, rel, s, 100.0 + i)
    jobs = benchmark_table(tmp_path)
    table = per_rule(jobs)
    assert list(table.index) == ["b", "a"] and table.loc["a", "jobs"] == 2 and table.loc["a", "s"] == 4.0
    assert len(benchmark_table(tmp_path, since=101.0)) == 2


def test_a_nested_runs_outer_folds_count_in_its_record(tmp_path):
    """The jobs of every outer fold (R/outer/{o}/benchmarks) and of every seed replica
    (R/seed/{i}/, R/outer/{o}/seed/{i}/) are the run's jobs too."""
    t0 = 1_000_000.0
    _bench(tmp_path, "train/a/all.tsv", 10.0, t0 + 1)
    _bench(tmp_path / "outer" / "0", "train/a/all.tsv", 20.0, t0 + 2)
    _bench(tmp_path / "outer" / "1", "evaluate.tsv", 3.0, t0 + 3)
    _bench(tmp_path / "seed" / "1", "train/a/all.tsv", 5.0, t0 + 4)
    _bench(tmp_path / "outer" / "0" / "seed" / "1", "train/a/all.tsv", 6.0, t0 + 5)
    jobs = benchmark_table(tmp_path)
    assert sorted(jobs.scope) == ["", "outer/0", "outer/0/seed/1", "outer/1", "seed/1"]
    record = record_run(tmp_path, started=t0, cores=2, finished=t0 + 10)
    assert record["full"] and record["jobs_run"] == 5 and record["per_rule"]["train"]["s"] == 41.0
    _bench(tmp_path / "outer" / "1", "evaluate.tsv", 4.0, t0 + 100)  # one outer fold's step again
    assert not record_run(tmp_path, started=t0 + 50, cores=2, finished=t0 + 110)["full"]


def test_without_a_full_run_the_line_says_so(tmp_path):
    assert "No run time is on record" in run_time_line(tmp_path)
    _bench(tmp_path, "x.tsv", 90.0, 10.0)
    assert "No full run is on record" in run_time_line(tmp_path) and "1.5 job-minutes" in run_time_line(tmp_path)


def test_readme_run_time_block_is_rewritten_beside_the_default_run_block(tmp_path, monkeypatch):
    t0 = 2_000_000.0
    _bench(tmp_path, "train.tsv", 100.0, t0 + 1)
    record_run(tmp_path, started=t0, cores=2, finished=t0 + 125)
    monkeypatch.setattr(S, "default_run_block", lambda run, **kw: "results\n")
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- BEGIN default-run (x) -->\nstale results\n<!-- END default-run -->\nb\n"
                      "<!-- BEGIN run-time (x) -->\nstale time\n<!-- END run-time -->\nc\n")
    S.write_readme_block(tmp_path, readme)
    text = readme.read_text()
    assert "stale" not in text and "results\n" in text and "**2 min 05 s**" in text
    assert block_text(text, S.RUN_TIME_BLOCK) == S.run_time_block(tmp_path)


def test_benchmark_files_the_workflow_no_longer_has_do_not_block_a_full_run(tmp_path):
    """An older layout's benchmark file (a job the workflow no longer has) stays in the folder:
    given the DAG's benchmark files, the record leaves it out and the rerun of every job is full."""
    t0 = 1_000_000.0
    _bench(tmp_path, "confidence/a/msp.tsv", 9.0, t0 - 50)  # the old one-job-per-method layout
    _bench(tmp_path, "confidence/a/fit.tsv", 2.0, t0 + 1)
    _bench(tmp_path / "outer" / "0", "train/a/heads.tsv", 3.0, t0 + 2)
    assert not record_run(tmp_path, started=t0, cores=2, finished=t0 + 5)["full"]
    dag = [tmp_path / "benchmarks" / "confidence" / "a" / "fit.tsv",
           tmp_path / "outer" / "0" / "benchmarks" / "train" / "a" / "heads.tsv"]
    record = record_run(tmp_path, started=t0, cores=2, finished=t0 + 5, workflow_benchmarks=dag)
    assert record["full"] and record["jobs_benchmarked"] == 2 and record["per_rule"]["confidence"]["s"] == 2.0
