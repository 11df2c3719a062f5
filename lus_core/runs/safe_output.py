"""`lus predict`'s (and `lus score`'s, `lus export`'s) output folder: never delete or overwrite a file it did not write.

The rules, checked before any video is scored:
- `--out` may not be an input, contain one (e.g. the folder a video sits in), or lie inside an
  input folder of videos, symlinks resolved: predictions never land among the inputs;
- a non-empty `--out` is refused unless `--overwrite`; even then only the files listed in the
  folder's own `.lus_predict.json` (written by an earlier `lus predict`) are replaced or
  removed, and a new file that would replace anything else is refused.
The results are written into a temporary sibling folder first and moved in only when complete,
so a crash while scoring leaves the previous output as it was. `lus score` and `lus export` check
and publish the same way, each with its own manifest (`manifest=` / `tool=`), so no tool replaces
or removes another's files.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lus_core.io_utils import read_json, write_json

OWN_MANIFEST = ".lus_predict.json"


class OutputError(ValueError):
    """The output folder is unsafe to write into; the message says why and what to do."""


def check_output_dir(out_dir: str | Path, inputs: Iterable[str | Path], overwrite: bool,
                     manifest: str = OWN_MANIFEST, tool: str = "lus predict") -> None:
    """Refuse an output folder that touches the inputs, or holds files we may not replace: with
    --overwrite, a folder is ``tool``'s only where its own ``manifest`` lies (each tool has its
    own, so one never replaces or removes what another wrote)."""
    out = Path(out_dir).resolve()
    for given in inputs:
        src = Path(given).resolve()
        # a folder of videos: not it, not above it, not inside it; a video file: not it, not a
        # folder holding it (a new sub-folder beside the video is fine: nothing there is ours)
        inside = src.is_dir() and src in out.parents
        if out == src or out in src.parents or inside:
            raise OutputError(
                f"--out {out_dir}: is, contains or lies inside the input {given} ({src}); "
                "choose an output folder away from the videos"
            )
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out_dir}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise OutputError(
            f"--out {out_dir}: folder is not empty; choose a new folder, or pass --overwrite to replace "
            f"only the files an earlier `{tool}` wrote there (listed in {manifest})"
        )
    if not (out / manifest).exists():
        raise OutputError(
            f"--out {out_dir}: not empty and holds no {manifest}, so it was not written by `{tool}`; "
            "nothing there will be replaced: choose another folder"
        )


def owned_files(out_dir: Path, manifest: str = OWN_MANIFEST) -> set[str]:
    """Relative paths an earlier `lus predict` (or the tool of ``manifest``) wrote into out_dir
    (empty when none)."""
    path = out_dir / manifest
    if not path.exists():
        return set()
    try:
        return set(read_json(path)["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{path}: unreadable ({exc}); nothing in {out_dir} will be replaced") from exc


def staging_dir(out_dir: str | Path) -> Path:
    """A temporary sibling folder of out_dir (same file system, so moving files in is a rename)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))


@contextmanager
def staged(out_dir: str | Path) -> Iterator[Path]:
    """A staging folder of out_dir (staging_dir) that is removed however the block ends: an error,
    Ctrl-C, or a SIGTERM (`timeout`, `kill`, SLURM), which would otherwise end the process without
    running any cleanup and leave `.NAME.*.partial` behind."""
    with sigterm_raises():
        staging = staging_dir(out_dir)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)


EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises SystemExit(143) as Ctrl-C raises KeyboardInterrupt, so
    `finally` blocks and context managers clean up; the previous handler is back afterwards. Only
    the main thread can handle signals, and a SIGTERM the process ignores stays ignored."""
    if threading.current_thread() is not threading.main_thread() or _ignores_sigterm():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_terminated)
    try:
        yield
    finally:
        # None: a handler installed outside Python, which signal.signal cannot put back
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _ignores_sigterm() -> bool:
    return signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def _exit_terminated(signum, frame):
    raise SystemExit(EXIT_TERMINATED)


def publish(staging: Path, out_dir: str | Path, manifest: str = OWN_MANIFEST, tool: str = "lus predict") -> list[str]:
    """Move every file of `staging` into out_dir; replace or remove only files we wrote before
    (those listed in out_dir's ``manifest``, written by ``tool``).

    Returns the relative paths written. Checks every collision before moving anything.
    """
    out_dir = Path(out_dir)
    new = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    owned = owned_files(out_dir, manifest)
    foreign = [f for f in new if (out_dir / f).exists() and f not in owned]
    foreign += [f for f in new if any((out_dir / p).is_file() for p in _parents(f))]
    if foreign:
        raise OutputError(f"{out_dir}: would replace files that `{tool}` did not write: {foreign[:5]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel in new:
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, dest)
    for rel in sorted(owned - set(new)):  # our own files of the earlier run that this run did not write
        stale = out_dir / rel
        if stale.is_file():
            stale.unlink()
            _remove_empty_parents(stale.parent, out_dir)
    write_json(out_dir / manifest, {"files": new, "written_by": tool})
    shutil.rmtree(staging, ignore_errors=True)
    return new


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and stop in folder.parents and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
