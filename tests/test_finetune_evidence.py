"""The binned weight-of-evidence head: bins, evidence tables, cross-fitting, and its use in the curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fairlearn.metrics import equalized_odds_difference
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from sslops.config import Config, LabelEfficiencyConfig
from sslops.evaluate.label_efficiency import curve_markdown, label_efficiency
from sslops.export.graph import export_raw_column_onnx, raw_inputs
from sslops.finetune.crossfit import CrossFit
from sslops.finetune.evidence import BinnedEvidenceLogisticRegression, CrossFittedEvidenceScore
from sslops.finetune.stage import fit_ensemble, stratified_label_subset
from sslops.models.tabular import load_classifier, save_classifier
from sslops.models.trees import BoostedStackClassifier
from sslops.prepare.dataset import PreparedData
from sslops.pretrain.stage import load_encoder


def _one_hot(codes: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[codes]


def _u_shaped(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Numeric x0 with a U-shaped effect, x1 with 60% exact zeros, one 3-level categorical."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    x1 = np.where(rng.random(n) < 0.6, 0.0, rng.exponential(size=n))
    level = rng.integers(0, 3, n)
    logit = 1.5 * x0**2 - 1.5 + 0.8 * (x1 > 0) + np.array([-1.0, 0.0, 1.0])[level]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return np.column_stack([x0, x1, _one_hot(level, 3)]), y


LAYOUT = {"column_of": [0, 1, 2, 2, 2], "n_numeric": 2}


def test_it_bends_where_a_linear_model_cannot() -> None:
    x, y = _u_shaped(400, seed=0)
    x_test, y_test = _u_shaped(5000, seed=1)
    unlabeled, _ = _u_shaped(5000, seed=2)
    head = BinnedEvidenceLogisticRegression(**LAYOUT).fit(x, y, X_unlabeled=unlabeled)
    linear = LogisticRegression(max_iter=1000).fit(x, y)
    ours = roc_auc_score(y_test, head.decision_function(x_test))
    theirs = roc_auc_score(y_test, linear.decision_function(x_test))
    assert ours > theirs + 0.1, (ours, theirs)
    assert head.transform(x_test).shape == (5000, 3)  # one evidence feature per raw column
    proba = head.predict_proba(x_test)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert set(head.predict(x_test)) <= {0, 1}


def test_a_value_that_fills_a_bin_keeps_its_own_bin() -> None:
    x, y = _u_shaped(1000, seed=0)
    head = BinnedEvidenceLogisticRegression(**LAYOUT).fit(x, y)
    zeros = head.columns_[1]
    assert zeros.atoms.tolist() == [0.0]
    codes = zeros.codes(x)
    assert len(set(codes[x[:, 1] == 0])) == 1
    assert not set(codes[x[:, 1] == 0]) & set(codes[x[:, 1] != 0])
    assert len(head.columns_[0].atoms) == 0 and len(head.columns_[0].edges) == 6  # 7 bins


def test_categorical_evidence_is_the_smoothed_log_odds_of_the_level() -> None:
    level = np.array([0] * 6 + [1] * 4 + [2] * 10)
    y = np.array([1, 1, 1, 1, 0, 0] + [0, 0, 0, 1] + [1, 0] * 5)
    x = _one_hot(level, 3)
    head = BinnedEvidenceLogisticRegression(column_of=[0, 0, 0], n_numeric=0, alpha=1.0)
    head.fit(x, y)
    prior = y.mean()
    pos = np.array([4, 1, 5, 0]) + 2 * prior
    neg = np.array([2, 3, 5, 0]) + 2 * (1 - prior)
    expected = np.log(pos / pos.sum()) - np.log(neg / neg.sum())
    np.testing.assert_allclose(head.tables_[0], expected)
    # a row with no level set (an unseen category) takes the extra bin
    np.testing.assert_allclose(head.transform(np.zeros((1, 3)))[0, 0], expected[3])


def test_cross_fitted_evidence_does_not_reward_an_identifier() -> None:
    """An ID-like column's in-sample evidence predicts the labels perfectly; out of fold, nothing."""
    rng = np.random.default_rng(0)
    n = 300
    signal = rng.normal(size=n)
    y = (signal + rng.normal(size=n) > 0).astype(int)
    ident = _one_hot(np.arange(n) % 150, 150)  # two rows per level
    x = np.column_stack([signal, ident])
    layout = {"column_of": [0] + [1] * 150, "n_numeric": 1}
    crossed = BinnedEvidenceLogisticRegression(**layout, cv=5).fit(x, y)
    in_sample = BinnedEvidenceLogisticRegression(**layout, cv=1).fit(x, y)
    w_crossed = np.abs(crossed.regression_.coef_[0])
    w_in_sample = np.abs(in_sample.regression_.coef_[0])
    assert w_crossed[1] < w_crossed[0]  # the real signal outweighs the identifier
    assert w_in_sample[1] > w_in_sample[0]  # without cross-fitting the identifier wins


def _stumps(x: np.ndarray, tables: dict[str, np.ndarray]) -> np.ndarray:
    above = x[:, tables["feature"][:, 0]] > tables["threshold"][:, 0]
    return (above * tables["value"][:, 2]).sum(1)


def test_the_decision_function_splits_into_linear_terms_and_stumps() -> None:
    x, y = _u_shaped(500, seed=0)
    head = BinnedEvidenceLogisticRegression(**LAYOUT).fit(x, y)
    assert len(head.columns_[1].atoms) == 1  # the zeros: two stumps
    coef, tables, constant = head.additive_parts()
    x_new, _ = _u_shaped(2000, seed=3)
    x_new[:5, 2:] = 0  # rows with no level set
    got = x_new @ coef + _stumps(x_new, tables) + constant
    np.testing.assert_allclose(got, head.decision_function(x_new), atol=1e-5)
    # a value one float32 ulp away (as the ONNX graph's standardization may leave it) keeps
    # its bin: atoms match within a tolerance, edges sit between the data's values
    x32 = x_new.astype(np.float32)
    nudged = x32.copy()
    nudged[:, :2] = np.nextafter(x32[:, :2], np.float32(np.inf))
    for a, b in ((x32, nudged), (nudged, x32)):
        np.testing.assert_array_equal(head.transform(a.astype(np.float64)),
                                      head.transform(b.astype(np.float64)))  # fmt: skip
        np.testing.assert_allclose(_stumps(a, tables), _stumps(b, tables), atol=1e-6)


def test_the_whole_decision_function_as_stumps_feeds_a_stack_model() -> None:
    """``as_stumps`` folds the one-hot terms in too; a BoostedStackClassifier built from
    :class:`CrossFittedEvidenceScore` scores rows with the full head, in torch."""
    x, y = _u_shaped(500, seed=0)
    x_new, _ = _u_shaped(2000, seed=3)
    x_new[:5, 2:] = 0  # rows with no level set
    head = BinnedEvidenceLogisticRegression(**LAYOUT).fit(x, y)
    tables, constant = head.as_stumps()
    got = _stumps(x_new, tables) + constant
    np.testing.assert_allclose(got, head.decision_function(x_new), atol=1e-5)

    score = CrossFittedEvidenceScore(**LAYOUT, folds=5)
    out_of_fold = score.fit_transform(x, y)
    np.testing.assert_allclose(score.transform(x)[:, 0], score.head_.decision_function(x))
    # each labeled row is scored by a head that did not see it: less confidently right
    sign = 2 * y - 1
    assert np.mean(sign * out_of_fold[:, 0]) < np.mean(sign * score.transform(x)[:, 0])
    np.testing.assert_array_equal(clone(score).fit_transform(x, y), out_of_fold)  # seeded
    coef = np.r_[np.zeros(x.shape[1]), 1.0]  # the head passes the score through
    model = BoostedStackClassifier.from_tables(**score.stack_trees(), coef=coef, intercept=0.0)
    with torch.no_grad():
        logits = model.logits(torch.from_numpy(x_new.astype(np.float32))).numpy()
    np.testing.assert_allclose(logits, score.transform(x_new)[:, 0], atol=1e-4)
    with pytest.raises(ValueError, match="at least 2 rows of each class"):
        clone(score).fit(x[:3], np.array([0, 1, 1]))


def test_settings_follow_scikit_learn_and_bad_input_is_named() -> None:
    head = BinnedEvidenceLogisticRegression(**LAYOUT, n_bins=5, C=0.3)
    assert clone(head).get_params()["n_bins"] == 5
    x, y = _u_shaped(200, seed=0)
    with pytest.raises(ValueError, match=r"Only binary classification is supported.*got 3 classes"):
        head.fit(x, np.arange(200) % 3)
    with pytest.raises(ValueError, match="column_of names 5 features, the matrix has 4"):
        head.fit(x[:, :4], y)
    with pytest.raises(ValueError, match="n_bins must be at least 2"):
        BinnedEvidenceLogisticRegression(**LAYOUT, n_bins=1).fit(x, y)


def test_the_curve_holds_the_joint_probe_the_ensemble_and_the_head_as_a_baseline(
    small_config: Config, stage_artifacts: dict[str, Path]
) -> None:
    cfg = small_config.model_copy(deep=True)
    cfg.evaluate.label_efficiency = LabelEfficiencyConfig(
        fractions=[0.2, 1.0], draws=1, full_fine_tune=False
    )
    data = PreparedData(stage_artifacts["prepare"])
    encoder = load_encoder(stage_artifacts["pretrain"]).eval()
    curve = label_efficiency(cfg, data, encoder)
    assert set(curve["mean"]) == {
        "ssl_linear_probe", "ssl_joint_probe", "ssl_ensemble",
        "logistic_regression", "hist_gradient_boosting", "binned_evidence_lr",
    }  # fmt: skip
    assert all(0.5 < r["roc_auc"] <= 1 for r in curve["rows"])
    assert set(curve["crossings"]["ssl_ensemble"]) == {
        "logistic_regression", "hist_gradient_boosting", "binned_evidence_lr",
    }  # fmt: skip
    table = curve_markdown(curve)
    assert "| ssl_ensemble | SSL |" in table and "| binned_evidence_lr | baseline |" in table
    assert "- ssl_ensemble vs logistic_regression: at " in table
    cfg.evaluate.label_efficiency.ensemble = False
    assert "ssl_ensemble" not in label_efficiency(cfg, data, encoder)["mean"]


def test_the_curve_measures_accuracy_at_the_evaluate_threshold(
    small_config: Config, stage_artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """label_efficiency.json's accuracy was at 0.5 whatever evaluate.threshold said, unlike
    every other accuracy of the run (found by the recompute review)."""
    import sslops.evaluate.label_efficiency as curve_module

    scored: list[np.ndarray] = []

    def auc(y: np.ndarray, score: np.ndarray) -> float:
        scored.append(np.asarray(score))
        return roc_auc_score(y, score)

    monkeypatch.setattr(curve_module, "auc", auc)
    cfg = small_config.model_copy(deep=True)
    cfg.evaluate.threshold = 0.3
    cfg.evaluate.label_efficiency = LabelEfficiencyConfig(
        fractions=[1.0], draws=1, full_fine_tune=False, ensemble=False
    )
    data = PreparedData(stage_artifacts["prepare"])
    curve = label_efficiency(cfg, data, load_encoder(stage_artifacts["pretrain"]).eval())
    y = data.test.target
    assert len(scored) == len(curve["rows"]) == 3
    for row, score in zip(curve["rows"], scored, strict=True):
        assert row["accuracy"] == pytest.approx(np.mean((score >= 0.3) == y), abs=1e-12)
    assert any((np.mean((s >= 0.5) == y) != np.mean((s >= 0.3) == y)) for s in scored)


def test_the_ensemble_is_one_exportable_classifier(
    stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """Its torch logit is the mean of its members'; it round-trips and exports with parity."""
    data = PreparedData(stage_artifacts["prepare"])
    encoder = load_encoder(stage_artifacts["pretrain"]).eval()
    train, test = data.train, data.test
    with torch.no_grad():
        z = encoder(torch.from_numpy(train.features))
        shift, scale = z.mean(0), z.std(0).clamp(min=1e-6)
        zs = ((z - shift) / scale).numpy()
        zs_test = ((encoder(torch.from_numpy(test.features)) - shift) / scale).numpy()
    idx = stratified_label_subset(train.target, 0.2, 0)
    model, joint, evidence = fit_ensemble(
        encoder, train.features, zs, shift.numpy(), scale.numpy(), idx, data.encoding,
        train.target[idx], 0.1,
    )  # fmt: skip
    expected = (
        joint.decision_function(np.hstack([test.features, zs_test]))
        + evidence.decision_function(test.features)
    ) / 2
    with torch.no_grad():
        logit = model.logits(torch.from_numpy(test.features)).numpy()
    np.testing.assert_allclose(logit, expected, atol=1e-4)
    save_classifier(model, tmp_path, "ssl", {"threshold": 0.5})
    loaded, arch = load_classifier(tmp_path, "ssl")
    assert arch["kind"] == "boosted_stack"
    path = tmp_path / "ssl.onnx"
    export_raw_column_onnx(data.encoding, loaded, path, 18)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, raw_inputs(data.encoding, test.frame))[0]
    with torch.no_grad():
        torch_proba = model(torch.from_numpy(test.features)).numpy()
    assert np.max(np.abs(got - torch_proba)) <= 1e-5
    assert np.array_equal(got >= 0.5, torch_proba >= 0.5)


def test_finetune_deploys_the_ensemble_as_ssl(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    from sslops.finetune import finetune

    cfg = small_config.model_copy(deep=True)
    cfg.finetune.transfer = "ensemble"
    cfg.finetune.fairness.constraint = "none"
    out = finetune(cfg, stage_artifacts["prepare"], stage_artifacts["pretrain"], tmp_path / "ft")
    report = json.loads((out / "finetune.json").read_text())
    assert report["transfer"] == "ensemble"
    ssl, arch = load_classifier(out, "ssl")
    assert arch["kind"] == "boosted_stack" and arch["transfer"] == "ensemble"
    test = PreparedData(stage_artifacts["prepare"]).test
    with torch.no_grad():
        proba = ssl(torch.from_numpy(test.features)).numpy()
    assert roc_auc_score(test.target, proba) > 0.8


def test_the_ensembles_equalized_odds_is_cross_fitted(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """With gap_crossfit, the ensemble's labeled rows are scored by ensembles fitted without them."""
    from sslops.finetune import finetune

    cfg = small_config.model_copy(deep=True)
    cfg.finetune.transfer = "ensemble"
    fair = cfg.finetune.fairness
    fair.constraint, fair.postprocessing, fair.gap_crossfit = "equalized_odds", False, 3
    fair.penalties, fair.reductions, fair.grid_search, fair.boosted = [0.0], [], 0, None
    out = finetune(cfg, stage_artifacts["prepare"], stage_artifacts["pretrain"], tmp_path / "ft")
    report = json.loads((out / "finetune.json").read_text())["fairness"]
    ssl_row = next(c for c in report["candidates"] if c["name"] == "ssl")
    assert ssl_row["gaps_cross_fitted"]

    data = PreparedData(stage_artifacts["prepare"])
    train, val = data.train, data.validation
    labeled = np.load(out / "labeled_rows.npy")
    y_lab = train.target[labeled]
    encoder = load_encoder(stage_artifacts["pretrain"]).eval()
    with torch.no_grad():
        z = encoder(torch.from_numpy(train.features))
    shift, scale = z.mean(0), z.std(0).clamp(min=1e-6)
    zs = ((z - shift) / scale).numpy()
    oof = np.empty(len(labeled))
    for fit_rows, held in CrossFit(y_lab, 3, cfg.seed).splits:
        model, _, _ = fit_ensemble(
            encoder, train.features, zs, shift.numpy(), scale.numpy(), labeled[fit_rows],
            data.encoding, y_lab[fit_rows], cfg.finetune.joint_regularization,
        )  # fmt: skip
        with torch.no_grad():
            oof[held] = model.logits(torch.from_numpy(train.features[labeled[held]])).numpy()
    ssl, _ = load_classifier(out, "ssl")
    with torch.no_grad():
        on_val = (ssl(torch.from_numpy(val.features)).numpy() >= 0.5).astype(int)
    expected = equalized_odds_difference(
        np.concatenate([val.target, y_lab]),
        np.concatenate([on_val, (oof >= 0).astype(int)]),
        sensitive_features=np.concatenate(
            [val.groups("sex").to_numpy(), train.groups("sex").to_numpy()[labeled]]
        ),
    )
    assert ssl_row["equalized_odds_difference"] == pytest.approx(expected, abs=1e-5)
