"""The model card as a PDF (fpdf2), from the same :class:`Document` as the Markdown and HTML.

Text is set in DejaVu Sans, the TrueType font matplotlib ships, so any Unicode in
group names or titles prints and nothing is fetched. Tables repeat their header on
each page; plots are scaled to the text width.

For readers with assistive technology (docs/accessibility.md): the file declares its title
(shown instead of the file name), language and subject; each heading is a bookmark; each
plot is a tagged figure with its caption as alternative text, followed by its numbers (a
table when short, else the CSV's name in the bundle). fpdf2 tags figures only: headings,
paragraphs and tables carry no structure tags, so the PDF is not PDF/UA; the HTML is the
accessible version.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
from fpdf import FPDF, ViewerPreferences
from fpdf.fonts import FontFace

from sslops.audit.document import INLINE_ROWS, Document, figure_data_ref

_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


class _CardPdf(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(format="A4")
        self.card_title = title
        self.add_font("dejavu", "", str(_FONTS / "DejaVuSans.ttf"))
        self.add_font("dejavu", "B", str(_FONTS / "DejaVuSans-Bold.ttf"))
        self.set_auto_page_break(auto=True, margin=15)
        self.set_margins(15, 15, 15)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("dejavu", "", 7)
        self.set_text_color(110)
        self.cell(0, 5, f"{self.card_title} — page {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0)


def _table(pdf: _CardPdf, header: list[str], rows: list[list[str]]) -> None:
    pdf.set_font("dejavu", "", 7.5 if len(header) > 4 else 8.5)
    widths = [max(len(h), *(len(r[i]) for r in rows), 4) for i, h in enumerate(header)] if rows \
        else [len(h) for h in header]  # fmt: skip
    capped = [min(max(w, 9), 60) for w in widths]
    with pdf.table(
        col_widths=tuple(capped),
        headings_style=FontFace(emphasis="BOLD", fill_color=(236, 239, 243)),
        line_height=4.2,
        text_align="LEFT",
        first_row_as_headings=True,
    ) as table:
        for row in [header, *rows]:
            cells = table.row()
            for value in row:
                cells.cell(value)
    pdf.ln(3)


def _figure_data(pdf: _CardPdf, block: tuple) -> None:
    """The numbers under a plot: a table when short, else where the CSV is in the bundle."""
    if not block[4]:
        return
    header, rows = block[4]
    if len(rows) <= INLINE_ROWS:
        _table(pdf, header, rows)
        return
    pdf.set_font("dejavu", "", 8)
    pdf.multi_cell(0, 4, f"Numbers of this figure: {figure_data_ref(block)} in the bundle "
                   f"({len(rows):,} rows).", align="L")  # fmt: skip
    pdf.ln(2)


def build_pdf(doc: Document) -> FPDF:
    """The laid-out card; :func:`render_pdf` writes it."""
    pdf = _CardPdf(doc.title)
    pdf.set_creation_date(datetime.now(UTC))
    pdf.set_title(doc.title)
    pdf.set_lang("en")
    pdf.set_subject("Model card")
    pdf.set_creator("sslops")
    pdf.viewer_preferences = ViewerPreferences(display_doc_title=True)
    pdf.add_page()
    pdf.start_section(doc.title, level=0)
    pdf.set_font("dejavu", "B", 15)
    pdf.multi_cell(0, 7, doc.title, align="L")
    pdf.ln(2)
    for block in doc.blocks:
        kind = block[0]
        if kind == "h2":
            if pdf.get_y() > pdf.h - 40:
                pdf.add_page()
            pdf.ln(2)
            pdf.start_section(block[1], level=1)
            pdf.set_font("dejavu", "B", 11.5)
            pdf.multi_cell(0, 6, block[1], align="L")
            pdf.ln(1)
        elif kind == "p":
            pdf.set_font("dejavu", "", 9)
            pdf.multi_cell(0, 4.6, block[1], align="L")
            pdf.ln(1.5)
        elif kind == "ul":
            pdf.set_font("dejavu", "", 9)
            for item in block[1]:
                pdf.set_x(pdf.l_margin + 2)
                pdf.multi_cell(0, 4.6, f"•  {item}", align="L")
            pdf.ln(1.5)
        elif kind == "table":
            _table(pdf, block[1], block[2])
        elif kind == "img":
            width = pdf.epw * 0.8
            if pdf.get_y() > pdf.h - 15 - width * 0.62:
                pdf.add_page()
            pdf.image(str(block[1]), x=pdf.l_margin + pdf.epw * 0.1, w=width, alt_text=block[2])
            pdf.set_font("dejavu", "", 8)
            pdf.set_text_color(90)
            pdf.multi_cell(0, 4, block[2], align="C")
            pdf.set_text_color(0)
            pdf.ln(2)
            _figure_data(pdf, block)
    return pdf


def render_pdf(doc: Document, path: Path) -> None:
    pdf = build_pdf(doc)
    with warnings.catch_warnings():
        # fpdf2 warns about font subsetting details that do not affect the output.
        warnings.simplefilter("ignore")
        pdf.output(str(path))
