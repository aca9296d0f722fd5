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
    cfg.finetune.transfer = "linear_probe"  # the ssl model recomputed below is the probe
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


def test_grid_search_points_are_fairlearns_own_logistic_regressions() -> None:
    import warnings

    from fairlearn.metrics import demographic_parity_difference
    from fairlearn.reductions import DemographicParity, GridSearch

    from sslops.finetune.estimators import GridSearchLogisticRegression

    rng = np.random.default_rng(0)
    x, y = make_classification(n_samples=600, n_features=6, random_state=1)
    group = np.where(rng.random(len(y)) < 0.3 * y + 0.35, "a", "b")  # tied to the label
    x = np.column_stack([x, group == "a"]).astype(np.float64)
    grid = GridSearchLogisticRegression(grid_size=7).fit(x, y, sensitive_features=group)
    assert grid.coefs_.shape == (7, x.shape[1]) and grid.lambdas_.shape[0] == 7
    assert len(grid.multipliers_) == 7 and {} in grid.multipliers_  # lambda = 0: plain loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = GridSearch(LogisticRegression(max_iter=2000), DemographicParity(), grid_size=7)
        search.fit(x, y, sensitive_features=group)
    for i, predictor in enumerate(search.predictors_):
        assert np.array_equal(grid.point(i).predict(x), predictor.predict(x))
    assert np.array_equal(grid.predict(x), search.predict(x))  # fairlearn's own pick
    plain = LogisticRegression(max_iter=2000).fit(x, y).predict(x)
    gaps = [
        demographic_parity_difference(y, grid.point(i).predict(x), sensitive_features=group)
        for i in range(7)
    ]
    fairest = int(np.argmin(gaps))  # a real trade-off point, not a constant predictor
    assert gaps[fairest] < demographic_parity_difference(y, plain, sensitive_features=group) / 2
    assert np.any(grid.coefs_[fairest] != 0)
    assert np.mean(grid.point(fairest).predict(x) == y) > 0.75


def test_stage_offers_every_grid_point_as_a_candidate(stage_artifacts: dict[str, Path]) -> None:
    fairness = json.loads((stage_artifacts["finetune"] / "finetune.json").read_text())["fairness"]
    points = [c for c in fairness["candidates"] if c["mechanism"] == "grid_search"]
    assert len(points) == 11  # finetune.fairness.grid_search's default
    assert sum("fairlearn's pick" in c["name"] for c in points) == 1
    assert len({c["demographic_parity_difference"] for c in points}) > 1


def test_grid_search_needs_two_groups_and_the_stage_skips_it_otherwise(small_config) -> None:
    from sslops.finetune.estimators import GridSearchLogisticRegression
    from sslops.finetune.stage import _grid_search_candidates

    x, y = make_classification(n_samples=200, n_features=4, random_state=0)
    one_group = np.full((len(y), 1), "Female", dtype=object)
    with pytest.raises(ValueError, match="at least 2 sensitive groups"):
        GridSearchLogisticRegression().fit(x, y, sensitive_features=one_group[:, 0])
    called = []
    out = _grid_search_candidates(
        small_config,
        x,
        y,
        one_group,
        None,
        lambda *a: called.append(a),
        None,  # type: ignore[arg-type]
    )
    assert out == [] and called == []
