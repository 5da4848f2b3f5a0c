"""One self-contained HTML file from a `Report`: inline CSS, plots as base64 PNG, no scripts,
no external resources. Text blocks use a small, escaped subset of Markdown (paragraphs,
``- `` lists, **bold**, `code`)."""

from __future__ import annotations

import base64
import html
import re

import pandas as pd

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
     padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4} tr:nth-child(even) td{background:#fafafa}
code{background:#f2f2f2;padding:0 .25em;border-radius:3px;font-size:.92em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
nav a{margin-right:.8em} .meta{color:#666;font-size:.9em}
"""


def _inline(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
    return s


def text_to_html(text: str) -> str:
    out, items = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("- "):
            items.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return "\n".join(out)


def table_to_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p>(empty)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False, name=None):
        rows.append("<tr>" + "".join(f"<td>{_inline('' if v is None else str(v))}</td>" for v in rec) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def to_html(report) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(report.title.replace('`', ''))}</title>", f"<style>{CSS}</style></head><body>",
             f"<h1>{_inline(report.title)}</h1>"]
    parts += [f'<p class="meta">{_inline(m)}</p>' for m in report.meta]
    parts.append("<nav>" + "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in report.sections) + "</nav>")
    for s in report.sections:
        parts.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>')
        for kind, val in s.blocks:
            if kind == "text":
                parts.append(text_to_html(val))
            elif kind == "table":
                parts.append(table_to_html(val))
            elif kind == "image":
                name, alt = val
                png = report.images.get(name)
                if png:
                    b64 = base64.b64encode(png).decode("ascii")
                    parts.append(f'<img alt="{html.escape(alt)}" title="{html.escape(name)}" '
                                 f'src="data:image/png;base64,{b64}">')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
