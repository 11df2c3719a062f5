"""The markup of the report: its CSS, and the small HTML pieces every section is made of (tables,
key-value tables, inline figures, number formats). Pure functions of their arguments."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

ROW_TYPE_LABEL = {
    "cnn": "CNN alone",
    "fallback_only": "fallback only",
    "combined": "combined",
    "oracle_detector": "oracle detector",
    "oracle_fallback": "oracle fallback",
}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:1em 2em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}
td.l,th.l{text-align:left}
tr.cnn td{background:#eef5fb}tr.oracle td{color:#777;font-style:italic}tr.fallback_only td{background:#fbf7ee}
tr.best td{font-weight:bold}
.sig{color:#b2182b;font-weight:bold}.ns{color:#666}
.answer{background:#f7f7f7;border-left:4px solid #2c7bb6;padding:.6em 1em;margin:1em 0}
.answer.yes{border-left-color:#b2182b}
figure{display:inline-block;margin:.6em;vertical-align:top;max-width:100%;box-sizing:border-box}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#444;max-width:720px}
.kv td:first-child{text-align:left;color:#555}.kv td{text-align:left}
details{margin:.6em 0}summary{cursor:pointer;color:#2c7bb6}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
.small{font-size:.85em;color:#555}
.scroll{overflow-x:auto;max-width:100%}
td,th{overflow-wrap:anywhere}
.top{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.headline{flex:1 1 340px;min-width:0}.headline .big{font-size:1.5em;font-weight:bold;margin:.1em 0}
.top figure{flex:1 1 520px;margin:0;min-width:0}
.pair{display:flex;flex-wrap:wrap;align-items:flex-start}.pair figure{flex:0 1 auto}
details>summary{font-weight:bold}
"""


# --------------------------------------------------------------------------- formatting


def isnan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def fmt_ci(est, lo, hi, digits: int = 2) -> str:
    """``0.61 [0.55, 0.67]``; ``-`` for a missing estimate, no interval when it is missing."""
    if isnan(est):
        return "-"
    s = f"{float(est):.{digits}f}"
    if isnan(lo) or isnan(hi):
        return s
    return f"{s} [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def fmt(x, digits: int = 2) -> str:
    if isnan(x):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def pct(x) -> str:
    return "-" if isnan(x) else f"{100 * float(x):.1f}%"


def ci_pct(ci) -> str:
    return "-" if isnan(ci) else f"{100 * float(ci):g}%"


def esc(x) -> str:
    return html.escape(str(x))


def table(header: Sequence[str], rows: Iterable[Sequence], row_classes: Sequence[str] | None = None,
           left: Sequence[int] = (0,), cls: str = "") -> str:
    out = [f'<div class="scroll"><table class="{cls}"><thead><tr>']
    out += [f'<th class="{"l" if i in left else ""}">{esc(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for j, row in enumerate(rows):
        rc = row_classes[j] if row_classes else ""
        out.append(f'<tr class="{rc}">')
        for i, v in enumerate(row):
            raw = isinstance(v, Raw)
            out.append(f'<td class="{"l" if i in left else ""}">{v if raw else esc(v)}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


class Raw(str):
    """Already-escaped HTML inside a table cell."""


def kv(pairs: Iterable[tuple[str, object]]) -> str:
    return table(["", ""], [(k, fmt(v) if not isinstance(v, (list, dict)) else json_short(v))
                             for k, v in pairs], cls="kv")


def json_short(v) -> str:
    if isinstance(v, list) and all(not isinstance(x, (list, dict)) for x in v):
        return ", ".join(map(str, v))
    return json.dumps(v, sort_keys=True)


def img_uri(path: Path | bytes) -> str:
    raw = path if isinstance(path, bytes) else Path(path).read_bytes()
    return f"data:image/png;base64,{base64.b64encode(raw).decode('ascii')}"


def figure(path: Path | bytes, title: str, caption: str) -> str:
    return (f'<figure><img alt="{esc(title)}" src="{img_uri(path)}"><figcaption><b>{esc(title)}.</b> '
            f"{esc(caption)}</figcaption></figure>")


def resolve(base: Path, f: str) -> Path:
    p = Path(f)
    return p if p.is_absolute() else base / p


def csv_table(path: Path, max_rows: int = 200) -> str:
    df = pd.read_csv(path)
    if len(df) > max_rows:
        df = df.head(max_rows)

    def cell(v):
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.3f}"
        return v

    text_cols = tuple(i for i, c in enumerate(df.columns) if df[c].dtype == object)
    return table([str(c) for c in df.columns], [[cell(v) for v in row] for row in df.itertuples(index=False)],
                  left=text_cols or (0,))


def normalise_items(x) -> list[dict]:
    if not x:
        return []
    if isinstance(x, Mapping):
        return [{"file": str(v), "title": str(k), "caption": ""} for k, v in x.items()]
    out = []
    for it in x:
        if isinstance(it, Mapping):
            out.append({"title": Path(str(it["file"])).stem, "caption": "", **it, "file": str(it["file"])})
        else:
            out.append({"file": str(it), "title": Path(str(it)).stem, "caption": ""})
    return out
