"""A Markdown page that a tool writes (`lus summarize --out`, `lus model-card --out`), with the
folder of figures beside it: never written over a file the tool did not write.

A page starts with a marker line naming its tool, so running the tool again replaces its own page
(and the figures it copied beside it) without asking, while any other existing file, including a
run's own (`manifest.json`), is refused unless `--overwrite` says to replace it. A page never
lands inside a run folder it reads. The figures are copied into a temporary sibling folder first
and moved in, then the page is written atomically, so a failure leaves the earlier page and
figures as they were.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from lus_core.io_utils import atomic_path
from lus_core.runs.safe_output import OutputError, staged


def marker(tool: str) -> str:
    return f"<!-- written by `{tool}`: running it again replaces this page -->"


def written_by(path: Path, tool: str) -> bool:
    """Whether the file at `path` is a page that `tool` wrote (its first line is the marker)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\n") == marker(tool)
    except (OSError, UnicodeDecodeError):
        return False


def check_page_out(out: Path, tool: str, overwrite: bool, runs: Iterable[str | Path] = (),
                   figures: Path | None = None) -> None:
    """Refuse `out` (and its figures folder) where writing would replace what `tool` did not write."""
    where = out.resolve()
    for run in runs:
        run = Path(run).resolve()
        if where == run or run in where.parents:
            raise OutputError(f"--out {out}: lies inside the run folder {run}; write the page elsewhere")
    if out.is_dir():
        raise OutputError(f"--out {out}: is a folder; give the Markdown file to write, e.g. {out / 'page.md'}")
    ours = written_by(out, tool)
    if out.exists() and not (ours or overwrite):
        raise OutputError(f"--out {out}: exists and was not written by `{tool}` (its first line is not the "
                          f"tool's marker); choose another file, or pass --overwrite to replace it")
    if figures is not None and figures.is_dir() and any(figures.iterdir()) and not (ours or overwrite):
        raise OutputError(f"--out {out}: the figures folder {figures} exists and holds files, but {out} is not "
                          f"a page of `{tool}`; choose another file, or pass --overwrite to replace its figures")


def write_page(out: Path, tool: str, text: Callable[[Path | None], str], figures: Path | None = None) -> Path:
    """Write `text(figures folder to fill)` as `tool`'s page at `out`, the figures it copied moved
    into `figures` (files of the same name replaced, others left) once the text is complete."""
    page = text(None) if figures is None else _with_staged_figures(figures, text)
    with atomic_path(out) as tmp:
        tmp.write_text(f"{marker(tool)}\n{page}", encoding="utf-8")
    return out


def _with_staged_figures(figures: Path, text: Callable[[Path | None], str]) -> str:
    """The page's text, its figures copied into a folder of the same name (the page links to it by
    name) in a staging folder beside the final one (safe_output.staged: gone however this ends), and
    moved in once the text is complete."""
    with staged(figures) as stage_root:
        page = text(stage_root / figures.name)
        copied = stage_root / figures.name
        if copied.is_dir():
            figures.mkdir(exist_ok=True)
            for f in sorted(copied.iterdir()):
                os.replace(f, figures / f.name)
        return page
