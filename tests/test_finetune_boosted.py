"""Boosted-stack fairness candidates: the cross-fitted score, the torch trees, export, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError

from sslops.export import raw_inputs
from sslops.export.graph import export_raw_column_onnx
from sslops.finetune.boosting import CrossFittedBoostingScore
from sslops.finetune.evidence import CrossFittedEvidenceScore
from sslops.models.tabular import EncoderSpec, MLPEncoder, load_classifier, save_classifier
from sslops.models.trees import BoostedStackClassifier
from sslops.prepare import PreparedData


@pytest.fixture(scope="module")
def toy() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=0)
    return x.astype(np.float32), y


def test_training_scores_are_out_of_fold_and_new_rows_use_the_full_booster(toy) -> None:
    x, y = toy
    score = CrossFittedBoostingScore(max_iter=30, folds=3)
    out_of_fold = score.fit_transform(x, y)
    in_sample = score.transform(x)
    assert out_of_fold.shape == in_sample.shape == (len(y), 1)
    np.testing.assert_allclose(in_sample[:, 0], score.booster_.decision_function(x), rtol=1e-6)
    # Rows scored by a booster that never saw them are less confidently right.
    sign = 2 * y - 1
    assert np.mean(sign * out_of_fold[:, 0]) < np.mean(sign * in_sample[:, 0])
    again = clone(score).fit_transform(x, y)
    np.testing.assert_array_equal(again, out_of_fold)  # seeded: same folds, same trees


def test_score_follows_scikit_learn_conventions(toy) -> None:
    x, y = toy
    score = CrossFittedBoostingScore(max_iter=5, folds=2, random_state=3)
    assert clone(score).get_params() == score.get_params()
    with pytest.raises(NotFittedError):
        score.transform(x)
    score.fit(x, y)
    assert score.n_features_in_ == x.shape[1] and list(score.classes_) == [0, 1]
    with pytest.raises(ValueError, match="features"):
        score.transform(x[:, :3])
    with pytest.raises(ValueError, match="exactly 2 classes"):
        clone(score).fit(x, np.zeros(len(y), dtype=int))


def _stack_model(x: np.ndarray, y: np.ndarray, encoder: MLPEncoder | None = None):
    score = CrossFittedBoostingScore(max_iter=20, folds=2)
    score.fit(x, y)
    extra = encoder.spec.embed_dim if encoder is not None else 0
    rng = np.random.default_rng(0)
    coef = rng.normal(size=x.shape[1] + extra + 1).astype(np.float32)
    model = BoostedStackClassifier.from_fitted(score.booster_, coef, 0.3, encoder=encoder)
    return score, model, coef


def test_torch_trees_reproduce_scikit_learn(toy) -> None:
    x, y = toy
    score, model, coef = _stack_model(x, y)
    with torch.no_grad():
        margin = model.margin(torch.from_numpy(x)).numpy()
        logits = model.logits(torch.from_numpy(x)).numpy()
    expected = score.booster_.decision_function(x)
    np.testing.assert_allclose(margin, expected, atol=1e-4)
    np.testing.assert_allclose(logits, x @ coef[:-1] + coef[-1] * expected + 0.3, atol=1e-3)


def test_stack_model_round_trips_through_safetensors(toy, tmp_path: Path) -> None:
    x, y = toy
    encoder = MLPEncoder(EncoderSpec(input_dim=x.shape[1], hidden_dim=8, depth=1, embed_dim=4))
    _, model, _ = _stack_model(x, y, encoder)
    save_classifier(model, tmp_path, "m", {"threshold": 0.5})
    loaded, arch = load_classifier(tmp_path, "m")
    assert isinstance(loaded, BoostedStackClassifier) and arch["kind"] == "boosted_stack"
    with torch.no_grad():
        a, b = model(torch.from_numpy(x)), loaded(torch.from_numpy(x))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["trees", "evidence"])
def test_stack_model_exports_with_raw_columns_and_parity(
    stage_artifacts: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    data = PreparedData(stage_artifacts["prepare"])
    probe, _ = load_classifier(stage_artifacts["finetune"], "probe")
    train = data.train
    if kind == "trees":
        _, model, _ = _stack_model(train.features, train.target, probe.encoder)
    else:  # the evidence head's bins and one-hot terms as stumps
        encoding = data.encoding
        score = CrossFittedEvidenceScore(
            column_of=encoding.column_of, n_numeric=len(encoding.numeric)
        ).fit(train.features, train.target)
        coef = np.random.default_rng(0).normal(size=train.features.shape[1] + 1)
        model = BoostedStackClassifier.from_tables(**score.stack_trees(), coef=coef, intercept=0.3)
    path = tmp_path / "stack.onnx"
    export_raw_column_onnx(data.encoding, model, path, 18)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, raw_inputs(data.encoding, data.test.frame))[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(data.test.features)).numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5
    assert np.array_equal(got >= 0.5, expected >= 0.5)


def test_stage_reports_boosted_candidates_and_their_penalty_shrinks_the_gap(
    stage_artifacts: dict[str, Path],
) -> None:
    fairness = json.loads((stage_artifacts["finetune"] / "finetune.json").read_text())["fairness"]
    boosted = [c for c in fairness["candidates"] if c["mechanism"] == "boosted_penalty"]
    assert [c["strength"] for c in boosted] == sorted(c["strength"] for c in boosted)
    assert len(boosted) >= 2 and any(
        c["mechanism"] == "boosted_reduction" for c in fairness["candidates"]
    )
    gaps = [c["demographic_parity_difference"] for c in boosted]
    assert gaps[-1] < gaps[0], "a stronger penalty must shrink the stacked head's gap"
    assert "selection_margin" in fairness
    # the evidence score gets the same sweeps, under its own names
    evidence = [c for c in fairness["candidates"] if c["mechanism"] == "evidence_penalty"]
    assert [c["name"] for c in evidence] == [
        c["name"].replace("boosted+", "evidence+") for c in boosted
    ]
    assert any(c["mechanism"] == "evidence_reduction" for c in fairness["candidates"])
    gaps = [c["demographic_parity_difference"] for c in evidence]
    assert gaps[-1] < gaps[0], "a stronger penalty must shrink the evidence head's gap"


def test_demographic_parity_gaps_use_unlabeled_rows_no_penalty_saw(small_config) -> None:
    from sslops.finetune.stage import _gap_holdout

    labeled = np.arange(0, 1000, 10)
    held, penalty_rows = _gap_holdout(small_config, 1000, labeled)
    assert small_config.finetune.fairness.constraint == "demographic_parity"
    assert len(held) == 450 and len(penalty_rows) == 450
    assert not set(held) & set(penalty_rows) and not set(held) & set(labeled)
    assert np.array_equal(held, _gap_holdout(small_config, 1000, labeled)[0])  # seeded
    eo = small_config.model_copy(deep=True)
    eo.finetune.fairness.constraint = "equalized_odds"  # needs labels: validation only
    assert len(_gap_holdout(eo, 1000, labeled)[0]) == 0
    off = small_config.model_copy(deep=True)
    off.finetune.fairness.gap_holdout = 0.0
    held, penalty_rows = _gap_holdout(off, 1000, labeled)
    assert len(held) == 0 and len(penalty_rows) == 900


def test_stage_report_says_where_each_gap_was_measured(stage_artifacts: dict[str, Path]) -> None:
    fairness = json.loads((stage_artifacts["finetune"] / "finetune.json").read_text())["fairness"]
    rows = fairness["gap_rows"]
    data = PreparedData(stage_artifacts["prepare"])
    labeled = np.load(stage_artifacts["finetune"] / "labeled_rows.npy")
    held = round(0.5 * (len(data.train.target) - len(labeled)))
    assert f"+ {held} unlabeled training rows" in rows["demographic_parity"]
    assert rows["equalized_odds"] == f"validation ({len(data.validation.target)} rows)"
