"""Frame stores as verified state of a run: a record written at extraction, checked before use.

`extract_frames` writes `frames/{video}.h5` and, right after it, `frames/{video}.record.json`
(the store's SHA-256). `verify_frame_stores` checks every store against its record and that it
opens as HDF5 *before* the frame index is rebuilt, so a damaged store stops the run with its
name while the index and everything downstream stay as they were. The damaged file is moved
aside (never deleted: it may be the user's only copy of something), which leaves the store
missing; the next `snakemake` re-extracts it because the stores are targets of the run.
`lus predict` checks each store it reads against the run's manifest (lus_core.runs.reader).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from lus_core.frames.kept import prune
from lus_core.io_utils import read_json, sha256_file, write_json


class StoreError(ValueError):
    """A frame store is missing, unreadable or differs from what its extraction recorded."""


def record_store(store: str | Path, record: str | Path) -> dict:
    """Write the record of a freshly written store (its checksum and size)."""
    store = Path(store)
    entry = {"store": store.name, "sha256": sha256_file(store), "bytes": store.stat().st_size}
    write_json(record, entry)
    return entry


def store_problem(store: Path, record: Path) -> str | None:
    """Why `store` cannot be trusted, or None when it matches its record and opens as HDF5."""
    if not store.exists():
        return "missing"
    try:
        expected = read_json(record)
    except (OSError, ValueError) as exc:
        return f"its extraction record {record} is unreadable ({exc})"
    if sha256_file(store) != expected["sha256"]:
        return f"content differs from what extraction recorded in {record.name} (changed after the run wrote it)"
    try:
        with h5py.File(store, "r") as f:
            f.attrs.get("video_id")
    except OSError as exc:
        return f"not a readable HDF5 file ({exc})"
    return None


def verify_frame_stores(stores, records, out: str | Path) -> dict:
    """Check every store against its record; write `out` (the checksums) or raise naming each bad store.

    A bad store is moved to `<store>.damaged[.N]`, so that Snakemake sees it missing and
    re-extracts it on the next run; nothing is deleted.
    """
    by_name = {Path(r).name.removesuffix(".record.json"): Path(r) for r in records}
    verified, bad = {}, []
    for store in map(Path, stores):
        record = by_name.get(store.stem)
        if record is None:
            raise StoreError(f"{store}: no extraction record among the inputs")
        problem = store_problem(store, record)
        if problem is None:
            verified[store.name] = read_json(record)["sha256"]
            continue
        moved = _move_aside(store) if store.exists() else None
        where = f"; moved to {moved}" if moved else ""
        bad.append(f"{store}: damaged frame store: {problem}{where}")
    if bad:
        raise StoreError(
            "\n".join(bad) + "\nThe frame index and later results were left as they were; run snakemake "
            "again to re-extract the store(s) named above."
        )
    # the kept copies of videos the run no longer has (lus_core.frames.kept) go with them
    stores = [Path(s) for s in stores]
    if stores:
        prune(stores[0].parent, {s.stem for s in stores})
    write_json(out, {"stores": verified})
    return verified


def _move_aside(store: Path) -> Path:
    target = store.with_name(store.name + ".damaged")
    n = 1
    while target.exists():
        target = store.with_name(f"{store.name}.damaged.{n}")
        n += 1
    store.rename(target)
    return target
