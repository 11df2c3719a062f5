"""Generated blocks of a Markdown file: the text between ``<!-- BEGIN name ... -->`` and
``<!-- END name -->`` lines, which ``lus summarize --readme`` and ``lus bench-table --readme``
rewrite from a run's or the benchmarks' own files, leaving everything outside the markers as it was."""

from __future__ import annotations

import re
from pathlib import Path

from lus_core.io_utils import atomic_path


def block_span(text: str, name: str, where: str) -> tuple[int, int]:
    """(end of the BEGIN line, start of the END line) of block ``name``."""
    begin = re.compile(rf"^<!-- BEGIN {re.escape(name)}\b.*-->[ \t]*$", re.M)
    end = re.compile(rf"^<!-- END {re.escape(name)} -->[ \t]*$", re.M)
    b, e = list(begin.finditer(text)), list(end.finditer(text))
    if len(b) != 1 or len(e) != 1 or e[0].start() < b[0].end():
        raise ValueError(f"{where}: needs exactly one '<!-- BEGIN {name} ... -->' line followed by one "
                         f"'<!-- END {name} -->' line (found {len(b)} and {len(e)})")
    return b[0].end() + 1, e[0].start()


def block_text(text: str, name: str, where: str = "README") -> str:
    """The text between the markers of block ``name``."""
    a, b = block_span(text, name, where)
    return text[a:b]


def block_names(text: str) -> set[str]:
    return set(re.findall(r"^<!-- BEGIN ([\w-]+)\b", text, re.M))


def replace_block(text: str, name: str, content: str, where: str) -> str:
    a, b = block_span(text, name, where)
    return text[:a] + content + text[b:]


def rewrite_blocks(path: str | Path, blocks: dict[str, str]) -> Path:
    """Replace the named blocks of the file (atomically); every name must have its markers."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    for name, content in blocks.items():
        text = replace_block(text, name, content, str(path))
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
