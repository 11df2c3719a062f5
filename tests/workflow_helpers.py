"""Run the real Snakefile from tests and read its dry-run plan."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(*args: str, timeout: int = 900, workdir: Path | None = None) -> subprocess.CompletedProcess:
    """Run the project's Snakefile from the repository; the working directory (Snakemake's own
    state, and where relative results folders live) is `workdir`, or the `--directory` in `args`.
    Tests never use the repository itself as a working directory."""
    if workdir is None and "--directory" not in args:
        raise ValueError("give the run a working directory of its own (workdir= or --directory in args)")
    where = ("--directory", str(workdir)) if workdir is not None else ()
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), *where, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def run_ok(*args: str, timeout: int = 900, workdir: Path | None = None) -> subprocess.CompletedProcess:
    proc = snakemake(*args, timeout=timeout, workdir=workdir)
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def planned_jobs(*args: str, workdir: Path | None = None) -> dict[str, int]:
    """Rule -> number of jobs a dry run would execute (empty when nothing is to be done); the jobs
    of the per-video steps (extract_frames_N, embed_N) count under extract_frames and embed."""
    proc = run_ok("-n", *args, timeout=300, workdir=workdir)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:", 1)[1]
    jobs = {}
    for line in stats.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            # the per-video steps are rules in a loop (extract_frames_0, embed_3, ...): counted together
            rule = re.sub(r"^(extract_frames|embed)_\d+$", r"\1", m.group(1))
            jobs[rule] = jobs.get(rule, 0) + int(m.group(2))
    return jobs


def planned_job_settings(*args: str, workdir: Path | None = None) -> list[tuple[str, int, dict[str, str]]]:
    """(rule, threads, resources) of every job a dry run plans, as its job listing prints them
    (Snakemake omits the threads line of a one-thread job)."""
    proc = run_ok("-n", *args, timeout=300, workdir=workdir)
    jobs = []
    for block in re.split(r"^rule ", proc.stdout + proc.stderr, flags=re.M)[1:]:
        name = block.split(":", 1)[0]
        threads = re.search(r"^\s+threads: (\d+)$", block, flags=re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        pairs = [item.split("=", 1) for item in resources.group(1).split(", ")] if resources else []
        jobs.append((name, int(threads.group(1)) if threads else 1, dict(pairs)))
    return jobs


def lus(*args) -> subprocess.CompletedProcess:
    """`lus ARGS` in this process (the command line's `main`, without starting an interpreter and
    torch again): its exit status, standard output and standard error, as subprocess.run gives them."""
    from lus_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own exits (bad arguments)
            code = exc.code
    return subprocess.CompletedProcess(["lus", *map(str, args)], code, out.getvalue(), err.getvalue())
