"""One run at a time per results folder, whatever the working directory.

Snakemake locks its working directory, not the results folder: two runs started from two folders
on one results folder would both run the same jobs and break each other's files. The Snakefile's
`onstart` takes an exclusive lock on `R/.lus.lock` for the life of the Snakemake process (an OS
file lock: a killed run releases it with its process, so a crash leaves no stale lock on a local
disk) and writes who holds it; a second run stops at once with the folder and the holder named.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lus.lock"
_held: dict[str, object] = {}  # lock path -> its open file, held until the process ends


class ResultsFolderBusy(RuntimeError):
    """Another run holds the results folder."""


def hold_results_folder(results_dir: str | Path) -> Path:
    """Lock `results_dir` for this process (again: a no-op); raise ResultsFolderBusy naming the holder."""
    path = Path(results_dir) / LOCK_NAME
    if str(path) in _held:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (held open on purpose: the lock lives with the process)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise ResultsFolderBusy(_busy_message(Path(results_dir), path, holder)) from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd(),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv}) + "\n")
    handle.flush()
    _held[str(path)] = handle
    return path


def _busy_message(results_dir: Path, path: Path, holder: str) -> str:
    try:
        who = json.loads(holder)
        by = (f"process {who['pid']} on {who['host']} (started {who['started']} in {who['cwd']}: "
              f"{' '.join(who['command'])})")
    except (ValueError, KeyError, TypeError):
        by = "another process"
    return (f"{results_dir}: the results folder is in use by {by}. Wait for that run to end, or stop it. "
            f"A killed run releases the lock with its process; only if no run is alive and the lock "
            f"stays (a network file system), delete {path}.")
