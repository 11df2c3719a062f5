"""Resumable training state: the RNG states and the checkpoint files of an interrupted training.

The RNG states are stored as plain lists and tensors, so that checkpoints load with
``weights_only=True``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lus_core.io_utils import atomic_path


def get_rng_state(generators: dict[str, torch.Generator]) -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointStore:
    """`last.pt` (everything but the best weights) + `best-{epoch}.pt` (best weights so far).

    Both are written atomically; `last.pt` names the best file it belongs to, and older best
    files are removed only after `last.pt` points past them, so a crash at any moment leaves a
    consistent pair.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    def best_path(self, epoch: int) -> Path:
        return self.dir / f"best-{epoch}.pt"

    def save(self, state: dict, best_state: dict | None, best_epoch: int, best_changed: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if best_changed and best_state is not None:
            with atomic_path(self.best_path(best_epoch)) as tmp:
                torch.save(best_state, tmp)
        with atomic_path(self.last) as tmp:
            torch.save({**state, "best_epoch": best_epoch}, tmp)
        for p in self.dir.glob("best-*.pt"):
            if p != self.best_path(best_epoch):
                p.unlink(missing_ok=True)

    def load(self, fingerprint: str) -> tuple[dict, dict | None] | None:
        if not self.last.exists():
            return None
        try:
            state = torch.load(self.last, map_location="cpu", weights_only=True)
            best_file = self.best_path(state["best_epoch"])
            best = torch.load(best_file, map_location="cpu", weights_only=True) if best_file.exists() else None
        except Exception as e:  # a corrupt checkpoint is not worth failing the job for
            say(f"ignoring unreadable checkpoint in {self.dir}: {e}")
            return None
        if state.get("fingerprint") != fingerprint:
            say(f"ignoring checkpoint in {self.dir}: made from other inputs or config")
            return None
        if state["best_epoch"] > 0 and best is None:
            say(f"ignoring checkpoint in {self.dir}: best weights file missing")
            return None
        return state, best

    def clear(self) -> None:
        if self.dir.exists():
            for p in [*self.dir.glob("last.pt"), *self.dir.glob("best-*.pt")]:
                p.unlink(missing_ok=True)


def say(msg: str) -> None:
    """A progress message that does not break a tqdm bar (to stderr, the step's log)."""
    tqdm.write(msg, file=sys.stderr)
