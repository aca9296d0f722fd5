"""Accessibility of the human-facing reports (docs/accessibility.md): the figures use more than
colour, a colour-blind-safe palette and readable text, and carry their numbers as a table; the
HTML has a language, a title, one h1, no skipped heading level, captioned tables with scoped
headers and meaningful alternative text; the PDF has metadata, bookmarks and tagged figures."""

from __future__ import annotations

import csv
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from sslops.audit.document import Document, table_captions
from sslops.audit.pdf import build_pdf, render_pdf
from sslops.finetune.pareto import Candidate, mark_front, plot_front, select
from sslops.plots import (
    OKABE_ITO,
    bars_figure,
    data_path,
    grouped_bars,
    line_figure,
    line_plot,
)
from sslops.shadow.report import _interval, plot_agreement, plot_scores


def _contrast(colour: str, background: str = "#ffffff") -> float:
    """WCAG 2.1 contrast ratio of two sRGB colours."""

    def luminance(c: str) -> float:
        lin = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in to_rgb(c)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(colour), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _texts(fig: Figure) -> list[Any]:
    return [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize")) if t.get_text()]


SERIES = {
    "ssl": ([1.0, 2.0, 5.0], [0.70, 0.80, 0.85]),
    "mitigated": ([1.0, 2.0, 5.0], [0.68, 0.78, 0.84]),
    "logistic_regression": ([1.0, 2.0, 5.0], [0.60, 0.75, 0.86]),
}


def test_the_palette_is_okabe_ito_and_its_first_colours_keep_3_to_1_on_white() -> None:
    assert set(OKABE_ITO) == {"#0072B2", "#D55E00", "#009E73", "#000000", "#CC79A7", "#E69F00",
                              "#56B4E9", "#F0E442"}  # fmt: skip
    assert all(_contrast(c) >= 3.0 for c in OKABE_ITO[:4])


def test_line_series_differ_by_marker_and_palette_colour_not_colour_alone() -> None:
    fig = line_figure(SERIES, "labels used (%)", "test ROC AUC", "Label efficiency",
                      dashed=("logistic_regression",))  # fmt: skip
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() in SERIES]
    assert len(lines) == 3
    assert len({line.get_marker() for line in lines}) == 3
    assert all(line.get_marker() not in (None, "None", "") for line in lines)
    assert [to_rgb(line.get_color()) for line in lines] == [to_rgb(c) for c in OKABE_ITO[:3]]
    assert [line.get_linestyle() for line in lines] == ["-", "-", "--"]
    # every text (title, labels, ticks, legend) is at least 9 pt
    assert min(t.get_fontsize() for t in _texts(fig)) >= 9


def test_the_legend_sits_outside_the_plotted_area() -> None:
    fig = line_figure(SERIES, "x", "y", "t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))


def test_bars_differ_by_hatch_and_palette_colour() -> None:
    fig = bars_figure(["Female", "Male"], {"ssl": [0.1, 0.3], "mitigated": [0.2, 0.21],
                                            "baseline": [0.15, 0.3]}, "selection rate", "t")  # fmt: skip
    by_series: dict[str, set[tuple[str, tuple[float, ...]]]] = {}
    for container in fig.axes[0].containers:
        for patch in container:
            by_series.setdefault(container.get_label(), set()).add(
                (patch.get_hatch() or "", to_rgb(patch.get_facecolor()))
            )
    styles = [s.pop() for s in by_series.values() if len(s) == 1]
    assert len(styles) == 3 and len({h for h, _ in styles}) == 3
    assert all(c in [to_rgb(p) for p in OKABE_ITO] for _, c in styles)


def test_each_plot_writes_its_numbers_beside_it(tmp_path: Path) -> None:
    line_plot(tmp_path / "curve.png", SERIES, "labels used (%)", "test ROC AUC", "t")
    with data_path(tmp_path / "curve.png").open(encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["series", "labels used (%)", "test ROC AUC"]
    assert rows[1:4] == [["ssl", "1", "0.7000"], ["ssl", "2", "0.8000"], ["ssl", "5", "0.8500"]]
    assert len(rows) == 1 + 9
    grouped_bars(tmp_path / "bars.png", ["F", "M"], {"ssl": [0.1, 0.25]}, "selection rate", "t")
    text = data_path(tmp_path / "bars.png").read_text(encoding="utf-8")
    assert text == "group,ssl: selection rate\nF,0.1000\nM,0.2500\n"


class _Html(HTMLParser):
    """The accessibility facts of a page: what a screen reader user navigates by."""

    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.title = ""
        self.headings: list[int] = []
        self.tables: list[dict[str, Any]] = []
        self.ths: list[dict[str, str | None]] = []
        self.alts: list[str | None] = []
        self.order: list[str] = []  # figure, table and heading order
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._in.append(tag)
        if tag == "html":
            self.lang = a.get("lang")
        elif re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
            self.order.append(tag)
        elif tag == "table":
            self.tables.append({"caption": ""})
            self.order.append("table")
        elif tag == "th":
            self.ths.append(a)
        elif tag == "img":
            self.alts.append(a.get("alt"))
            self.order.append("img")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._in:
            del self._in[len(self._in) - 1 - self._in[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] == "title":
            self.title += data
        elif self._in and self._in[-1] == "caption":
            self.tables[-1]["caption"] += data


def _parse(page: str) -> _Html:
    parser = _Html()
    parser.feed(page)
    return parser


def _check_page(page: _Html) -> None:
    assert page.lang == "en" and page.title.strip()
    assert page.headings.count(1) == 1 and page.headings[0] == 1
    assert all(b - a <= 1 for a, b in zip(page.headings, page.headings[1:], strict=False))
    assert page.tables and all(t["caption"].strip() for t in page.tables)
    assert all(th.get("scope") in {"col", "row"} for th in page.ths)


def _document(tmp_path: Path, rows: int) -> Document:
    curve = {"ssl": (list(range(rows)), [i / rows for i in range(rows)])}
    line_plot(tmp_path / "curve.png", curve, "epoch", "loss", "Pretraining loss")
    doc = Document("A card")
    doc.heading("Metrics")
    doc.table(["model", "accuracy"], [["ssl", "0.8"]])
    doc.paragraph("candidates:")
    doc.table(["name", "gap"], [["a", "0.01"]])
    doc.heading("Figures")
    doc.image(tmp_path / "curve.png", "Pretraining loss by epoch", ref="evidence/curve.png")
    return doc


def test_the_html_has_language_title_headings_captions_and_scoped_headers(tmp_path: Path) -> None:
    page = _parse(_document(tmp_path, 5).html())
    _check_page(page)
    assert [t["caption"] for t in page.tables] == [
        "Metrics", "Metrics - candidates", "Numbers of the figure 'Pretraining loss by epoch' "
        "(evidence/curve.csv)",
    ]  # fmt: skip
    assert page.order[-2:] == ["img", "table"]  # the figure's numbers follow it
    assert page.alts == [
        "Pretraining loss by epoch (its numbers are in the table after the figure)"
    ]


def test_tables_in_one_section_get_distinct_captions() -> None:
    doc = Document("A card")
    doc.heading("Fairness")
    doc.table(["a"], [["1"]])
    doc.paragraph("Shortcut tests.")
    doc.table(["b"], [["2"]])
    doc.table(["c"], [["3"]], caption="Gaps by column")
    assert table_captions(doc.blocks) == ["Fairness", "Fairness (table 2)", "Gaps by column"]


def test_a_long_figure_table_is_folded_in_html_and_named_in_markdown(tmp_path: Path) -> None:
    doc = _document(tmp_path, 60)
    page = doc.html()
    assert "<details><summary>Numbers of the figure 'Pretraining loss by epoch' (60 rows)" in page
    assert page.count('<th scope="row">ssl</th>') == 1 + 60  # the metrics table's and the figure's
    md = doc.markdown()
    assert "Numbers of the figure above: evidence/curve.csv (60 rows)." in md
    short = _document(tmp_path, 3).markdown()
    assert "| series | epoch | loss |\n|---|---|---|\n| ssl | 0 | 0 |" in short


def test_the_pdf_has_metadata_bookmarks_selectable_text_and_tagged_figures(tmp_path: Path) -> None:
    doc = _document(tmp_path, 5)
    pdf = build_pdf(doc)
    assert [s.name for s in pdf._outline] == ["A card", "Metrics", "Figures"]
    pdf.set_compression(False)
    raw = bytes(pdf.output())
    for marker in (b"/Title (A card)", b"/Lang (en)", b"/DisplayDocTitle true", b"/Outlines",
                   b"/Marked true", b"/StructTreeRoot", b"/S /Figure", b"/ToUnicode"):  # fmt: skip
        assert marker in raw, marker
    assert b"/Alt (Pretraining loss by epoch)" in raw
    render_pdf(doc, tmp_path / "card.pdf")
    assert (tmp_path / "card.pdf").read_bytes().startswith(b"%PDF-")


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Figures as they are saved (the plotting functions close them after)."""
    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    return figures


def test_shadow_plots_mark_drift_and_models_by_more_than_colour(captured: list[Figure]) -> None:
    report = {"agreement": {"overall": 0.9, "by_batch": {"b1": {"agreement": 0.95},
                                                         "b2": {"agreement": 0.8}}},
              "drift": {"drifted_batches": ["b2"]}}  # fmt: skip
    plot_agreement(Path("unused.png"), report)
    bars = {p.get_x(): p for p in captured[0].axes[0].patches}
    plain, drifted = (bars[k] for k in sorted(bars))
    assert not plain.get_hatch() and drifted.get_hatch()
    report["drift"]["drifted_batches"] = []
    plot_agreement(Path("unused.png"), report)
    legend = [t.get_text() for t in captured[-1].axes[0].get_legend().get_texts()]
    assert legend == ["overall", "no drift flagged"]
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"candidate_score": rng.random(50), "incumbent_score": rng.random(50),
                         "batch": ["b1"] * 25 + ["b2"] * 25})  # fmt: skip
    plot_scores(Path("unused.png"), rows)
    hists = captured[-1].axes[0].patches
    assert len({p.get_linestyle() for p in hists}) == 2


def test_the_shadow_report_gives_interval_bounds_to_3_decimals_like_the_other_reports() -> None:
    assert _interval(0.95, [0.93, 0.971]) == "0.9500 [0.930, 0.971]"
    assert _interval(0.95, None) == "0.9500"


def test_the_pareto_plot_tells_policy_line_from_front_by_style(captured: list[Figure]) -> None:
    candidates = [Candidate("ssl", "none", 0.0, 0.85, {"dp": 0.2}),
                  Candidate("a", "penalty", 0.0, 0.83, {"dp": 0.01}),
                  Candidate("b", "reduction", 0.0, 0.80, {"dp": 0.005})]  # fmt: skip
    mark_front(candidates, "dp")
    chosen, _ = select(candidates, "dp", 0.02)
    plot_front(Path("unused.png"), candidates, "dp", 0.02, chosen)
    ax = captured[0].axes[0]
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles["Pareto front"] != styles["policy: gap <= 0.02"]
    points = [c for c in ax.collections if c.get_label() in {"none", "penalty", "reduction"}]
    assert all(to_rgb(c.get_facecolor()[0][:3]) in [to_rgb(p) for p in OKABE_ITO] for c in points)


def test_the_model_card_and_metrics_report_pass_the_checks(
    stage_artifacts: dict[str, Path],
) -> None:
    bundle = stage_artifacts["audit"] / "bundle"
    page = _parse((bundle / "model_card.html").read_text(encoding="utf-8"))
    _check_page(page)
    # captions name what is plotted, never the file ("finetune/pareto" was one)
    assert page.alts and all(alt and "/" not in alt and ".png" not in alt for alt in page.alts)
    first = page.order.index("img")
    assert page.order[first - 1] == "h2"  # the figures have their own section
    card = (bundle / "model_card.md").read_text()
    assert "| series | false positive rate | true positive rate |" not in card  # many points
    assert "Numbers of the figure above: evidence/evaluate/roc.csv" in card
    assert (bundle / "evidence/evaluate/roc.csv").is_file()
    assert "| group | ssl: selection rate |" in card  # few: shown in full
    raw = (bundle / "model_card.pdf").read_bytes()
    assert b"/Alt (ROC curves on the test split)" in raw and b"/Lang (en)" in raw
    metrics = (stage_artifacts["evaluate"] / "metrics.md").read_text()
    assert metrics.startswith("# Evaluation metrics (test split)\n")
    assert [line for line in metrics.splitlines() if line.startswith("# ")] == [
        "# Evaluation metrics (test split)"
    ]
    assert "`[low, high]` after a value is its 95% bootstrap interval" in metrics
