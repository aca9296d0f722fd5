"""Shortcut tests: how much a model's decisions depend on columns it should not lean on.

- permutation reliance: shuffle one raw column across the rows (re-encoded as the model
  sees it), several times, and measure the mean share of decisions that flip and the mean
  drop in ROC AUC;
- counterfactual flip: set each row's sensitive attribute to every other observed value
  and measure the share of decisions that change. Every other column keeps its value,
  correlated proxies included (on Adult, ``relationship`` = Husband / Wife carries ``sex``):
  the test measures *direct* use of the attribute only, and a model that is not given the
  attribute changes no decision by construction. Each result says which case it is
  (``model_input``, ``scope``), so that 0% is not read as "the model does not use the
  attribute" or "the model is fair".

A column is flagged when its permutations flip more than ``reliance_threshold`` of the
decisions on average: a planted feature the model learned to use is flagged; one it ignores is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from sslops.data.encoding import TabularEncoding
from sslops.evaluate.metrics import auc

Scorer = Callable[[np.ndarray], np.ndarray]


def permutation_reliance(
    score: Scorer, frame: pd.DataFrame, encoding: TabularEncoding, y: np.ndarray,
    columns: list[str], threshold: float, flag_above: float, seed: int, repeats: int = 10,
    resamples: int = 200, *, base: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each column shuffled ``repeats`` times; the means decide the flag. One shuffle's flip
    rate varies from draw to draw (by about 0.002 on 16k rows), so a column near the
    threshold would be flagged by one seed and not by another.

    ``prediction_flip_rate_interval`` is the 95% percentile interval of the mean flip rate
    over ``resamples`` bootstrap draws of the rows (each row's share of the shuffles that
    flipped it): what another test sample of the same size could have measured. The flag
    compares the mean with ``flag_above``; ``flag_uncertain`` says when the interval holds
    ``flag_above``, i.e. when another test sample could have decided the other way.

    ``base``: ``score(encoding.transform(frame))`` where the caller has it already (the
    evaluate stage scores the unchanged rows once for this and :func:`counterfactual_flip`)."""
    base = score(encoding.transform(frame)) if base is None else base
    base_pred = base >= threshold
    base_auc = auc(y, base)
    rng = np.random.default_rng(seed)
    rows = np.random.default_rng([seed, 1])  # its own stream: the shuffles stay as they were
    out: dict[str, dict[str, Any]] = {}
    for column in columns:
        flips, changes, drops = [], [], []
        per_row = np.zeros(len(frame))
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[column] = frame[column].to_numpy()[rng.permutation(len(frame))]
            permuted = score(encoding.transform(shuffled))
            flipped = (permuted >= threshold) != base_pred
            per_row += flipped / repeats
            flips.append(float(np.mean(flipped)))
            changes.append(float(np.mean(np.abs(permuted - base))))
            drops.append(base_auc - auc(y, permuted))
        mean_flips = float(np.mean(flips))
        bounds = mean_interval(per_row, resamples, rows)
        out[column] = {
            "prediction_flip_rate": mean_flips,
            "prediction_flip_rate_sd": float(np.std(flips, ddof=1)) if repeats > 1 else 0.0,
            "prediction_flip_rate_interval": bounds,
            "mean_abs_score_change": float(np.mean(changes)),
            "roc_auc_drop": float(np.mean(drops)),
            "repeats": repeats,
            "flagged": mean_flips > flag_above,
            "flag_uncertain": bounds is not None and bounds[0] <= flag_above < bounds[1],
        }
    return out


def mean_interval(
    values: np.ndarray, resamples: int, rng: np.random.Generator
) -> list[float] | None:
    """The 2.5th and 97.5th percentiles of the mean of ``values`` over ``resamples``
    bootstrap draws of its rows; None without draws or rows."""
    if resamples == 0 or len(values) == 0:
        return None
    means = [
        float(values[rng.integers(0, len(values), len(values))].mean()) for _ in range(resamples)
    ]
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def counterfactual_scope(column: str, model_input: bool) -> str:
    """What :func:`counterfactual_flip`'s share of ``column`` can and cannot show, in words."""
    if not model_input:
        return (
            f"'{column}' is not a model input: setting it changes no decision by construction. "
            "The 0 says nothing about proxies of it among the inputs (see the permutation "
            "test of evaluate.proxies) nor about the gaps between its groups."
        )
    return (
        f"direct use of '{column}' only: every other column, its correlated proxies "
        "included, keeps its value, so use of the attribute through proxies is not "
        "measured; a small share is not evidence that the model is fair (the gaps are)."
    )


def counterfactual_flip(
    score: Scorer, frame: pd.DataFrame, encoding: TabularEncoding, column: str, threshold: float,
    *, base: np.ndarray | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Share of rows whose decision changes when ``column`` takes any other observed value,
    with whether ``column`` is a model input at all and :func:`counterfactual_scope`.
    ``base``: the unchanged rows' scores, as :func:`permutation_reliance` takes them."""
    base_pred = (score(encoding.transform(frame)) if base is None else base) >= threshold
    values = frame[column].dropna().unique()
    changed = np.zeros(len(frame), dtype=bool)
    per_value = {}
    for value in values:
        others = frame[column] != value
        swapped = frame.copy()
        swapped[column] = value
        differs = (score(encoding.transform(swapped)) >= threshold) != base_pred
        differs &= others.to_numpy()
        per_value[str(value)] = float(differs[others.to_numpy()].mean()) if others.any() else 0.0
        changed |= differs
    inputs = {c.name for c in encoding.numeric} | {c.name for c in encoding.categorical}
    model_input = column in inputs
    return {
        "changed_share": float(changed.mean()),
        "changed_share_when_set_to": per_value,
        "model_input": model_input,
        "scope": counterfactual_scope(column, model_input),
    }
