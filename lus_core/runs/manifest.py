"""A run's manifest: the files `lus predict` loads, with checksums and the config that made them.

Pickled scikit-learn / openTSNE objects execute code when loaded, so predict only loads files
whose checksum matches the manifest the workflow wrote for this run.
"""

from __future__ import annotations

from pathlib import Path

from lus_core.io_utils import read_json, sha256_file, write_json

MANIFEST = "manifest.json"


class RunError(ValueError):
    """A run folder is incomplete, tampered with, or from an incompatible config."""


def write_manifest(run_dir: str | Path, files: list[str | Path], config: dict, out: str | Path) -> dict:
    run_dir = Path(run_dir).resolve()
    entries = {}
    for f in sorted({Path(p).resolve() for p in files}):
        entries[f.relative_to(run_dir).as_posix()] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    manifest = {"files": entries, "config": config}
    write_json(out, manifest)
    return manifest


def manifest_path(run_dir: str | Path) -> Path:
    """The run's manifest.json; a folder without one is not a finished run (the workflow writes it last)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise RunError(f"{run_dir}: no {MANIFEST}; not the results folder of a finished workflow run "
                       "(an interrupted run has none: run the workflow again to finish it)")
    return path


def load_manifest(run_dir: str | Path) -> dict:
    return read_json(manifest_path(run_dir))


def verified_path(run_dir: str | Path, manifest: dict, relative: str) -> Path:
    """The absolute path of a run file after checking it exists and matches its checksum."""
    path = Path(run_dir) / relative
    entry = manifest["files"].get(relative)
    if entry is None:
        raise RunError(f"{path}: not listed in {Path(run_dir) / MANIFEST} (incomplete run or other config)")
    if not path.exists():
        raise RunError(f"{path}: missing from the run folder")
    if sha256_file(path) != entry["sha256"]:
        raise RunError(f"{path}: checksum differs from {MANIFEST}; the file was changed after the run")
    return path
