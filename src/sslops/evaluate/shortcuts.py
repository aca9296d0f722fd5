"""Shortcut tests: how much a model's decisions depend on columns it should not lean on.

- permutation reliance: shuffle one raw column across the rows (re-encoded as the model
  sees it) and measure the share of decisions that flip and the drop in ROC AUC;
- counterfactual flip: set each row's sensitive attribute to every other observed value
  and measure the share of decisions that change.

A column is flagged when its permutation flips more than ``reliance_threshold`` of the
decisions: a planted feature the model learned to use is flagged; one it ignores is not.
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
    columns: list[str], threshold: float, flag_above: float, seed: int,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    base = score(encoding.transform(frame))
    base_pred = base >= threshold
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for column in columns:
        shuffled = frame.copy()
        shuffled[column] = frame[column].to_numpy()[rng.permutation(len(frame))]
        permuted = score(encoding.transform(shuffled))
        flips = float(np.mean((permuted >= threshold) != base_pred))
        out[column] = {
            "prediction_flip_rate": flips,
            "mean_abs_score_change": float(np.mean(np.abs(permuted - base))),
            "roc_auc_drop": auc(y, base) - auc(y, permuted),
            "flagged": flips > flag_above,
        }
    return out


def counterfactual_flip(
    score: Scorer, frame: pd.DataFrame, encoding: TabularEncoding, column: str, threshold: float
) -> dict[str, Any]:
    """Share of rows whose decision changes when ``column`` takes any other observed value."""
    base_pred = score(encoding.transform(frame)) >= threshold
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
    return {"changed_share": float(changed.mean()), "changed_share_when_set_to": per_value}
