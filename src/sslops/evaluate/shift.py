"""How far the out-of-distribution split is from the test split, and what it costs each model.

- :func:`domain_auc`: the cross-validated ROC AUC of a logistic regression told to tell test
  rows from OOD rows (0.5: the two are indistinguishable, 1.0: fully separated), the usual
  classifier two-sample measure of covariate shift;
- :func:`split_difference`: a metric on test, on OOD, and OOD minus test with a 95% bootstrap
  interval: paired draws of the same rows when the OOD split is a corrupted copy of the test
  split (images, series), independent draws of each split otherwise (tables).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from sslops.evaluate.metrics import percentile_bounds

DOMAIN_ROWS = 5_000
"""At most this many rows of each split go into :func:`domain_auc` (a seeded draw)."""


def domain_auc(a: np.ndarray, b: np.ndarray, seed: int, folds: int = 5) -> float | None:
    """Out-of-fold ROC AUC of a standardized logistic regression separating the rows of ``a``
    from those of ``b`` (2-D arrays, same columns); None when a side has fewer than ``folds``
    rows or there is no column to learn from."""
    from sklearn.metrics import roc_auc_score

    if min(len(a), len(b)) < folds or a.shape[1] == 0:
        return None
    rng = np.random.default_rng(seed)
    a = a[rng.permutation(len(a))[:DOMAIN_ROWS]]
    b = b[rng.permutation(len(b))[:DOMAIN_ROWS]]
    x = np.concatenate([a, b]).astype(np.float64)
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    out = np.zeros(len(y))
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        scaler = StandardScaler().fit(x[fit])
        model = LogisticRegression(max_iter=1000).fit(scaler.transform(x[fit]), y[fit])
        out[held] = model.predict_proba(scaler.transform(x[held]))[:, 1]
    return float(roc_auc_score(y, out))


Metric = Callable[[np.ndarray, np.ndarray], float]


def split_difference(
    metric: Metric, test: tuple[np.ndarray, np.ndarray], ood: tuple[np.ndarray, np.ndarray],
    *, paired: bool, resamples: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """``metric(y, output)`` on ``test`` and on ``ood`` (each ``(y, output)``), and OOD minus
    test with the 2.5th and 97.5th percentiles of ``resamples`` bootstrap draws (``paired``:
    the same row indices for both, which must then have as many rows). Draws where the metric
    is undefined (NaN: one class only) are left out; with fewer than 95% of them left the
    interval is NaN (:func:`sslops.evaluate.metrics.percentile_bounds`)."""
    (y_t, o_t), (y_o, o_o) = test, ood
    if paired and len(y_t) != len(y_o):
        raise ValueError(f"paired splits need as many rows: {len(y_t)} vs {len(y_o)}")
    on_test, on_ood = metric(y_t, o_t), metric(y_o, o_o)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        i = rng.integers(0, len(y_t), len(y_t))
        j = i if paired else rng.integers(0, len(y_o), len(y_o))
        draws.append(metric(y_o[j], o_o[j]) - metric(y_t[i], o_t[i]))
    return {
        "test": on_test,
        "ood": on_ood,
        "difference": on_ood - on_test,
        "difference_interval": percentile_bounds(draws) if resamples else None,
        "paired": paired,
    }


def compare_with_test(
    metrics: dict[str, Metric], test: dict[str, tuple[np.ndarray, np.ndarray]],
    ood: dict[str, tuple[np.ndarray, np.ndarray]], *, paired: bool, resamples: int, seed: int,
) -> dict[str, dict[str, dict[str, Any]]]:  # fmt: skip
    """:func:`split_difference` of every metric for every model (``test`` / ``ood``: model
    name -> ``(y, output)``); every model and metric draws the same rows (one ``seed``)."""
    return {
        name: {
            key: split_difference(
                metric, test[name], ood[name], paired=paired, resamples=resamples, seed=seed
            )
            for key, metric in metrics.items()
        }
        for name in test
    }


def comparison_markdown(ood: dict[str, Any]) -> str:
    """``ood.json``'s shift measure and its test-vs-OOD table, as lines of ``metrics.md``."""
    compared = ood.get("compared_with_test")
    if not compared:
        return ""
    shift = ood.get("shift", {})
    lines = ["", f"Out-of-distribution split ({ood['split']}, {ood['rows']} rows) against "
             "the test split; OOD minus test with its 95% bootstrap interval "
             + ("(paired: the same rows)" if ood.get("paired") else "(each split resampled)")
             + ":", ""]  # fmt: skip
    if shift.get("domain_auc") is not None:
        lines += [f"Shift: a classifier tells OOD from test rows with ROC AUC "
                  f"{shift['domain_auc']:.3f} (0.5: indistinguishable)"
                  + (f", {shift['domain_auc_without_predicate']:.3f} without the columns "
                     "that define the split" if shift.get("domain_auc_without_predicate")
                     is not None else "") + ".", ""]  # fmt: skip
    keys = list(next(iter(compared.values())))
    lines += ["| model | " + " | ".join(f"{k} test | {k} OOD | difference" for k in keys) + " |",
              "|---|" + "---:|" * (3 * len(keys))]  # fmt: skip
    undefined = set()
    for name, row in compared.items():
        cells = []
        for k in keys:
            r = row[k]
            low, high = r["difference_interval"] or (None, None)
            ranged = "" if not _defined(low) else f" [{low:+.3f}, {high:+.3f}]"
            cells += [_shown(r["test"], ".4f"), _shown(r["ood"], ".4f"),
                      _shown(r["difference"], "+.4f") + ranged]  # fmt: skip
            undefined |= {k for side in ("test", "ood") if not _defined(r[side])}
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if undefined:  # printed as "nan" before (found by the numerics review)
        rates = shift.get("positive_rate", {})
        lines += ["", f"n/a: {', '.join(sorted(undefined))} not defined on that split"
                  + (f" (positive rate: test {rates['test']:.4f}, OOD {rates['ood']:.4f}; ROC "
                     "AUC needs rows of both classes)" if "ood" in rates else "") + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _defined(value: Any) -> bool:
    return value is not None and value == value


def _shown(value: Any, spec: str) -> str:
    """A number formatted by ``spec``; n/a when undefined (None or NaN)."""
    return format(value, spec) if _defined(value) else "n/a"
