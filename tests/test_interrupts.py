"""Killed jobs: training resumes from its checkpoint, extraction leaves nothing half-written, a
`lus predict` stopped by SIGTERM leaves no partial folder."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from tests.workflow_helpers import REPO, SNAKEMAKE, run_ok

pytestmark = pytest.mark.slow


TINY = str(REPO / "configs" / "tiny.yaml")


def _start(results: Path, *targets: str, extra: Path | None = None) -> subprocess.Popen:
    # its own working directory: the lock a killed Snakemake leaves must not block other runs
    configs = [TINY] + ([str(extra)] if extra else [])
    cmd = [SNAKEMAKE, *targets, "--snakefile", str(REPO / "Snakefile"), "--directory", str(results.parent),
           "--cores", "2", "--configfile", *configs, "--config", f"results={results}"]
    return subprocess.Popen(cmd, cwd=results.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _rerun(results: Path, target: str, *configs: str) -> None:
    # what a user does after a crash: unlock, then rerun what was incomplete
    run_ok("--unlock", "--configfile", TINY, *configs, "--config", f"results={results}", workdir=results.parent)
    run_ok(target, "--cores", "2", "--rerun-incomplete", "--configfile", TINY, *configs,
           "--config", f"results={results}", workdir=results.parent)


def _wait_until(proc: subprocess.Popen, ready, timeout: float, poll: float = 0.2) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be stopped"
        assert time.time() < deadline, "timed out waiting to stop it"
        time.sleep(poll)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    _wait_until(proc, ready, timeout)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole tree, as an OOM killer or a pulled plug would
    proc.wait()


def _terminate_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGTERM, as `timeout`, `kill` and SLURM send it, once ``ready()``; then wait for the end."""
    _wait_until(proc, ready, timeout, poll=0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    results = tmp_path / "run"
    longer = tmp_path / "longer.yaml"
    longer.write_text("train: {epochs: 4, patience: 4}\n")
    model = results / "models" / "scratch" / "0.pt"
    proc = _start(results, str(model), extra=longer)
    checkpoint = results / "checkpoints" / "scratch" / "0" / "last.pt"
    _kill_when(proc, checkpoint.exists)
    assert not model.exists()
    _rerun(results, str(model), str(longer))
    log = (results / "logs" / "train" / "scratch" / "0.log").read_text()
    assert "resumed from" in log
    assert model.exists() and not checkpoint.exists()  # checkpoints are removed after success


def test_killed_extraction_leaves_no_half_written_store(tmp_path):
    results = tmp_path / "run"
    index = results / "frame_index.csv"
    proc = _start(results, str(index))
    frames = results / "frames"
    _kill_when(proc, lambda: frames.exists() and len(list(frames.glob("*.h5"))) >= 2)
    for path in frames.glob("*.h5"):  # every file under its final name is complete
        with h5py.File(path) as f:
            assert len(f["frames"]) == len(f["label"]) > 0
    _rerun(results, str(index))
    assert index.exists()


def test_sigterm_mid_predict_leaves_no_partial_folder(tiny_run, tmp_path):
    """`timeout -s TERM`, `kill` and SLURM stop `lus predict` with SIGTERM: once scoring is under
    way (its staging folder exists), it ends with a non-zero status and leaves neither the staging
    folder nor an output folder."""
    videos = tmp_path / "many"
    videos.mkdir()
    for copy in range(20):  # long enough to be stopped mid-run (about 20 videos a second)
        for src in (tiny_run.results / "synthetic" / "videos").glob("*.mp4"):
            (videos / f"{src.stem}_{copy}.mp4").symlink_to(src)
    out = tmp_path / "out" / "x"
    with open(tmp_path / "predict.log", "w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("lus")), "predict", str(videos), "--run",
                                 str(tiny_run.results), "--out", str(out), "--config-name", "scratch · CNN alone",
                                 "--no-galleries"], stdout=log, stderr=log)
    try:
        _terminate_when(proc, lambda: any(out.parent.glob(".x.*.partial")))
    finally:
        proc.kill()
        proc.wait()
    assert not list(out.parent.glob(".x.*")) and not out.exists()
    assert proc.returncode == 128 + signal.SIGTERM  # non-zero: the shell's status of a terminated process
