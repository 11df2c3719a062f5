"""Frame stores kept across extraction jobs: a new or changed video re-extracts that video only.

An extraction job extracts a fixed share of the videos, and Snakemake deletes all of a job's
outputs before it runs it again (a new video in its share, a changed label): without this cache
every other store of the job would be decoded and written again. Each store the job writes is
also linked (a hard link: no copy, no extra space) under `frames/.kept/` with a key of everything
that made it: the source file's SHA-256, the video's label entry (patient, ranges, findings), the
step's config slice and its code version. When the job runs again, a video whose key is kept gets
that very file back (bitwise the store of the earlier run, checked against its record) instead of
being decoded again.
Superseded entries of a video are removed when its new store is kept; nothing outside
`frames/.kept/` is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from lus_core.frames.labels import VideoEntry
from lus_core.io_utils import sha256_file

KEPT = ".kept"


class KeptStores:
    """The kept stores of one frames folder, for one extraction setting (config slice + code version)."""

    def __init__(self, frames_dir: str | Path, settings: dict):
        self.dir = Path(frames_dir) / KEPT
        self.settings = json.dumps(settings, sort_keys=True, default=str)
        self.restored = 0

    def key(self, entry: VideoEntry) -> str:
        source = sha256_file(entry.path) if Path(entry.path).is_file() else _folder_digest(Path(entry.path))
        made_of = json.dumps({"source": source, "entry": asdict(entry), "settings": self.settings},
                             sort_keys=True, default=str)
        return hashlib.sha256(made_of.encode()).hexdigest()[:24]

    def _paths(self, video: str, key: str) -> tuple[Path, Path]:
        # "~" is in no video id (lus_core.frames.labels.video_id): "*~{video}.h5" is this video's only
        return self.dir / f"{key}~{video}.h5", self.dir / f"{key}~{video}.record.json"

    def restore(self, entry: VideoEntry, store: Path, record: Path) -> str | None:
        """Put the kept store (and its extraction record) of this exact video and setting at
        `store` / `record`; returns the key, or None when nothing is kept for it (extract it)."""
        key = self.key(entry)
        kept_store, kept_record = self._paths(entry.video, key)
        if not (kept_store.is_file() and kept_record.is_file()):
            return None
        if sha256_file(kept_store) != json.loads(kept_record.read_text())["sha256"]:
            # a store changed in place changes its kept link too (one file): extract it again
            kept_store.unlink()
            kept_record.unlink()
            return None
        _link(kept_store, Path(store))
        _link(kept_record, Path(record))
        self.restored += 1
        return key

    def keep(self, entry: VideoEntry, store: Path, record: Path, key: str | None = None) -> None:
        """Link a freshly written store and record into the cache, and drop the video's older entries."""
        key = key or self.key(entry)
        self.dir.mkdir(parents=True, exist_ok=True)
        kept_store, kept_record = self._paths(entry.video, key)
        for pattern in (f"*~{entry.video}.h5", f"*~{entry.video}.record.json"):
            for old in self.dir.glob(pattern):
                if not old.name.startswith(f"{key}~"):
                    old.unlink(missing_ok=True)
        _link(Path(store), kept_store)
        _link(Path(record), kept_record)


def _link(src: Path, dst: Path) -> None:
    """`dst` becomes the same file as `src` (a hard link, or a copy where the file system has none),
    replacing what was at `dst` in one step."""
    tmp = dst.with_name(f".{dst.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _folder_digest(folder: Path) -> str:
    """A folder of frames: the digest of its image files' names and contents."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def prune(frames_dir: str | Path, videos: set[str]) -> list[Path]:
    """Remove the kept stores of videos the run no longer has (a video taken out of the dataset);
    returns what was removed."""
    folder = Path(frames_dir) / KEPT
    gone = [f for f in folder.glob("*~*") if f.name.split("~", 1)[1].removesuffix(".record.json").removesuffix(".h5")
            not in videos] if folder.is_dir() else []
    for f in gone:
        f.unlink(missing_ok=True)
    return gone
