"""Cross-fitted gap estimates for the label-dependent constraints (equalized odds, opportunity)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fairlearn.metrics import equalized_odds_difference
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from sslops.config import Config
from sslops.errors import ConfigError
from sslops.finetune.crossfit import CrossFit, gap_crossfit
from sslops.models.tabular import load_classifier
from sslops.prepare import PreparedData
from sslops.pretrain.stage import load_encoder


def test_each_row_is_scored_by_a_head_fitted_without_it() -> None:
    x, y = make_classification(n_samples=300, n_features=5, random_state=0)
    crossfit = CrossFit(y, 4, seed=0)
    seen: dict[int, np.ndarray] = {}

    def fit(fold: int, rows: np.ndarray) -> LogisticRegression:
        seen[fold] = rows
        return LogisticRegression().fit(x[rows], y[rows])

    oof = crossfit.decision(fit, x)
    assert sorted(seen) == [0, 1, 2, 3]
    for fold, (fit_rows, held_out) in enumerate(crossfit.splits):
        assert np.array_equal(seen[fold], fit_rows) and not set(fit_rows) & set(held_out)
        expected = LogisticRegression().fit(x[fit_rows], y[fit_rows]).decision_function(x[held_out])
        np.testing.assert_allclose(oof[held_out], expected)
    assert sorted(np.concatenate([h for _, h in crossfit.splits])) == list(range(len(y)))
    in_sample = LogisticRegression().fit(x, y).decision_function(x)
    sign = 2 * y - 1  # rows a head never saw are scored less confidently right
    assert np.mean(sign * oof) < np.mean(sign * in_sample)


def test_cross_fitting_applies_only_to_gaps_that_need_labels() -> None:
    y = np.array([0] * 50 + [1] * 3)
    assert gap_crossfit("demographic_parity", 5, y, 0) is None
    assert gap_crossfit("equalized_odds", 0, y, 0) is None
    assert gap_crossfit("equalized_odds", 5, np.zeros(10, dtype=int), 0) is None
    folds = gap_crossfit("equal_opportunity", 5, y, 0)
    assert folds is not None and folds.folds == 3  # no more folds than positives


def test_one_fold_is_a_config_error(small_config: Config, tmp_path: Path) -> None:
    from sslops.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(small_config.model_dump(mode="json")))
    with pytest.raises(ConfigError, match="gap_crossfit"):
        load_config(path, ["finetune.fairness.gap_crossfit=1"])


def test_equalized_odds_gaps_pool_validation_and_out_of_fold_rows(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    from sslops.finetune import finetune

    cfg = small_config.model_copy(deep=True)
    fair = cfg.finetune.fairness
    fair.constraint, fair.postprocessing, fair.gap_crossfit = "equalized_odds", False, 3
    out = finetune(cfg, stage_artifacts["prepare"], stage_artifacts["pretrain"], tmp_path / "ft")
    report = json.loads((out / "finetune.json").read_text())["fairness"]
    data = PreparedData(stage_artifacts["prepare"])
    train, val = data.train, data.validation
    labeled = np.load(out / "labeled_rows.npy")
    assert report["gap_rows"]["equalized_odds"] == (
        f"validation ({len(val.target)} rows) + {len(labeled)} labeled training rows scored out "
        "of fold (3 folds; candidates that cannot be refitted cheaply, full fine-tunes, on "
        "validation only)"
    )
    assert all(c["gaps_cross_fitted"] for c in report["candidates"])

    # The ssl probe's gap, recomputed here: its validation predictions, and each labeled row
    # scored by a logistic regression fitted on the other folds of the standardized embedding.
    with torch.no_grad():
        z = load_encoder(stage_artifacts["pretrain"])(torch.from_numpy(train.features))
    zs = ((z - z.mean(0)) / z.std(0).clamp(min=1e-6)).numpy()[labeled]
    y_lab = train.target[labeled]
    oof = CrossFit(y_lab, 3, cfg.seed).decision(
        lambda _, rows: LogisticRegression(C=cfg.finetune.regularization, max_iter=5000).fit(
            zs[rows], y_lab[rows]
        ),
        zs,
    )
    ssl, _ = load_classifier(out, "ssl")
    with torch.no_grad():
        on_val = (ssl(torch.from_numpy(val.features)).numpy() >= 0.5).astype(int)
    predicted = np.concatenate([on_val, (oof >= 0).astype(int)])
    truth = np.concatenate([val.target, y_lab])
    expected = max(
        equalized_odds_difference(
            truth, predicted,
            sensitive_features=np.concatenate(
                [val.groups(c).to_numpy(), train.groups(c).to_numpy()[labeled]]
            ),
        )
        for c in ["sex"]
    )  # fmt: skip
    ssl_row = next(c for c in report["candidates"] if c["name"] == "ssl")
    assert ssl_row["equalized_odds_difference"] == pytest.approx(expected, abs=1e-5)
    on_val_only = equalized_odds_difference(
        val.target, on_val, sensitive_features=val.groups("sex").to_numpy()
    )
    assert ssl_row["equalized_odds_difference"] != pytest.approx(on_val_only, abs=1e-6)
