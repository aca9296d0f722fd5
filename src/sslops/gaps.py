"""Between-group rate differences (fairness gaps), one definition for every stage.

:func:`rate_gaps` is what the evaluate stage reports and what the finetune selection
compares with ``max_gap``; the bootstrap intervals use the same :func:`code_gaps` on each
resample. numpy only, so that :mod:`sslops.evaluate` and :mod:`sslops.finetune` can both
import it without importing each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# A group too small to compare (fewer rows than ``evaluate.min_group_rows``): its rows keep
# this label in the arrays the gaps are taken over, and no gap counts them. No cell of a
# table reads like it (a NUL byte).
EXCLUDED = "\x00small group"


def small_groups(groups: np.ndarray, min_rows: int) -> list[str]:
    """The groups of ``groups`` with fewer than ``min_rows`` rows, sorted."""
    names, counts = np.unique(np.asarray(groups, dtype=str), return_counts=True)
    return [str(n) for n in names[counts < min_rows]]


def without_small_groups(groups: np.ndarray, min_rows: int) -> np.ndarray:
    """``groups`` as strings with the rows of groups under ``min_rows`` rows relabelled
    :data:`EXCLUDED`, so that the gaps leave them out: one group of 3 rows made a
    demographic-parity gap of 0.20 where the groups with rows enough differed by 0.02."""
    values = np.asarray(groups, dtype=str)
    small = small_groups(values, min_rows)
    return np.where(np.isin(values, small), EXCLUDED, values) if small else values


def group_codes(groups: np.ndarray) -> np.ndarray:
    """Each row's group as an integer 0..n-1 (the groups' string forms, sorted); -1 for the
    rows of :data:`EXCLUDED`."""
    names, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    codes = codes.reshape(-1)
    found = np.flatnonzero(names == EXCLUDED)
    if len(found):  # looked up, not assumed first: a group named "" sorts before NUL
        at = int(found[0])
        codes = np.where(codes == at, -1, codes - (codes > at))
    return codes


def rate_gap(
    hit: np.ndarray, codes: np.ndarray, mask: np.ndarray, n_groups: int, undefined: float = 0.0
) -> float:
    """Largest minus smallest share of ``hit`` within ``mask``, over the groups with rows in
    ``mask`` (a group without any has no rate and is left out); ``undefined`` (0.0) with
    fewer than two."""
    total = np.bincount(codes[mask], minlength=n_groups)
    hits = np.bincount(codes[mask], weights=hit[mask], minlength=n_groups)
    rates = hits[total > 0] / total[total > 0]
    return float(rates.max() - rates.min()) if len(rates) > 1 else undefined


def code_gaps(
    y: np.ndarray, predicted: np.ndarray, codes: np.ndarray, undefined: float = 0.0
) -> dict[str, float]:
    """:func:`rate_gaps` with the groups already as :func:`group_codes` (rows coded -1, a
    small group's, are left out). ``undefined`` is a gap with fewer than two groups where its
    rate is defined: 0.0 for the point estimates; NaN for a bootstrap draw, which then leaves
    that draw out of the interval rather than counting it as no gap (equalized odds, the
    larger of its two differences, is undefined only where both are)."""
    y = np.asarray(y)
    if len(codes) and codes.min() < 0:
        kept = codes >= 0
        y, predicted, codes = y[kept], np.asarray(predicted)[kept], codes[kept]
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    predicted = np.asarray(predicted, dtype=float)
    tpr_gap = rate_gap(predicted, codes, y == 1, n_groups, undefined)
    fpr_gap = rate_gap(predicted, codes, y == 0, n_groups, undefined)
    return {
        "dp_difference": rate_gap(
            predicted, codes, np.ones(len(y), dtype=bool), n_groups, undefined
        ),
        "eo_difference": float(np.fmax(tpr_gap, fpr_gap)),  # the larger defined one
        "eopp_difference": tpr_gap,
    }


def rate_gaps(
    y: np.ndarray, predicted: np.ndarray, groups: np.ndarray, undefined: float = 0.0
) -> dict[str, float]:
    """Demographic-parity, equalized-odds and equal-opportunity differences over one column.

    Each is the largest minus the smallest group rate: selection rate (dp), the larger of
    the true- and false-positive-rate differences (eo), the true-positive rate (eopp). A
    rate is taken only over the groups where it is defined: a group without positive rows
    has no true-positive rate and one without negative rows no false-positive rate, and
    is left out of that difference (fairlearn counts such a rate as 0, so one group
    without positives made the gap the largest TPR, and a model that predicts few
    positives look fair). With fewer than two groups where a rate is defined the
    difference is ``undefined``: NaN for what the evaluate stage reports (:func:`gap_notes`
    says why; a 0.0000 there read as a measured absence of a gap) and for the finetune
    selection (never within max_gap); 0.0 only where a caller asks for it. Where every
    group has both classes the values equal fairlearn's demographic_parity_difference,
    equalized_odds_difference and equal_opportunity_difference.
    """
    y = np.asarray(y)
    return code_gaps(y, np.asarray(predicted), group_codes(np.asarray(groups)), undefined)


# Each gap's rate, the rows it is taken over and the gap's name, for gap_notes.
_GAP_RATES = {
    "dp_difference": ("selection rate", "rows", "demographic-parity difference"),
    "eopp_difference": ("true-positive rate", "positive rows", "equal-opportunity difference"),
}


def gap_notes(y: np.ndarray, groups: np.ndarray) -> dict[str, str]:
    """Why a gap of :func:`rate_gaps` over ``groups`` is undefined (fewer than two groups
    where its rate is defined), keyed as rate_gaps; empty when every gap is defined. The
    equalized-odds difference is undefined when both its TPR and its FPR differences are,
    and is the defined one alone when one is: that gets a note too."""
    y, values = np.asarray(y), np.asarray(groups, dtype=str)
    kept = values != EXCLUDED
    y, values = y[kept], values[kept]

    def undefined(mask: np.ndarray, rate: str, rows: str, name: str) -> str | None:
        found = sorted({str(v) for v in values[mask]})
        if len(found) > 1:
            return None
        which = f"only {found[0]!r} has {rows}" if found else f"none has {rows}"
        return (f"{name} undefined: it compares the groups' {rate}s, and of the groups "
                f"compared {which}")  # fmt: skip

    notes = {}
    for key, (rate, rows, name) in _GAP_RATES.items():
        mask = np.ones(len(y), dtype=bool) if key == "dp_difference" else y == 1
        note = undefined(mask, rate, rows, name)
        if note:
            notes[key] = note
    fpr = undefined(y == 0, "false-positive rate", "negative rows", "the FPR difference")
    tpr = notes.get("eopp_difference")
    if tpr and fpr:
        notes["eo_difference"] = "equalized-odds difference undefined: " + "; ".join(
            n.split(": ", 1)[1] for n in (tpr, fpr)
        )
    elif tpr or fpr:
        part, other = ("true", "false") if tpr else ("false", "true")
        notes["eo_difference"] = (
            f"equalized-odds difference is the {other}-positive-rate difference alone: the "
            f"{part}-positive-rate difference is undefined (fewer than two groups compared "
            f"have {'positive' if tpr else 'negative'} rows)"
        )
    return notes


# The group each gap's rate is worst for, named beside the gaps in metrics.md and the model
# card: the lowest selection rate (DP) and the lowest true-positive rate (the group whose
# positives are most often missed).
WORST_OFF = {"selection_rate": "lowest selection rate", "tpr": "lowest TPR"}


def lowest_rate(groups: dict[str, Any], key: str, min_rows: int = 0) -> tuple[str, float] | None:
    """The group of a per-group table with the lowest ``key``, among those with ``min_rows``
    rows or more and the rate defined, and that rate; None when no group has it."""
    rated = [(str(g), float(r[key])) for g, r in groups.items()
             if r.get("count", 0) >= min_rows and isinstance(r.get(key), float)
             and r[key] == r[key]]  # fmt: skip
    return min(rated, key=lambda item: item[1]) if rated else None
