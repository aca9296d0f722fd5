"""Matplotlib figures saved as PNG, each with its numbers beside it as CSV.

The figures are read on screens by people who cannot tell red from green and are printed in
greyscale by reviewers, so colour is never the only channel: series differ by marker (lines)
or hatch (bars) as well, colours come from the Okabe-Ito palette (its darker colours first:
they keep 3:1 contrast against white), legends sit outside the plotted area, and no text is
smaller than 9 pt. The CSV beside a PNG (same name) holds the plotted numbers; the audit
documents show it as a table under the figure, the text alternative to the chart.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

# Okabe & Ito (2008), "Color Universal Design": blue, vermillion, bluish green, black, reddish
# purple, orange, sky blue, yellow. The first four reach 3:1 against white (WCAG 1.4.11).
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#000000", "#CC79A7", "#E69F00", "#56B4E9",
             "#F0E442")  # fmt: skip
# Yellow is too light for a line or a small marker on white (1.3:1); it is kept for bars,
# which have black outlines.
ON_WHITE = OKABE_ITO[:-1]
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "--", "oo")
_STYLE: dict[Any, Any] = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9,
          "ytick.labelsize": 9, "legend.fontsize": 9, "figure.dpi": 100}  # fmt: skip


def data_path(png: Path) -> Path:
    """Where a figure's numbers are written: the PNG's name with ``.csv``."""
    return png.with_suffix(".csv")


def _cell(value: str | float) -> str:
    if isinstance(value, str):
        return value
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4f}"


def _write_data(path: Path, header: list[str], rows: Sequence[Sequence[str | float]]) -> None:
    with data_path(path).open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(header)
        out.writerows([_cell(v) for v in row] for row in rows)


# Figures are drawn without pyplot and in matplotlib's default style, leaving the process's
# matplotlib as the program set it: pyplot's backend (matplotlib.use("Agg") here switched a
# notebook's inline backend off for good) and its rcParams, style or matplotlibrc (which
# changed the figures' bytes, so a rebuild of the audit bundle in a notebook differed).
@contextlib.contextmanager
def default_style() -> Iterator[None]:
    """matplotlib's default rcParams within the block (a decorator too), whatever the
    program, a style or a matplotlibrc set: a figure's bytes depend on its data only."""
    with matplotlib.style.context("default"):
        yield


def subplots(nrows: int = 1, ncols: int = 1, **figure: Any) -> tuple[Figure, Any]:
    """A figure and its axes, as ``pyplot.subplots`` gives them, made without pyplot: on an
    Agg canvas of its own, with no backend chosen and the figure registered nowhere."""
    fig = Figure(**figure)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols)


@default_style()
def save(fig: Figure, path: Path) -> None:
    """Write ``fig`` as PNG (no software tag: the bytes depend on the data only)."""
    fig.savefig(path, metadata={"Software": None})


def _axes(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    with matplotlib.rc_context(_STYLE):
        return subplots(figsize=figsize, layout="constrained")


def _legend(ax: Axes) -> None:
    """Outside the axes, right of them: inside it may cover points of the curves."""
    with matplotlib.rc_context(_STYLE):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


@default_style()
def line_figure(
    series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str, title: str,
    log_x: bool = False, dashed: Collection[str] = (), x_format: str | None = None,
) -> Figure:  # fmt: skip
    """One line per series, each with its own colour and marker; ``dashed`` series (baselines)
    drawn dashed; ``x_format`` (e.g. ``"{:g}%"``) puts a labeled tick at each x value of the
    data instead of the default ticks."""
    fig, ax = _axes((7.5 if len(series) > 1 else 6.5, 3.6))
    with matplotlib.rc_context(_STYLE):
        for i, (name, (x, y)) in enumerate(series.items()):
            ax.plot(x, y, label=name, color=ON_WHITE[i % len(ON_WHITE)],
                    marker=MARKERS[i % len(MARKERS)], markersize=5,
                    markevery=max(1, len(x) // 10), linestyle="--" if name in dashed else "-")  # fmt: skip
        if log_x:
            ax.set_xscale("log")
        if x_format is not None:
            ticks = sorted({float(v) for x, _ in series.values() for v in x})
            ax.set_xticks(ticks, [x_format.format(t) for t in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
    if len(series) > 1:
        _legend(ax)
    return fig


def line_plot(
    path: Path, series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str,
    title: str, log_x: bool = False, dashed: Collection[str] = (), x_format: str | None = None,
) -> None:  # fmt: skip
    """:func:`line_figure` saved as ``path``; its points go to the CSV beside it."""
    save(line_figure(series, xlabel, ylabel, title, log_x, dashed, x_format), path)
    rows = [(name, a, b) for name, (x, y) in series.items() for a, b in zip(x, y, strict=True)]
    _write_data(path, ["series", xlabel, ylabel], rows)


@default_style()
def bars_figure(
    groups: list[str], values: dict[str, list[float]], ylabel: str, title: str
) -> Figure:
    """One bar per series and group, each series with its own colour and hatch (black edges:
    the palette's lighter colours keep their outline on white)."""
    fig, ax = _axes((7.5, 3.6))
    colours = [c for c in OKABE_ITO if c != "#000000"]  # a black bar would hide its hatch
    with matplotlib.rc_context(_STYLE):
        width = 0.8 / max(len(values), 1)
        for i, (name, vals) in enumerate(values.items()):
            ax.bar([g + i * width for g in range(len(groups))], vals, width, label=name,
                   color=colours[i % len(colours)], edgecolor="black", linewidth=0.6,
                   hatch=HATCHES[i % len(HATCHES)])  # fmt: skip
        ax.set_xticks([g + width * (len(values) - 1) / 2 for g in range(len(groups))], groups)
        ax.set(ylabel=ylabel, title=title)
        ax.grid(axis="y", alpha=0.3)
    _legend(ax)
    return fig


def grouped_bars(
    path: Path, groups: list[str], values: dict[str, list[float]], ylabel: str, title: str
) -> None:
    """:func:`bars_figure` saved as ``path``; the values go to the CSV beside it (one row per
    group, one column per series)."""
    save(bars_figure(groups, values, ylabel, title), path)
    rows: list[list[str | float]] = [
        [group, *(vals[j] for vals in values.values())] for j, group in enumerate(groups)
    ]
    _write_data(path, ["group", *(f"{name}: {ylabel}" for name in values)], rows)
