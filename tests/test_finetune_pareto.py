"""The Pareto front, the selection policy and the front's plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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


def test_gap_upper_bound_is_the_attaining_pair_plus_z_standard_errors() -> None:
    from statistics import NormalDist

    from sslops.finetune.pareto import fairness_gap, gap_upper_bound

    group = np.array(["a"] * 100 + ["b"] * 50 + ["c"] * 80)
    hits = np.concatenate([np.arange(100) < 60, np.arange(50) < 20, np.arange(80) < 36])
    y = np.zeros(len(group))
    gap = fairness_gap(DP, y, hits.astype(int), {"g": group})
    assert abs(gap - 0.2) < 1e-12  # a 0.60, b 0.40, c 0.45
    qa, qb = 61 / 102, 21 / 52  # smoothed (k + 1) / (n + 2)
    z = NormalDist().inv_cdf(0.95)
    expected = 0.2 + z * np.sqrt(qa * (1 - qa) / 100 + qb * (1 - qb) / 50)
    assert abs(gap_upper_bound(DP, y, hits.astype(int), {"g": group}, 0.95) - expected) < 1e-12
    # equalized odds: the larger of the true- and false-positive-rate bounds, per column
    y = np.concatenate([np.ones(100), np.zeros(130)])
    g2 = {"g": np.array(["a", "b"] * 115)}
    eo = gap_upper_bound("equalized_odds", y, hits.astype(int), g2, 0.9)
    tpr = gap_upper_bound("equal_opportunity", y, hits.astype(int), g2, 0.9)
    fpr = gap_upper_bound("equal_opportunity", 1 - y, hits.astype(int), g2, 0.9)
    assert eo == max(tpr, fpr) and eo > fairness_gap("equalized_odds", y, hits.astype(int), g2)


def test_class_gap_upper_bounds_reduce_to_the_binary_bound_and_cover_the_k_class_gaps() -> None:
    """Images and series: with two classes the K-class bounds are the tabular ones; with ten,
    each bound is at or above its measured gap (class_gaps) and grows with confidence."""
    from sslops.evaluate.multiclass import GAP_OF, class_gaps
    from sslops.finetune.pareto import GAPS, class_gap_upper_bounds, gap_upper_bound

    rng = np.random.default_rng(3)
    groups = rng.choice(["thin", "mid", "thick"], 600)
    y2, pred2 = rng.integers(0, 2, 600), rng.integers(0, 2, 600)
    two = class_gap_upper_bounds(y2, pred2, groups, 2, 0.95)
    for name in GAPS:
        assert two[name] == pytest.approx(gap_upper_bound(name, y2, pred2, {"g": groups}, 0.95))
    y10 = rng.integers(0, 10, 600)
    pred10 = np.where(rng.random(600) < 0.7, y10, rng.integers(0, 10, 600))
    measured = class_gaps(y10, pred10, groups, 10)
    low, high = (class_gap_upper_bounds(y10, pred10, groups, 10, c) for c in (0.8, 0.99))
    for name, key in GAP_OF.items():
        assert measured[key] < low[name] < high[name], name


def test_gap_upper_bound_covers_the_true_gap_at_its_level() -> None:
    """2,000 samples of two groups of 1,000 rows whose true selection rates differ by 0.10:
    the 95% bound is at or above 0.10 in about 95% of them (+-1% at 2,000 draws). Near a
    zero gap the measured |difference| is biased upward, so the bound is conservative."""
    from sslops.finetune.pareto import gap_upper_bound

    rng = np.random.default_rng(0)

    def coverage(rates: tuple[float, float], true_gap: float) -> float:
        group = np.repeat(["f", "m"], 1000)
        rate = np.where(group == "f", *rates)
        return float(np.mean([
            gap_upper_bound(DP, group, (rng.random(2000) < rate).astype(int), {"sex": group},
                            0.95) >= true_gap
            for _ in range(2000)
        ]))  # fmt: skip

    assert 0.935 <= coverage((0.30, 0.40), 0.10) <= 0.965
    assert coverage((0.30, 0.31), 0.01) >= 0.95


def test_policy_compares_the_upper_bound_when_there_is_one() -> None:
    candidates = _candidates()
    candidates[1].upper = {DP: 0.031}  # "a": measured 0.015, bound over the policy
    chosen, met = select(candidates, DP, 0.02)
    assert (chosen.name, met) == ("b", True)  # no bound: its measured gap 0.018 qualifies
    row = candidates[1].row()
    assert row["demographic_parity_difference"] == 0.015
    assert row["demographic_parity_upper_bound"] == 0.031
