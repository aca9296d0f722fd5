"""A small document model rendered both to Markdown and to self-contained HTML.

The HTML embeds images as data URIs and carries its own CSS: the KFP UI shows it
in a sandbox and air-gapped clusters have no CDN, so it must reference nothing.
Images are embedded while the page stays under ``HTML_BUDGET`` bytes (the KFP UI
renders HTML artifacts up to about 1 MB); the rest are named, not shown.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from sslops.markdown import md_cell

HTML_BUDGET = 950_000


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

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, path: Path, caption: str, ref: str | None = None) -> None:
        """``ref`` is how the Markdown links it (its path inside the bundle)."""
        self.blocks.append(("img", path, caption, ref or path.name))

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
                out.append("| " + " | ".join(map(md_cell, block[1])) + " |")
                out.append("|" + "---|" * len(block[1]))
                out += ["| " + " | ".join(map(md_cell, row)) + " |" for row in block[2]] + [""]
            elif kind == "img":
                out += [f"![{block[2]}]({block[3]})", ""]
        return "\n".join(out)

    def html(self) -> str:
        esc = html.escape
        body = [f"<h1>{esc(self.title)}</h1>"]
        text = sum(len(str(block)) for block in self.blocks if block[0] != "img")
        budget = HTML_BUDGET - 2 * text - 8_000  # escaping and markup roughly double the text
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                body.append(f"<h2>{esc(block[1])}</h2>")
            elif kind == "p":
                body.append(f"<p>{esc(block[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
                rows = "".join(
                    "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                    for row in block[2]
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img" and 4 * ((block[1].stat().st_size + 2) // 3) > budget:
                body.append(f"<p><em>{esc(block[2])}: {esc(block[3])} in the bundle "
                            "(not embedded: the page would pass 1 MB)</em></p>")  # fmt: skip
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                budget -= len(data)
                body.append(
                    f'<figure><img alt="{esc(block[2])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{esc(block[2])}</figcaption></figure>"
                )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
            "color:#1b1f24}table{border-collapse:collapse;margin:.5rem 0 1rem}"
            "th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}"
            "th{background:#f6f8fa}img{max-width:100%}figcaption{color:#57606a;font-size:.9rem}"
            "code{background:#f6f8fa;padding:0 .2rem}"
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(self.title)}</title><style>{style}</style></head>"
            f"<body>{''.join(body)}</body></html>\n"
        )
