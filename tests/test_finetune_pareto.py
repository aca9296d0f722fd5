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
    decides_one_class,
    fairness_gap,
    gap_upper_bound,
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


def test_gaps_leave_out_a_group_without_positives_and_the_bound_stays_above() -> None:
    """A group without positives has no true-positive rate: the selection's gap is taken
    over the other groups (fairlearn would count it as 0, so a model predicting few
    positives looked fair), and the upper bound is at or above the measured gap."""
    from fairlearn.metrics import equal_opportunity_difference, equalized_odds_difference

    from sslops.evaluate.metrics import model_metrics
    from sslops.finetune.pareto import fairness_gap, fairness_gaps, gap_upper_bound

    rng = np.random.default_rng(7)
    race = np.array(["white"] * 300 + ["black"] * 100 + ["amer-indian"] * 25)
    y = np.concatenate([rng.random(400) < 0.3, np.zeros(25, bool)]).astype(int)
    score = np.clip(0.4 * y + rng.random(425) * 0.7, 0, 1)
    predicted = (score >= 0.5).astype(int)
    groups = {"sex": rng.choice(["f", "m"], 425), "race": race}
    known = race != "amer-indian"
    expected = equal_opportunity_difference(
        y[known], predicted[known], sensitive_features=race[known]
    )
    only_race = {"race": race}
    assert fairness_gap("equal_opportunity", y, predicted, only_race) == pytest.approx(expected)
    assert equal_opportunity_difference(y, predicted, sensitive_features=race) > expected + 0.3
    # the evaluate stage reports the same numbers
    evaluated = model_metrics(y, score, 0.5, only_race)
    gaps = fairness_gaps(y, predicted, only_race)
    assert gaps == pytest.approx({
        "demographic_parity": evaluated["dp_difference"],
        "equalized_odds": evaluated["eo_difference"],
        "equal_opportunity": evaluated["eopp_difference"],
    })  # fmt: skip
    for name in ("demographic_parity", "equalized_odds", "equal_opportunity"):
        for columns in (only_race, groups):
            gap = fairness_gap(name, y, predicted, columns)
            assert gap_upper_bound(name, y, predicted, columns, 0.95) >= gap, name
    # two models with equal TPRs in the groups that have positives, one finding 80% of them
    # and one 4%, and no false positives: counting the missing TPR as 0 made the second the
    # fairer (0.8 vs 0.04), so the selection took it; over the defined groups both are ~0
    found = []
    for rate in (0.8, 0.04):
        hits = np.zeros(425, dtype=int)
        for group in ("white", "black"):
            rows = np.flatnonzero((race == group) & (y == 1))
            hits[rows[: round(rate * len(rows))]] = 1
        found.append(hits)
    old = [equal_opportunity_difference(y, h, sensitive_features=race) for h in found]
    new = [fairness_gap("equal_opportunity", y, h, only_race) for h in found]
    assert old[0] > 0.75 and old[1] < 0.1 and max(new) < 0.02
    candidates = [
        Candidate(str(i), "penalty", 0.0, float(np.mean(h == y)), {"equal_opportunity": gap})
        for i, (h, gap) in enumerate(zip(found, new, strict=True))
    ]  # fmt: skip
    assert select(candidates, "equal_opportunity", 0.02)[0].name == "0"
    # every group with both classes: fairlearn's numbers
    sex = groups["sex"]
    assert fairness_gap("equalized_odds", y, predicted, {"sex": sex}) == pytest.approx(
        equalized_odds_difference(y, predicted, sensitive_features=sex)
    )
    assert fairness_gap("equal_opportunity", y, predicted, {"sex": sex}) == pytest.approx(
        equal_opportunity_difference(y, predicted, sensitive_features=sex)
    )


def test_two_class_gaps_are_the_tabular_ones_with_a_group_without_positives() -> None:
    from sslops.evaluate.multiclass import GAP_OF, class_gaps
    from sslops.finetune.pareto import class_gap_upper_bounds, fairness_gap, gap_upper_bound

    rng = np.random.default_rng(11)
    groups = np.array(["a"] * 150 + ["b"] * 120 + ["c"] * 30 + ["d"] * 20)
    y = np.concatenate([rng.integers(0, 2, 270), np.zeros(30, int), np.ones(20, int)])
    predicted = np.where(rng.random(320) < 0.75, y, 1 - y)
    measured = class_gaps(y, predicted, groups, 2)
    bounds = class_gap_upper_bounds(y, predicted, groups, 2, 0.95)
    for name, key in GAP_OF.items():
        gap = fairness_gap(name, y, predicted, {"g": groups})
        assert measured[key] == pytest.approx(gap), name
        assert bounds[name] == pytest.approx(gap_upper_bound(name, y, predicted, {"g": groups},
                                                             0.95))  # fmt: skip
        assert bounds[name] >= gap


def test_upper_bounds_leave_out_the_rows_of_small_groups() -> None:
    from sslops.gaps import EXCLUDED, without_small_groups

    rng = np.random.default_rng(0)
    y, predicted = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    groups = rng.choice(np.array(["a", "b"]), 400)
    groups[:3], predicted[:3] = "tiny", 1
    masked = without_small_groups(groups, 10)
    assert set(masked[:3]) == {EXCLUDED} and set(masked[3:]) <= {"a", "b"}
    kept = slice(3, None)
    for name in ("demographic_parity", "equalized_odds"):
        bound = gap_upper_bound(name, y, predicted, {"s": masked}, 0.9)
        assert bound == pytest.approx(
            gap_upper_bound(name, y[kept], predicted[kept], {"s": groups[kept]}, 0.9)
        )
        assert fairness_gap(name, y, predicted, {"s": masked}) == pytest.approx(
            fairness_gap(name, y[kept], predicted[kept], {"s": groups[kept]})
        )


def test_a_candidate_deciding_one_class_is_taken_only_when_no_other_qualifies() -> None:
    """With a rare positive class the constant "no" has the majority's accuracy and every gap
    0: it won every policy while deciding nothing (the imbalanced-data review)."""

    def pool(*rows: tuple[str, float, float, float]) -> list[Candidate]:
        return [Candidate(n, "penalty", 0.0, acc, {DP: gap}, selection_rate=rate)
                for n, acc, gap, rate in rows]  # fmt: skip

    constant = ("always-no", 0.98, 0.0, 0.0)
    assert select(pool(constant, ("decides", 0.95, 0.01, 0.03)), DP, 0.02)[0].name == "decides"
    # nothing that decides within the gap: the constant is what meets the policy
    chosen, met = select(pool(constant, ("decides", 0.95, 0.04, 0.03)), DP, 0.02)
    assert (chosen.name, met) == ("always-no", True)
    # nothing within (a bound no gap meets): the fairest candidate that decides
    chosen, met = select(pool(("always-yes", 0.02, 0.0, 1.0), ("decides", 0.95, 0.04, 0.03),
                              ("worse", 0.96, 0.09, 0.05)), DP, -1.0)  # fmt: skip
    assert (chosen.name, met) == ("decides", False)
    # selection rate unknown (older candidates): as before
    assert not decides_one_class(Candidate("x", "penalty", 0.0, 0.9, {DP: 0.0}))


def test_an_undefined_gap_never_meets_the_policy() -> None:
    """A gap with fewer than two groups to compare counted 0.0, so every candidate met
    max_gap on a gap nobody measured and finetune.json said policy_met_on_validation: true
    (the strict-JSON review). Now it is NaN: never within, on no front, not the fairest."""
    from sslops.finetune.pareto import undefined_gap_note

    nan = float("nan")
    y = np.array([0, 0, 1, 1, 0, 0, 0, 0])  # group b has no positive row: no TPR difference
    groups = {"sex": np.array(["a"] * 4 + ["b"] * 4)}
    predicted = np.array([0, 1, 1, 0, 0, 0, 1, 0])
    assert np.isnan(fairness_gap("equal_opportunity", y, predicted, groups))
    eo = fairness_gap("equalized_odds", y, predicted, groups)  # its FPR half alone
    assert eo == pytest.approx(abs(1 / 2 - 1 / 4))
    pool = [Candidate("accurate", "penalty", 0.0, 0.9, {DP: nan}),
            Candidate("measured", "penalty", 0.0, 0.7, {DP: 0.3}),
            Candidate("undefined", "penalty", 0.0, 0.8, {DP: nan})]  # fmt: skip
    chosen, met = select(pool, DP, 0.05)  # nothing within: the smallest measured gap
    assert (chosen.name, met) == ("measured", False)
    mark_front(pool, DP)
    assert [c.on_front for c in pool] == [False, True, False]
    chosen, met = select([pool[0], pool[2]], DP, 0.05)  # none measured: the most accurate
    assert (chosen.name, met) == ("accurate", False)
    note = undefined_gap_note(chosen, DP)
    assert note is not None and "the policy cannot be checked and is not met" in note
    assert undefined_gap_note(pool[1], DP) is None
    # an upper bound that is undefined is not within either
    bounded = Candidate("b", "penalty", 0.0, 0.9, {DP: 0.0}, upper={DP: nan})
    assert select([bounded], DP, 0.05)[1] is False


def test_the_front_plot_draws_candidates_whose_gaps_are_all_undefined(tmp_path: Path) -> None:
    """No gap to place on the x axis: the plot still draws (it raised TypeError on the empty
    list of gaps when a degenerate candidate was cut off below the front)."""
    pool = [Candidate("ssl", "none", 0.0, 0.85, {DP: float("nan")}),
            Candidate("grid", "grid_search", 0.0, 0.30, {DP: float("nan")})]  # fmt: skip
    mark_front(pool, DP)
    chosen, met = select(pool, DP, 0.02)
    assert (chosen.name, met) == ("ssl", False)
    plot_front(tmp_path / "front.png", pool, DP, 0.02, chosen)
    with Image.open(tmp_path / "front.png") as image:
        assert image.size[0] > 0


def test_the_card_lists_an_undefined_candidate_gap_as_n_a() -> None:
    """finetune.json holds an undefined gap as null; the card's candidate table read it as
    the text "None" (build_card passes the candidates through null_as_nan)."""
    from sslops.artifacts import null_as_nan
    from sslops.audit.card import _generic_json
    from sslops.audit.document import Document

    doc = Document("t")
    rows = [{"name": "ssl", "equal_opportunity_difference": None, "deployable": True}]
    _generic_json(doc, "finetune.json (fairness candidates)", {"candidates": null_as_nan(rows)})
    assert "| ssl | n/a | True |" in doc.markdown()
