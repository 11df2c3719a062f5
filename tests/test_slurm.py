"""The workflow on a real SLURM cluster: every job goes through sbatch, and the results are the
results of a local run.

Needs a cluster that answers `sinfo` (CI starts one with `.ci/slurm_up.sh`); skipped otherwise,
unless LUS_SLURM=1 forces it (then a missing cluster is a failure). It runs `configs/tiny.yaml`
with its end-to-end backbone (scratch) through `--workflow-profile profiles/slurm-ci` (or the
profile named by LUS_SLURM_PROFILE) in a temporary results folder, and compares it with the
session's local run of the same config (tests/conftest.py).

How "every job went through sbatch" is checked, from three independent records:
1. Snakemake's own log of the run: every job it announced is a `rule` job (the target `all` is
   the only `localrule`), and every such job has a "submitted with SLURM jobid" line.
2. SLURM's controller: `squeue --states=all --name=<run id>` lists each SLURM job of the run
   (the plugin names every job after the run's uuid and puts rule and wildcards into the
   comment), each COMPLETED, and no other; where the controller has already forgotten finished
   jobs (MinJobAge, 3600 s on the CI cluster), the job-completion log of slurmctld
   (JobCompType=jobcomp/filetxt, written by slurm_up.sh) or `sacct` give the same record.
3. The job's output file, which slurmstepd writes on the node (`--slurm-logdir`, kept with
   `slurm-keep-successful-logs`), holds the job-step Snakemake's log of that rule.

Results: split.json (test patients and folds) must be identical, and every array of
predictions/{backbone}.h5 equal (labels, splits, folds) or np.allclose (logits, softmax,
embeddings). This holds on the CPU-only CI cluster: both runs train with the same seeds and
thread counts. On a GPU cluster (a profile that requests GPUs) cuDNN kernels are not bitwise
reproducible and differ from CPU kernels, so the float arrays are not expected to match there;
set LUS_SLURM_COMPARE=0 to check only the job records and the split in that case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/tiny.yaml"
PROFILE = os.environ.get("LUS_SLURM_PROFILE", "profiles/slurm-ci")
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# the SLURM run and the checks: a limit that a loaded 2-core machine still meets
SLURM_TIMEOUT = 900


def _cluster_answers() -> bool:
    if os.environ.get("LUS_SLURM") == "1":
        return True
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not _cluster_answers(),
        reason="no SLURM cluster answers `sinfo` (start one with .ci/slurm_up.sh, or set LUS_SLURM=1)",
    ),
]


# ----------------------------------------------------------------------------- log parsing


def parse_snakemake_log(text: str) -> dict:
    """Jobs announced by the main Snakemake process and their SLURM submissions.

    Returns {"run_id": str | None, "jobs": {jobid: (rule, is_local)},
    "submitted": {jobid: (slurm_jobid, slurm_log_path)}}.
    """
    run_id = None
    jobs: dict[int, tuple[str, bool]] = {}
    submitted: dict[int, tuple[str, str]] = {}
    current: tuple[str, bool] | None = None
    for line in text.splitlines():
        m = re.match(r"SLURM run ID: (\S+)", line)
        if m:
            run_id = m.group(1)
            continue
        m = re.match(r"^(localrule|rule) (\S+):\s*$", line)
        if m:
            current = (m.group(2), m.group(1) == "localrule")
            continue
        m = re.match(r"^\s+jobid: (\d+)\s*$", line)
        if m and current is not None:
            jobs[int(m.group(1))] = current
            current = None
            continue
        m = re.search(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.", line)
        if m:
            submitted[int(m.group(1))] = (m.group(2), m.group(3))
    return {"run_id": run_id, "jobs": jobs, "submitted": submitted}


def _run(cmd: list[str], timeout: int = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def squeue_records(run_id: str) -> dict[str, dict]:
    """The controller's table of the run's jobs: {slurm_jobid: {state, comment}}."""
    p = _run(["squeue", "--states=all", f"--name={run_id}", "--noheader", "--format=%i|%T|%k"])
    if p.returncode != 0:
        return {}
    out = {}
    for line in p.stdout.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3 and parts[0]:
            out[parts[0]] = {"state": parts[1], "comment": parts[2], "source": "squeue"}
    return out


def jobcomp_records(run_id: str) -> dict[str, dict]:
    """slurmctld's job-completion log (JobCompType=jobcomp/filetxt), when there is one."""
    p = _run(["scontrol", "show", "config"])
    if p.returncode != 0 or "jobcomp/filetxt" not in p.stdout:
        return {}
    m = re.search(r"^JobCompLoc\s*=\s*(\S+)", p.stdout, re.M)
    if not m or not Path(m.group(1)).is_file():
        return {}
    out = {}
    for line in Path(m.group(1)).read_text(errors="replace").splitlines():
        f = dict(re.findall(r"(\w+)=(\S*)", line))
        if f.get("Name") == run_id and "JobId" in f:
            out[f["JobId"]] = {"state": f.get("JobState", ""), "comment": None, "source": "jobcomp"}
    return out


def sacct_records(run_id: str) -> dict[str, dict]:
    if shutil.which("sacct") is None:
        return {}
    p = _run(["sacct", "-X", "--parsable2", "--noheader", f"--name={run_id}", "--format=JobIDRaw,State"])
    if p.returncode != 0:
        return {}
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 2 and parts[0]:
            out[parts[0]] = {"state": parts[1].split()[0], "comment": None, "source": "sacct"}
    return out


# ----------------------------------------------------------------------------- comparison


def compare_results(slurm: Path, local: Path, backbones: list[str], compare_floats: bool = True) -> None:
    import h5py

    s_split = json.loads((slurm / "split.json").read_text())
    l_split = json.loads((local / "split.json").read_text())
    assert s_split["test_patients"] == l_split["test_patients"]
    assert s_split["train_patients"] == l_split["train_patients"]
    assert [f["val_patients"] for f in s_split["folds"]] == [f["val_patients"] for f in l_split["folds"]]
    for backbone in backbones:
        with (
            h5py.File(slurm / "predictions" / f"{backbone}.h5", "r") as s,
            h5py.File(local / "predictions" / f"{backbone}.h5", "r") as loc,
        ):
            assert set(s.keys()) == set(loc.keys()), backbone
            for name in s.keys():
                a, b = s[name][()], loc[name][()]
                assert a.shape == b.shape, (backbone, name)
                if a.dtype.kind in "fc":
                    if compare_floats:
                        assert np.allclose(a, b, rtol=1e-4, atol=1e-5), (
                            f"{backbone}/{name}: max |diff| {np.max(np.abs(a - b))}"
                        )
                else:
                    assert np.array_equal(a, b), (backbone, name)


# ----------------------------------------------------------------------------- the test


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def test_tiny_workflow_runs_through_sbatch_and_matches_local(request, tmp_path):
    # the tiny config's end-to-end backbone with two confidence methods and two spaces: every step of
    # the workflow, fewer jobs than the whole tiny config
    overlay = tmp_path / "one_backbone.yaml"
    overlay.write_text("train: {backbones: [scratch]}\nconfidence: {methods: [msp, conformal]}\n"
                       "similarity: {spaces: [raw, tsne]}\n")
    backbones = ["scratch"]
    workdir, slurm_res, slurm_logs = tmp_path / "wd", tmp_path / "slurm", tmp_path / "slurm_logs"
    workdir.mkdir()
    started = time.monotonic()
    slurm_cmd = [
        "timeout", "-k", "10", str(SLURM_TIMEOUT), *SNAKEMAKE, "--workflow-profile", PROFILE,
        "--executor", "slurm", "--configfile", CONFIG, str(overlay), "--config", f"results={slurm_res}",
        "--directory", str(workdir), "--slurm-logdir", str(slurm_logs), "--slurm-keep-successful-logs",
    ]  # fmt: skip
    run_id = None
    try:
        p = subprocess.run(slurm_cmd, cwd=ROOT, capture_output=True, text=True)
        log = p.stdout + p.stderr
        parsed = parse_snakemake_log(log)
        run_id = parsed["run_id"]
        assert p.returncode == 0, f"SLURM run failed (rc {p.returncode}):\n{_tail(log)}"
    finally:
        if run_id and shutil.which("scancel"):  # nothing of a failed run keeps running
            subprocess.run(["scancel", f"--name={run_id}"], capture_output=True, timeout=30)
    slurm_seconds = time.monotonic() - started

    # 1. Snakemake's view: all jobs but the target were submitted with sbatch
    assert run_id, "no 'SLURM run ID' in the log: was the slurm executor used?"
    jobs, submitted = parsed["jobs"], parsed["submitted"]
    local_rules = {rule for rule, is_local in jobs.values() if is_local}
    assert local_rules <= {"all"}, f"jobs that ran outside SLURM: {sorted(local_rules)}"
    remote = {jid: rule for jid, (rule, is_local) in jobs.items() if not is_local}
    assert len(remote) >= 10, f"too few jobs for the tiny workflow: {remote}"
    assert set(submitted) == set(remote), (
        f"announced but not submitted: {sorted(set(remote) - set(submitted))}; "
        f"submitted but not announced: {sorted(set(submitted) - set(remote))}"
    )
    slurm_ids = {sid for sid, _ in submitted.values()}
    assert len(slurm_ids) == len(submitted), "two Snakemake jobs share one SLURM job"
    # the run's time is recorded through the cluster executor too (it has no --cores)
    record = json.loads((slurm_res / "logs" / "full_run.json").read_text())
    assert record["full"] and record["cores"] is None and record["jobs_run"] >= 10

    # 2. SLURM's view: the controller (or its completion log, or sacct) ran exactly these jobs
    records = squeue_records(run_id)
    for extra in (jobcomp_records(run_id), sacct_records(run_id)):
        for sid, rec in extra.items():
            records.setdefault(sid, rec)
    assert records, f"SLURM has no record of run {run_id} (squeue, jobcomp log and sacct are empty)"
    assert set(records) == slurm_ids, f"SLURM ran {sorted(records)}, Snakemake submitted {sorted(slurm_ids)}"
    for jid, (sid, logfile) in submitted.items():
        rec = records[sid]
        assert rec["state"] == "COMPLETED", (remote[jid], sid, rec)
        if rec["comment"] is not None:  # "rule_<rule>" or "rule_<rule>_wildcards_<values>"
            assert re.fullmatch(rf"rule_{remote[jid]}(_wildcards_.*)?", rec["comment"]), (
                remote[jid],
                sid,
                rec,
            )
        # 3. the job's output, written by slurmstepd, is the job-step Snakemake running that rule
        path = Path(logfile)
        assert path.is_file(), f"no SLURM output file {path} for {remote[jid]}"
        assert slurm_logs in path.parents
        assert f"rule {remote[jid]}:" in path.read_text(errors="replace"), path

    assert (slurm_res / "report" / "index.html").is_file()

    # a second run with nothing changed submits nothing
    p = subprocess.run(
        [*SNAKEMAKE, "--workflow-profile", PROFILE, "--executor", "slurm", "-n", "--configfile", CONFIG,
         str(overlay), "--config", f"results={slurm_res}", "--directory", str(workdir)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0 and "Nothing to be done" in p.stdout + p.stderr, _tail(p.stdout + p.stderr)

    # the local reference is the session's finished tiny run (tests/conftest.py), asked for only now so
    # that it is built meanwhile: the same split and the same scratch models, on this machine's CPU
    local_res = request.getfixturevalue("tiny_run").results
    compare_results(slurm_res, local_res, backbones, os.environ.get("LUS_SLURM_COMPARE", "1") != "0")
    print(f"SLURM run: {slurm_seconds:.0f} s, {len(submitted)} sbatch jobs")
