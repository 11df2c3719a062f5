"""The package installs: pyproject.toml declares every third-party module lus_core imports, the
pins of requirements.txt (the lock) fall inside its ranges, and a wheel built from the sources
installs into a fresh venv and runs `lus --help` and `lus synth` there.

The wheel test never downloads: the fresh venv sees, through a .pth file, only the installed
distributions that the wheel's Requires-Dist pulls in (transitively, markers evaluated), and pip
resolves the wheel's requirements against them with --no-index.  A missing dependency therefore
fails twice: pip cannot resolve a declared one, and an undeclared one cannot be imported.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def _declared() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def _imported_top_modules() -> set[str]:
    names = set()
    for path in (REPO / "lus_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("lus_core", "__future__")}


def test_every_imported_module_is_a_declared_dependency():
    by_module = md.packages_distributions()
    declared = _declared()
    missing = {}
    for mod in sorted(_imported_top_modules()):
        dists = {canonicalize_name(d) for d in by_module.get(mod, [])}
        assert dists, f"lus_core imports {mod!r}, which no installed distribution provides"
        if not dists & declared.keys():
            missing[mod] = sorted(dists)
    assert not missing, f"imported by lus_core but not in pyproject.toml dependencies: {missing}"


def test_the_lock_satisfies_the_declared_ranges():
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            r = Requirement(line)
            pins[canonicalize_name(r.name)] = next(iter(r.specifier)).version
    for name, req in _declared().items():
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.txt pins {name}=={pins[name]}, outside pyproject.toml's {req.specifier}")


# --------------------------------------------------------------------------- the wheel, installed


def _closure(requirements: list[Requirement]) -> set[str]:
    """Installed distributions that ``requirements`` pull in (transitively, with their extras)."""
    env = default_environment()
    seen, todo = set(), [(r, "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        for wanted in ["", *sorted(req.extras)]:
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                todo += [(Requirement(r), wanted) for r in (md.distribution(name).requires or [])]
    return {name for name, _ in seen}


def _overlay(dists: set[str], target: Path) -> None:
    """A folder of links to the top-level files of exactly these installed distributions."""
    target.mkdir()
    for name in dists:
        dist = md.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops - {".."}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (target / top).exists() and not top.endswith(".pth"):
                (target / top).symlink_to(src)


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    src = tmp_path / "src"  # build from a copy: nothing is written into the clone
    shutil.copytree(REPO / "lus_core", src / "lus_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", src)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(src)], check=True)
    (wheel,) = wheels.glob("lus_core-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "lus_core/config_schema.yaml" in names
    requires = [Requirement(v) for v in re.findall(r"^Requires-Dist: (.+)$", meta, flags=re.M)]
    assert requires, "the wheel declares no dependencies"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True).strip())
    _overlay(_closure(requires), tmp_path / "deps")
    (site / "deps.pth").write_text(str(tmp_path / "deps") + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # pip (of this interpreter) installs into the fresh venv, resolving Requires-Dist offline
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "-q",
                    str(wheel)], check=True, env=env, cwd=tmp_path)
    run = tmp_path / "run"  # outside the clone, so the clone's lus_core cannot be imported
    run.mkdir()
    where = subprocess.check_output([py, "-c", "import lus_core; print(lus_core.__file__)"], env=env,
                                    cwd=run, text=True)
    assert Path(where.strip()).is_relative_to(site), where
    # every module imports with only the declared dependencies present
    modules = [".".join(p.relative_to(site).with_suffix("").parts).removesuffix(".__init__")
               for p in (site / "lus_core").rglob("*.py")]
    subprocess.run([py, "-c", "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]",
                    *modules], check=True, env=env, cwd=run)
    lus = venv / "bin" / "lus"
    assert "synth" in subprocess.check_output([lus, "--help"], env=env, cwd=run, text=True)
    subprocess.run([lus, "synth", "cohort", "--patients", "2"], check=True, env=env, cwd=run)
    assert (run / "cohort" / "labels.csv").exists()
    assert any((run / "cohort" / "videos").iterdir())
