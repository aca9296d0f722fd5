"""A small document model rendered both to Markdown and to self-contained HTML.

The HTML embeds images as data URIs and carries its own CSS: the KFP UI shows it
in a sandbox and air-gapped clusters have no CDN, so it must reference nothing.
Images are embedded while the page stays under ``HTML_BUDGET`` bytes (the KFP UI
renders HTML artifacts up to about 1 MB); the rest are named, not shown.

Accessibility (docs/accessibility.md): the page declares its language and title, has one
``h1`` and ``h2`` sections, every table has a caption and ``th`` cells with a ``scope``, and
a figure whose numbers were written beside it (:func:`sslops.plots.data_path`) is followed
by them as a table: the text alternative to the chart.
"""

from __future__ import annotations

import base64
import csv
import html
from dataclasses import dataclass, field
from pathlib import Path

from sslops.markdown import md_cell
from sslops.plots import data_path

HTML_BUDGET = 950_000
INLINE_ROWS = 40  # a figure's numbers up to this many rows are shown in full everywhere


UNDEFINED = "n/a"  # how a document shows an undefined number (the CSV's "nan")


def figure_data(png: Path) -> tuple[list[str], list[list[str]]] | None:
    """The header and rows of the CSV beside ``png``, or None when it has none; an
    undefined value (NaN, written "nan") as :data:`UNDEFINED`."""
    path = data_path(png)
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as fh:
        lines = list(csv.reader(fh))
    rows = [[UNDEFINED if cell == "nan" else cell for cell in row] for row in lines[1:]]
    return (lines[0], rows) if lines else None


def table_captions(blocks: list[tuple]) -> list[str]:
    """Each table's caption: its own, or its section's heading, joined by the paragraph just
    before it when that paragraph introduces it ("candidates:")."""
    out: list[str] = []
    section, previous = "", None
    for block in blocks:
        if block[0] == "h2":
            section = block[1]
        elif block[0] == "table":
            lead = previous[1].strip() if previous and previous[0] == "p" else ""
            derived = section + (f" - {lead.removesuffix(':')}" if lead.endswith(":") else "")
            caption = block[3] if len(block) > 3 and block[3] else derived or "Table"
            repeats = out.count(caption) + sum(c.startswith(f"{caption} (table ") for c in out)
            out.append(caption if not repeats else f"{caption} (table {repeats + 1})")
        previous = block
    return out


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]], caption: str | None = None) -> None:
        """``caption`` names the table in the HTML; without one, its section heading does."""
        self.blocks.append(("table", header, rows, caption))

    def image(self, path: Path, caption: str, ref: str | None = None) -> None:
        """``ref`` is how the Markdown links it (its path inside the bundle); the numbers
        written beside the PNG, if any, are kept to be shown under it."""
        self.blocks.append(("img", path, caption, ref or path.name, figure_data(path)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                out += [f"## {block[1]}", ""]
            elif kind == "p":
                out += [block[1], ""]
            elif kind == "ul":
                out += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                out += [*_md_table(block[1], block[2]), ""]
            elif kind == "img":
                out += [f"![{block[2]}]({block[3]})", "", *_markdown_data(block)]
        return "\n".join(out)

    def html(self) -> str:
        esc = html.escape
        body = [f"<h1>{esc(self.title)}</h1>"]
        # A figure's numbers are text too (the image itself is counted as it is embedded).
        text = sum(len(str(block[4] if block[0] == "img" else block)) for block in self.blocks)
        budget = HTML_BUDGET - 2 * text - 8_000  # escaping and markup roughly double the text
        captions = iter(table_captions(self.blocks))
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                body.append(f"<h2>{esc(block[1])}</h2>")
            elif kind == "p":
                body.append(f"<p>{esc(block[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                body.append(html_table(block[1], block[2], next(captions)))
            elif kind == "img" and 4 * ((block[1].stat().st_size + 2) // 3) > budget:
                body.append(f"<p><em>{esc(block[2])}: {esc(block[3])} in the bundle "
                            "(not embedded: the page would pass 1 MB)</em></p>")  # fmt: skip
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                budget -= len(data)
                alt = block[2] + (" (its numbers are in the table after the figure)"
                                  if block[4] else "")  # fmt: skip
                body.append(
                    f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{esc(block[2])}</figcaption></figure>"
                )
            if kind == "img" and block[4]:
                body.append(_html_data(block))
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
            "color:#1b1f24}table{border-collapse:collapse;margin:.5rem 0 1rem}"
            "th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}"
            "th{background:#f6f8fa}img{max-width:100%}figcaption{color:#57606a;font-size:.9rem}"
            "code{background:#f6f8fa;padding:0 .2rem}"
            "caption{text-align:left;font-weight:600;padding:.25rem 0}"
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(self.title)}</title><style>{style}</style></head>"
            f"<body>{''.join(body)}</body></html>\n"
        )


def html_table(header: list[str], rows: list[list[str]], caption: str) -> str:
    """A data table: a caption, column headers and each row's first cell as its header."""
    esc = html.escape
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<th scope="row">{esc(c)}</th>' if i == 0 else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f"<table><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def figure_data_ref(block: tuple) -> str:
    """Where an image block's numbers are in the bundle (its CSV beside the PNG)."""
    return str(Path(block[3]).with_suffix(".csv"))


def _html_data(block: tuple) -> str:
    header, rows = block[4]
    caption = f"Numbers of the figure '{block[2]}' ({figure_data_ref(block)})"
    table = html_table(header, rows, caption)
    if len(rows) <= INLINE_ROWS:
        return table
    return (f"<details><summary>Numbers of the figure '{html.escape(block[2])}' "
            f"({len(rows):,} rows)</summary>{table}</details>")  # fmt: skip


def _markdown_data(block: tuple) -> list[str]:
    if not block[4]:
        return []
    header, rows = block[4]
    if len(rows) > INLINE_ROWS:
        return [f"Numbers of the figure above: {figure_data_ref(block)} ({len(rows):,} rows).", ""]
    return ["Numbers of the figure above:", "", *_md_table(header, rows), ""]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(map(md_cell, header)) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(map(md_cell, row)) + " |" for row in rows),
    ]
