"""A report's content as blocks (heading, paragraph, image, table), rendered to Markdown and to
HTML from the same list so the two files cannot drift apart. Families build their tables from
`Table`, `cap` and `num`."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

MAX_TABLE_ROWS = 40  # per family and run: the plots carry the full sweep, tables the key numbers


# ---- blocks and their two renderings ----------------------------------------------------------

@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    warning: bool = False


@dataclass
class Image:
    file: str
    alt: str


@dataclass
class Table:
    df: pd.DataFrame  # cells already formatted as strings
    note: str | None = None


def _cell(value) -> str:
    """Table cell text: 4 significant digits for floats, an em dash for missing values."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        value = float(value) + 0.0  # no "-0"
        if 1e4 <= abs(value) < 1e12:
            return f"{value:.0f}"  # 67570 reads better than 6.757e+04
        return f"{value:.4g}"
    if value is pd.NA or value is pd.NaT:
        return "—"
    return str(value)


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text. Only ever called on capped tables, so the per-cell map stays small."""
    return df.map(_cell).astype(object)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numeric columns right-aligned), no dependency needed."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    text = format_table(df)

    def esc(s) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)


def to_markdown(blocks: list) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(f"> **Warning:** {b.text}" if b.warning else b.text)
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.file})")
        elif isinstance(b, Table):
            out.append(markdown_table(b.df) + (f"\n\n_{b.note}_" if b.note else ""))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1, h2, h3 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.warning { background: #fff3cd; border-left: 4px solid #e0a800; padding: .5em 1em; }
.note { color: #666; font-style: italic; }
"""


def to_html(blocks: list, title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = ' class="warning"' if b.warning else ""
            prefix = "<strong>Warning:</strong> " if b.warning else ""
            out.append(f"<p{cls}>{prefix}{html.escape(b.text)}</p>")
        elif isinstance(b, Image):
            out.append(f'<p><img src="{html.escape(b.file)}" alt="{html.escape(b.alt)}"></p>')
        elif isinstance(b, Table):
            out.append(format_table(b.df).to_html(index=False, border=0, escape=True))
            if b.note:
                out.append(f'<p class="note">{html.escape(b.note)}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def cap(df: pd.DataFrame, what: str) -> Table:
    omitted = len(df) - MAX_TABLE_ROWS
    note = f"{omitted} more {what} omitted (all of them are in the plot)." if omitted > 0 else None
    return Table(df.head(MAX_TABLE_ROWS), note)


def num(df: pd.DataFrame, *cols) -> pd.DataFrame:
    return df.assign(**{c: pd.to_numeric(df[c], errors="coerce") for c in cols if c in df.columns})
