"""Code versions follow the imports: an edit of a module reruns exactly the steps that import it."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lus_core.workflow.code_version import code_version_for, import_closure
from tests.conftest import TINY
from tests.dag_plans import DryRuns
from tests.workflow_helpers import REPO, SNAKEMAKE

WORKFLOW_FILES = ["Snakefile", "config.yaml", "rules", "workflow_scripts", "lus_core", "configs", "envs", "report",
                  "profiles"]


def _names(script):
    return {p.relative_to(REPO / "lus_core").as_posix() for p in import_closure(REPO / "workflow_scripts" / script)}


def test_closure_follows_imports_inside_functions_and_from_imports():
    evaluate = _names("evaluate.py")
    # `from . import figures as F` sits inside a function of evaluation/step.py (a relative import)
    assert "evaluation/figures.py" in evaluate and "evaluation/matrix.py" in evaluate and "__init__.py" in evaluate
    assert "split/search.py" in _names("balance_split.py")
    # training reads its scope's patients through the split file's reader, never the search itself
    assert {n for n in _names("train.py") if n.startswith("split/")} == {"split/__init__.py", "split/scopes.py"}
    assert not {n for n in _names("train.py") if n.startswith(("similarity/", "synth/"))}
    assert code_version_for("workflow_scripts/train.py") != code_version_for("workflow_scripts/infer.py")


def _copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def _snakemake(copy: Path, *args):
    env = {**os.environ, "PYTHONPATH": str(copy)}  # the copy's lus_core, edited below
    proc = subprocess.run([SNAKEMAKE, "--snakefile", str(copy / "Snakefile"), *args],
                          capture_output=True, text=True, cwd=copy, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _plan(copy, *args) -> set[str]:
    text = _snakemake(copy, "-n", *args)
    if "Nothing to be done" in text:
        return set()
    jobs = {m.group(1) for m in re.finditer(r"^(\w+)\s+(\d+)$", text.split("Job stats:")[1], re.M)}
    return {re.sub(r"^(extract_frames|embed)_\d+$", r"\1", j) for j in jobs} - {"total", "all"}


@pytest.mark.slow
def test_editing_a_module_reruns_exactly_its_step_and_dependents(tiny_run, tmp_path):
    """On a copy of the finished tiny run, with a copy of the code: an edit of a module that only
    the split step imports reruns the split and everything downstream of it, nothing upstream."""
    copy = _copy_workflow(tmp_path / "repo")
    run = tiny_run.copy(tmp_path / "run")
    assert _plan(copy, *run.args) == set()  # the same code: the copy of the run is finished
    with open(copy / "lus_core" / "split" / "folds.py", "a") as f:
        f.write("\n# an edit\n")
    downstream = DryRuns(run.workdir, [TINY], {"results": "results"}).dependents()
    assert _plan(copy, *run.args) == {"balance_split", *downstream["balance_split"]}
    assert not {"synth", "extract_frames", "frame_index", "embed"} & downstream["balance_split"]
