"""The finished tiny run every end-to-end test shares (one workflow run per test session, also
across pytest-xdist workers), and the order the tests start in.

`configs/tiny.yaml` runs once, in a working directory of its own (its `.snakemake` state beside
its results, never in the source tree) with a results folder given relative to that directory:
a copy of the whole directory (`TinyRun.copy`) is then a finished run with its provenance, so a
test that changes a run works on a copy and the others read the original unchanged.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import settings

from tests.workflow_helpers import run_ok

# no example database in the source tree (.hypothesis/): every run draws its examples afresh
settings.register_profile("lus", database=None)
settings.load_profile("lus")

TINY = "configs/tiny.yaml"
# started first: the SLURM run waits on its cluster most of its time, so it overlaps the others
FIRST = ("test_slurm.py",)


class TinyRun(NamedTuple):
    """A finished run of `configs/tiny.yaml`: its results folder and the snakemake arguments that
    address it (config, results folder, working directory)."""

    results: Path
    args: tuple

    @property
    def workdir(self) -> Path:
        return self.results.parent

    @staticmethod
    def arguments(workdir: Path, *configfiles: str) -> tuple:
        return ("--configfile", TINY, *configfiles, "--config", "results=results", "--directory", str(workdir))

    def with_configs(self, *configfiles: str) -> tuple:
        """The arguments with more config files laid over the tiny config."""
        return self.arguments(self.workdir, *configfiles)

    def copy(self, dest: Path) -> TinyRun:
        """An independent copy of the finished run (results and Snakemake's records, times kept)."""
        shutil.copytree(self.workdir, dest, symlinks=True)
        return TinyRun(dest / "results", self.arguments(dest))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    # under pytest-xdist every worker has its own base folder below a shared one: the first
    # worker to get here runs the workflow, the others wait for it and read the same run
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    workdir = shared / "tiny_run"
    run = TinyRun(workdir / "results", TinyRun.arguments(workdir))
    with open(shared / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        failed = shared / "tiny_run.failed"
        if failed.exists():
            pytest.fail(f"the shared tiny run failed in another worker:\n{failed.read_text()[-3000:]}")
        if not (run.results / "manifest.json").exists():
            workdir.mkdir(exist_ok=True)
            try:
                run_ok("--cores", "2", *run.args, timeout=1500)
            except AssertionError as exc:
                failed.write_text(str(exc))
                raise
    return run


def pytest_collection_modifyitems(items):
    """The files of FIRST start first (a stable sort: everything else keeps its order)."""
    items.sort(key=lambda item: Path(str(item.fspath)).name not in FIRST)
