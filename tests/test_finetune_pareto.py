"""The Pareto front, the selection policy and the front's plot."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from sslops.finetune.pareto import (
    MARKERS,
    MECHANISMS,
    Candidate,
    mark_front,
    plot_floor,
    plot_front,
    select,
)

DP = "demographic_parity"


def _candidates() -> list[Candidate]:
    rows = [  # name, mechanism, accuracy, gap
        ("ssl", "none", 0.85, 0.20),
        ("a", "penalty", 0.83, 0.015),
        ("b", "penalty", 0.82, 0.018),  # dominated by a
        ("c", "evidence_penalty", 0.81, 0.004),
        ("d", "grid_search", 0.46, 0.90),  # degenerate: predicts one class
        ("e", "postprocessing", 0.84, 0.01),
    ]
    out = [Candidate(n, m, 0.0, acc, {DP: gap}) for n, m, acc, gap in rows]
    out[-1].deployable = False
    return out


def test_front_and_policy() -> None:
    candidates = _candidates()
    mark_front(candidates, DP)
    assert {c.name for c in candidates if c.on_front} == {"ssl", "e", "c"}
    chosen, met = select(candidates, DP, 0.02)
    assert (chosen.name, met) == ("a", True)  # e is more accurate but not deployable
    chosen, met = select(candidates, DP, 0.001)
    assert (chosen.name, met) == ("c", False)  # nothing within: the fairest deployable


def test_every_mechanism_has_words_and_a_marker() -> None:
    assert set(MECHANISMS) == set(MARKERS)


def test_plot_keeps_the_front_in_view(tmp_path: Path) -> None:
    candidates = _candidates()
    mark_front(candidates, DP)
    chosen, _ = select(candidates, DP, 0.02)
    floor, hidden = plot_floor(candidates, chosen)
    assert abs(floor - 0.79) < 1e-12 and [c.name for c in hidden] == ["d"]
    path = tmp_path / "pareto.png"
    plot_front(path, candidates, DP, 0.02, chosen)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (850, 420)
