"""Helpers of the workflow scripts and rules: step logging and code versions.

Imports nothing else from lus_core, so that every step's import closure stays its own.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import logging
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent


def code_version(*modules: str) -> str:
    """Hash of the source of the given lus_core modules or sub-packages.

    Snakemake reruns a job when its params change, not when an imported module changes;
    putting this hash into `params` makes an edit of the step's code rerun the step.
    """
    files = []
    for name in sorted(set(modules)):
        base = PACKAGE / name.replace(".", "/")
        found = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        if not found or not found[0].exists():
            raise FileNotFoundError(f"code_version: no lus_core module named {name!r}")
        files += found
    return _hash_files(files)


def code_version_for(script: str | Path) -> str:
    """Hash of every lus_core source file a workflow script runs: its import closure.

    Derived from the code itself (a static walk of `import` statements, including the ones
    inside functions), so a module's new import is followed without editing any rule.
    """
    script = Path(script)
    if not script.is_absolute():
        script = PACKAGE.parent / script
    return _hash_files(sorted(import_closure(script)))


def import_closure(source: Path) -> set[Path]:
    """The lus_core files (modules and the packages' __init__) that importing `source` can execute."""
    seen: set[Path] = set()
    todo = [source.resolve()]
    while todo:
        path = todo.pop()
        for module in _imported_modules(path):
            for f in _module_files(module):
                if f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


_PARSED: dict[tuple, frozenset[str]] = {}  # (path, mtime, size) -> its imports: the DAG asks per rule


def _imported_modules(path: Path) -> frozenset[str]:
    """Dotted names of the lus_core modules that `path` imports (`from a import b` may name a module b)."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _PARSED:
        _PARSED[key] = _parse_imports(path)
    return _PARSED[key]


def _parse_imports(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if _is_in_package(path) else None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and package is not None:  # relative import inside lus_core
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(n for n in names if n == PACKAGE.name or n.startswith(PACKAGE.name + "."))


_MODULE_FILES: dict[tuple[str, str], list[Path]] = {}


def _module_files(dotted: str) -> list[Path]:
    """The files executed by importing `dotted`: every package __init__ on the way and the module."""
    key = (str(PACKAGE), dotted)
    if key not in _MODULE_FILES:
        _MODULE_FILES[key] = _find_module_files(dotted)
    return _MODULE_FILES[key]


def _find_module_files(dotted: str) -> list[Path]:
    parts = dotted.split(".")[1:]
    files, cur = [PACKAGE / "__init__.py"], PACKAGE
    for part in parts:
        cur = cur / part
        if (cur / "__init__.py").exists():
            files.append(cur / "__init__.py")
        elif cur.with_suffix(".py").exists():
            files.append(cur.with_suffix(".py"))
            break
        else:  # a name imported from a module (a function or class), not a module itself
            break
    return [f.resolve() for f in files]


def _is_in_package(path: Path) -> bool:
    return PACKAGE.resolve() in path.resolve().parents


def _module_name(path: Path) -> str:
    rel = path.resolve().relative_to(PACKAGE.resolve().parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _hash_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    root = PACKAGE.resolve().parent
    for f in files:
        f = Path(f).resolve()
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def step_logging(snakemake):
    """Send a script's stderr and logging to the rule's log file."""
    log_path = snakemake.log[0] if snakemake.log else None
    if log_path is None:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        old = sys.stderr
        sys.stderr = log_file
        logging.basicConfig(
            stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
        )
        try:
            yield
        except Exception:
            logging.getLogger("lus").exception("step failed")
            raise
        finally:
            sys.stderr = old
