"""Accuracy-vs-fairness candidates: gaps, the Pareto front, selection by policy, the plot."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from sslops.gaps import EXCLUDED, rate_gaps
from sslops.plots import OKABE_ITO, ON_WHITE, default_style, save, subplots

# Each gap's key in sslops.gaps.rate_gaps (fairlearn's definitions, except that
# a group without positives has no true-positive rate and one without negatives no false-
# positive rate, and is left out of those differences rather than counted as 0).
GAPS = {
    "demographic_parity": "dp_difference",
    "equalized_odds": "eo_difference",
    "equal_opportunity": "eopp_difference",
}

# What each candidate mechanism is, in words for the report and the model card.
MECHANISMS = {
    "none": "the SSL model as transferred, no fairness mitigation",
    "penalty": "a logistic head on the SSL embedding trained with an in-training fairness penalty",
    "reduction": "fairlearn ExponentiatedGradient over the SSL embedding, distilled to one "
    "deterministic logistic head",
    "grid_search": "one point of a fairlearn GridSearch over the SSL embedding (a logistic "
    "regression)",
    "boosted_penalty": "a logistic head over the encoded features and cross-fitted boosted-tree "
    "log-odds, trained with an in-training fairness penalty",
    "boosted_reduction": "fairlearn ExponentiatedGradient over the encoded features and "
    "cross-fitted boosted-tree log-odds, distilled to one deterministic logistic head",
    "evidence_penalty": "a logistic head over the encoded features and the cross-fitted binned "
    "weight-of-evidence score, trained with an in-training fairness penalty",
    "evidence_reduction": "fairlearn ExponentiatedGradient over the encoded features and the "
    "cross-fitted binned weight-of-evidence score, distilled to one deterministic logistic head",
    "reweighting": "group DRO: a logistic head on the SSL embedding trained with the worst "
    "group's loss up-weighted",
    "postprocessing": "fairlearn ThresholdOptimizer group thresholds (needs the sensitive "
    "attribute at prediction time; never deployed)",
}

MARKERS = {"penalty": "o", "reduction": "s", "boosted_penalty": "^", "boosted_reduction": "v",
           "evidence_penalty": "<", "evidence_reduction": ">", "reweighting": "P",
           "grid_search": "*", "none": "D", "postprocessing": "x"}  # fmt: skip


def fairness_gaps(
    y: np.ndarray, predicted: np.ndarray, groups: dict[str, np.ndarray]
) -> dict[str, float]:
    """Each gap's largest value over the given sensitive columns."""
    return {name: fairness_gap(name, y, predicted, groups) for name in GAPS}


def fairness_gap(
    name: str, y: np.ndarray, predicted: np.ndarray, groups: dict[str, np.ndarray]
) -> float:
    """One gap (a key of ``GAPS``), its largest value over the given sensitive columns.

    Per column as :func:`sslops.gaps.rate_gaps` (the evaluate stage's gaps): a
    group without positives (negatives) is left out of the true- (false-) positive-rate
    difference. A column with fewer than two groups where the rate is defined has no gap,
    and then neither has the largest: NaN, which :func:`select` never counts as within
    ``max_gap`` (it had counted 0.0, so every candidate met the policy on a gap nobody
    measured; found by the strict-JSON review).
    """
    key = GAPS[name]
    y, predicted = np.asarray(y), np.asarray(predicted)
    return largest_gap(
        rate_gaps(y, predicted, np.asarray(g), math.nan)[key] for g in groups.values()
    )


def largest_gap(values: Iterable[float]) -> float:
    """The largest of ``values``; NaN when any is (the largest is then unknown)."""
    found = list(values)
    return math.nan if any(math.isnan(v) for v in found) else max(found)


def gap_upper_bound(
    name: str, y: np.ndarray, predicted: np.ndarray, groups: dict[str, np.ndarray],
    confidence: float,
) -> float:  # fmt: skip
    """One-sided upper confidence bound of one gap, largest over the sensitive columns.

    Normal approximation: the difference between the two groups that attain the gap plus
    z(confidence) times the standard error of that difference, each group's rate smoothed as
    (k + 1) / (n + 2) for its variance, so that a group of a few rows never looks certain.
    Equalized odds takes the larger of its true- and false-positive-rate bounds. (The bound is
    for the attaining pair; with many groups it is not corrected for multiple comparisons.)
    As in :func:`fairness_gap`, a group without positives (negatives) has no true- (false-)
    positive rate and is left out; fewer than two groups with the rate give NaN (no bound
    of a gap that is undefined; equalized odds is then its other half's bound), so the bound
    is never below the measured gap (for ``confidence`` >= 0.5).
    """
    if name not in GAPS:
        raise ValueError(f"unknown gap {name!r}; expected one of {sorted(GAPS)}")
    z = NormalDist().inv_cdf(confidence)
    y, predicted = np.asarray(y), np.asarray(predicted)
    bounds = []
    for column in groups.values():
        g = np.asarray(column)
        if name == "demographic_parity":
            bounds.append(_rate_gap_upper(predicted, g, z))
            continue
        tpr = _rate_gap_upper(predicted[y == 1], g[y == 1], z)
        fpr = _rate_gap_upper(predicted[y == 0], g[y == 0], z)
        bounds.append(tpr if name == "equal_opportunity" else float(np.fmax(tpr, fpr)))
    return largest_gap(bounds)


def class_gap_upper_bounds(
    y: np.ndarray, predicted: np.ndarray, groups: np.ndarray, classes: int, confidence: float
) -> dict[str, float]:
    """Upper confidence bounds of a K-class model's gaps over one group column.

    The gaps are :func:`sslops.evaluate.multiclass.class_gaps`' (the largest, over classes,
    of a between-group difference of a one-vs-rest rate); each class's rate difference gets
    the bound of :func:`gap_upper_bound` and the largest bound is the gap's. With two classes
    this is exactly ``gap_upper_bound`` with class 1 as the positive class. Keys are
    ``GAPS``' names; NaN where the gap is undefined (no class's difference is), as there.
    """
    z = NormalDist().inv_cdf(confidence)
    y, predicted, groups = np.asarray(y), np.asarray(predicted), np.asarray(groups)
    dp = tpr = fpr = eopp = math.nan  # a class whose difference is undefined is left out
    for c in range(classes):
        hit, positive = predicted == c, y == c
        dp = float(np.fmax(dp, _rate_gap_upper(hit, groups, z)))
        tpr_c = _rate_gap_upper(hit[positive], groups[positive], z)
        tpr = float(np.fmax(tpr, tpr_c))
        fpr = float(np.fmax(fpr, _rate_gap_upper(hit[~positive], groups[~positive], z)))
        if classes > 2 or c == 1:
            eopp = float(np.fmax(eopp, tpr_c))
    return {"demographic_parity": dp, "equalized_odds": float(np.fmax(tpr, fpr)),
            "equal_opportunity": eopp}  # fmt: skip


def _rate_gap_upper(hit: np.ndarray, groups: np.ndarray, z: float) -> float:
    """Upper bound of (largest - smallest) share of ``hit`` over the groups with rows (but
    :data:`sslops.gaps.EXCLUDED`, the rows of groups too small to compare)."""
    kept = np.asarray(groups, dtype=str) != EXCLUDED
    hit, groups = np.asarray(hit)[kept], np.asarray(groups)[kept]
    names, index = np.unique(groups, return_inverse=True)
    if len(names) < 2:
        return math.nan
    n = np.bincount(index, minlength=len(names)).astype(float)
    k = np.bincount(index, weights=np.asarray(hit, dtype=float), minlength=len(names))
    rate = k / n
    a, b = int(np.argmax(rate)), int(np.argmin(rate))
    q = (k + 1) / (n + 2)
    se = float(np.sqrt(q[a] * (1 - q[a]) / n[a] + q[b] * (1 - q[b]) / n[b]))
    return float(rate[a] - rate[b]) + z * se


@dataclass
class Candidate:
    name: str
    mechanism: str  # "penalty", "reduction", "boosted_penalty", "evidence_reduction", "none", ...
    strength: float
    accuracy: float
    gaps: dict[str, float]
    deployable: bool = True
    on_front: bool = False
    cross_fitted: bool = False  # label-dependent gaps also over out-of-fold training rows
    extra: dict[str, Any] = field(default_factory=dict)
    upper: dict[str, float] = field(default_factory=dict)  # finetune.fairness.gap_confidence
    selection_rate: float | None = None  # share of validation rows predicted positive

    def policy_gap(self, constraint: str) -> float:
        """The figure the policy compares with max_gap: the upper bound when there is one."""
        return self.upper.get(constraint, self.gaps[constraint])

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mechanism": self.mechanism,
            "strength": self.strength,
            "validation_accuracy": round(self.accuracy, 5),
            **(
                {}
                if self.selection_rate is None
                else {"validation_selection_rate": round(self.selection_rate, 5)}
            ),
            **{f"{k}_difference": round(v, 5) for k, v in self.gaps.items()},
            **{f"{k}_upper_bound": round(v, 5) for k, v in self.upper.items()},
            "deployable": self.deployable,
            "on_pareto_front": self.on_front,
            "gaps_cross_fitted": self.cross_fitted,
        }


def mark_front(candidates: list[Candidate], constraint: str) -> None:
    """A candidate is on the front when no other is at least as accurate and at least as fair;
    one whose gap is undefined (NaN) is on no front."""
    measured = [c for c in candidates if not math.isnan(c.gaps[constraint])]
    for c in candidates:
        c.on_front = not math.isnan(c.gaps[constraint]) and not any(
            o is not c
            and o.accuracy >= c.accuracy
            and o.gaps[constraint] <= c.gaps[constraint]
            and (o.accuracy > c.accuracy or o.gaps[constraint] < c.gaps[constraint])
            for o in measured
        )


def select(candidates: list[Candidate], constraint: str, max_gap: float) -> tuple[Candidate, bool]:
    """Highest validation accuracy among deployable candidates within the gap; else the fairest.

    The gap compared is each candidate's :meth:`Candidate.policy_gap` (its upper confidence
    bound with ``finetune.fairness.gap_confidence``, else the measured gap). A candidate that
    decides the same for every validation row (:func:`decides_one_class`) is taken only when no
    other is there to take: its gaps are 0 because it treats everyone alike, and with a rare
    positive class its accuracy is the majority's, so it would win every policy while
    deciding nothing (found by the imbalanced-data review). A gap that is undefined (NaN:
    fewer than two groups to compare, :func:`fairness_gap`) is never within ``max_gap``;
    when no candidate's gap is defined the policy is not met and the most accurate is taken
    (:func:`undefined_gap_note` says why)."""
    deployable = [c for c in candidates if c.deployable]
    deciding = [c for c in deployable if not decides_one_class(c)] or deployable
    within = [c for c in deployable if c.policy_gap(constraint) <= max_gap]
    within = [c for c in within if not decides_one_class(c)] or within
    if within:
        return max(within, key=lambda c: (c.accuracy, -c.policy_gap(constraint))), True
    measured = [c for c in deciding if not math.isnan(c.policy_gap(constraint))]
    if measured:
        return min(measured, key=lambda c: (c.policy_gap(constraint), -c.accuracy)), False
    return max(deciding, key=lambda c: c.accuracy), False


def undefined_gap_note(
    chosen: Candidate, constraint: str,
    rows: str = "the rows it is measured on (fairness.gap_rows)",
    remedy: str = "label more rows of the missing class, or set finetune.fairness.gap_crossfit "
    "to measure it on the labeled training rows too",
) -> str | None:  # fmt: skip
    """Why the policy is not met when the selected candidate's gap is undefined, else None."""
    if not math.isnan(chosen.policy_gap(constraint)):
        return None
    return (
        f"the {constraint} gap of the selected candidate {chosen.name!r} is undefined on "
        f"{rows}: fewer than two groups of a sensitive "
        "column have the rate it compares, so the policy cannot be checked and is not met; "
        "a candidate whose gap is "
        f"undefined never counts as within max_gap ({remedy})"
    )


def decides_one_class(candidate: Candidate) -> bool:
    """Whether the candidate predicts one class for every validation row (unknown: no)."""
    return candidate.selection_rate in (0.0, 1.0)


def one_class_note(chosen: Candidate, rows: int) -> str | None:
    """Why the selected candidate's validation figures say little when it predicts one class
    for every validation row (a rare positive class at the default threshold), else None."""
    if not decides_one_class(chosen):
        return None
    decided = "negative" if chosen.selection_rate == 0.0 else "positive"
    return (
        f"the selected candidate {chosen.name!r} predicts {decided} for all {rows:,} validation "
        f"rows: its validation accuracy ({chosen.accuracy:.4f}) is that of always predicting "
        f"{decided}, and its fairness gaps are 0 because it decides the same for everyone; "
        "with a rare positive class, lower evaluate.threshold (the decision threshold every "
        "candidate is selected and evaluated at) or raise finetune.label_fraction"
    )


def selection_rule(gap_confidence: float | None) -> str:
    """:func:`select`'s rule in words, for ``finetune.json`` and the model card."""
    compared = "gap" if gap_confidence is None else (
        f"{gap_confidence:.0%} upper confidence bound of the gap"
    )  # fmt: skip
    return (
        f"highest validation accuracy among deployable candidates whose {compared} is within "
        f"max_gap - selection_margin; otherwise the smallest {compared}; a candidate that "
        "predicts one class for every validation row only when no other qualifies"
    )


def plot_floor(candidates: list[Candidate], chosen: Candidate) -> tuple[float, list[Candidate]]:
    """The plot's lowest accuracy and the candidates below it.

    Degenerate candidates (a GridSearch point that predicts one class) would squash the front
    into a corner: the axes keep the front and the pick, and say what they leave out.
    """
    floor = min(c.accuracy for c in candidates if c.on_front or c is chosen) - 0.02
    return floor, [c for c in candidates if c.accuracy < floor]


@default_style()
def plot_front(
    path: Path, candidates: list[Candidate], constraint: str, max_gap: float, chosen: Candidate,
    gap_rows: str = "validation",
) -> None:  # fmt: skip
    """The accuracy-vs-gap scatter; ``gap_rows`` names where the gaps were measured."""
    fig, ax = subplots(figsize=(8.5, 4.2), dpi=100)
    for i, (mechanism, marker) in enumerate(MARKERS.items()):
        pts = [c for c in candidates if c.mechanism == mechanism]
        if pts:
            label = mechanism + (
                " (needs sensitive attr.)" if mechanism == "postprocessing" else ""
            )
            ax.scatter([c.gaps[constraint] for c in pts], [c.accuracy for c in pts],  # NaN: left out
                       marker=marker, label=label, alpha=0.8,
                       color=ON_WHITE[i % len(ON_WHITE)])  # fmt: skip
    front = sorted((c for c in candidates if c.on_front), key=lambda c: c.gaps[constraint])
    ax.plot([c.gaps[constraint] for c in front], [c.accuracy for c in front], "k--", lw=1,
            label="Pareto front")  # fmt: skip
    # Told apart from the front by line style, not colour alone (greyscale print).
    ax.axvline(
        max_gap, color=OKABE_ITO[1], lw=1.5, linestyle=":", label=f"policy: gap <= {max_gap}"
    )
    ax.scatter([chosen.gaps[constraint]], [chosen.accuracy], s=160, facecolors="none",
               edgecolors="black", linewidths=1.5, label="selected")  # fmt: skip
    ax.set(xlabel=f"{constraint.replace('_', ' ')} difference ({gap_rows})",
           ylabel="accuracy (validation)", title="Accuracy vs fairness")  # fmt: skip
    floor, hidden = plot_floor(candidates, chosen)
    if hidden:
        shown = [c.gaps[constraint] for c in candidates
                 if c.accuracy >= floor and not math.isnan(c.gaps[constraint])]  # fmt: skip
        ax.set_ylim(bottom=floor)
        ax.set_xlim(left=-0.01, right=1.08 * max([*shown, max_gap]))
        ax.set_title(f"Accuracy vs fairness\n({len(hidden)} candidate(s) below accuracy "
                     f"{floor:.2f} not shown)", fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save(fig, path)
