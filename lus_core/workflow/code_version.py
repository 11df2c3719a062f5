"""Code versions of the workflow's steps: a hash of the lus_core source each step's script runs.

Imports nothing else from lus_core, so that every step's import closure stays its own.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # lus_core/


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
