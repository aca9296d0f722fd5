"""Matplotlib figures saved as PNG (headless backend)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator


def line_plot(
    path: Path, series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str,
    title: str, log_x: bool = False, dashed: Collection[str] = (), x_format: str | None = None,
) -> None:  # fmt: skip
    """One line per series; ``dashed`` series (baselines) drawn dashed; ``x_format`` (e.g.
    ``"{:g}%"``) puts a labeled tick at each x value of the data instead of the default ticks."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=100)
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, marker="o" if log_x else None,
                linestyle="--" if name in dashed else "-")  # fmt: skip
    if log_x:
        ax.set_xscale("log")
    if x_format is not None:
        ticks = sorted({float(v) for x, _ in series.values() for v in x})
        ax.set_xticks(ticks, [x_format.format(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def grouped_bars(
    path: Path, groups: list[str], values: dict[str, list[float]], ylabel: str, title: str
) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=100)
    width = 0.8 / max(len(values), 1)
    for i, (name, vals) in enumerate(values.items()):
        ax.bar([g + i * width for g in range(len(groups))], vals, width, label=name)
    ax.set_xticks([g + width * (len(values) - 1) / 2 for g in range(len(groups))], groups)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
