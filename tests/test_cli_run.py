"""`lus run`: Snakemake's own options pass through wherever they stand, and a Ctrl-C or SIGTERM
stops the run the way Snakemake stops itself (jobs ended, lock released), so the next run goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workflow_helpers import REPO, lus

TINY = str(REPO / "configs" / "tiny.yaml")
LUS = str(Path(sys.executable).with_name("lus"))


def test_snakemake_options_pass_through_before_or_after_a_target(tmp_path, monkeypatch):
    import lus_core.cli

    passed = []
    monkeypatch.setattr(lus_core.cli, "run_until_stopped", lambda cmd: passed.append(cmd) or 0)
    for args, expected in ((["-n"], ["-n"]), (["--dry-run", "all"], ["--dry-run", "all"]), (["all", "-n"], ["all", "-n"]),
                           (["--", "-n"], ["-n"]), (["--forcerun", "evaluate", "-n"], ["--forcerun", "evaluate", "-n"])):
        assert lus("run", "--config", TINY, "--cores", "1", *args).returncode == 0
        cmd = passed.pop()
        assert cmd[cmd.index("--rerun-incomplete") + 1:] == expected, args
        assert cmd[cmd.index("--cores") + 1] == "1"
    res = lus("predict", "x.mp4", "--run", tmp_path, "-n")
    assert res.returncode == 2 and "unrecognized arguments: -n" in res.stderr  # only run passes options on
    monkeypatch.undo()
    # and Snakemake takes them: a dry run, nothing written
    assert lus("run", "--config", TINY, "--cores", "1", "-n", "--directory", tmp_path).returncode == 0
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_releases_its_lock_and_the_next_run_goes_on(tmp_path, signum):
    proc = subprocess.Popen([LUS, "run", "--config", TINY, "--cores", "1", "--directory", str(tmp_path)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not any((tmp_path / "results" / "tiny" / "frames").glob("*.h5")):  # jobs are running
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be stopped"
        time.sleep(0.2)
    os.kill(proc.pid, signum)  # lus alone, as `timeout`, `kill` or a scheduler sends it
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out
    assert not list((tmp_path / ".snakemake" / "locks").glob("*")), out
    # the next run goes on: no lock, and the interrupted jobs' outputs run again
    res = lus("run", "--config", TINY, "--cores", "1", "-n", "--directory", tmp_path)
    assert res.returncode == 0, res.stderr
