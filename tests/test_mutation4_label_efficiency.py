"""Mutation round 4 of the label-efficiency summary (``evaluate/label_efficiency.py``): the
per-fraction means over draws, and where an SSL curve catches up with a baseline (at least
as good, a tie included, from that fraction on at every larger one). By hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sslops.config import Config, LabelEfficiencyConfig
from sslops.evaluate.label_efficiency import _crossings, _means, curve_markdown, label_efficiency
from sslops.finetune.stage import stratified_label_subset
from sslops.prepare.dataset import PreparedData
from sslops.pretrain.stage import load_encoder

MEANS = {
    "ssl_linear_probe": {"0.01": 0.70, "0.1": 0.80, "0.5": 0.85, "1.0": 0.90},
    # behind at 1%, tied at 10% and 50%, ahead at 100%: from 10% on
    "logistic_regression": {"0.01": 0.72, "0.1": 0.80, "0.5": 0.85, "1.0": 0.89},
    # ahead at 1%, behind at 10%, then ahead again: from 50% on, not from 1%
    "hist_gradient_boosting": {"0.01": 0.60, "0.1": 0.90, "0.5": 0.80, "1.0": 0.80},
    # always ahead of the probe: no crossing
    "binned_evidence_lr": {"0.01": 0.95, "0.1": 0.95, "0.5": 0.95, "1.0": 0.95},
}


def test_a_crossing_is_the_first_fraction_from_which_ssl_is_at_least_as_good() -> None:
    assert _crossings(MEANS) == {
        "ssl_linear_probe": {
            "logistic_regression": "0.1",
            "hist_gradient_boosting": "0.5",
            "binned_evidence_lr": None,
        }
    }


def test_the_table_names_each_fraction_where_ssl_is_at_least_as_good() -> None:
    rows = [{"fraction": float(f), "labels": 10, "model": m, "roc_auc": v}
            for m, by in MEANS.items() for f, v in by.items()]  # fmt: skip
    text = curve_markdown({"rows": rows, "mean": MEANS, "crossings": _crossings(MEANS)})
    assert (
        "- ssl_linear_probe vs logistic_regression: at 10%, 50%, 100% (from 10%); "
        "hist_gradient_boosting: at 1%, 50%, 100% (from 50%); "
        "binned_evidence_lr: at no fraction (no crossing)."
    ) in text


def test_a_fraction_s_mean_is_the_mean_over_its_draws() -> None:
    # three draws 0.6, 0.7, 0.9 at 10%: mean 0.7333 (the median would be 0.7)
    rows = [{"fraction": 0.1, "model": "ssl_linear_probe", "roc_auc": v} for v in (0.6, 0.7, 0.9)]
    rows.append({"fraction": 1.0, "model": "ssl_linear_probe", "roc_auc": 0.95})
    means = _means(rows)
    assert means["ssl_linear_probe"]["0.1"] == pytest.approx(2.2 / 3)
    assert means["ssl_linear_probe"]["1.0"] == pytest.approx(0.95)


def test_each_draw_trains_on_its_own_label_subset(
    small_config: Config, stage_artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # draw d takes the stratified subset of seed + d: two draws, two subsets, two results
    import sslops.evaluate.label_efficiency as curve_module

    drawn: list[np.ndarray] = []

    def subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
        drawn.append(stratified_label_subset(y, fraction, seed))
        return drawn[-1]

    monkeypatch.setattr(curve_module, "stratified_label_subset", subset)
    cfg = small_config.model_copy(deep=True)
    cfg.evaluate.label_efficiency = LabelEfficiencyConfig(
        fractions=[0.2], draws=2, full_fine_tune=False, ensemble=False
    )
    data = PreparedData(stage_artifacts["prepare"])
    curve = label_efficiency(cfg, data, load_encoder(stage_artifacts["pretrain"]).eval())
    target = data.train.target
    for draw, rows in enumerate(drawn):
        assert np.array_equal(rows, stratified_label_subset(target, 0.2, cfg.seed + draw))
    assert not np.array_equal(np.sort(drawn[0]), np.sort(drawn[1]))
    aucs = [r["roc_auc"] for r in curve["rows"] if r["model"] == "logistic_regression"]
    assert len(aucs) == 2 and aucs[0] != aucs[1]
