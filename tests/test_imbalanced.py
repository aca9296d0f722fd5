"""A rare positive class (fraud, disease screening: 1-3% positives) and small groups.

What was found on UCI Adult with its positives subsampled to 2% (the ``rare_positive``
fixture builds that data): fine-tuning at 1% of the labels drew 2 positives and said
nothing; every candidate, and so the selected ``mitigated`` model, predicted "no" for every
validation row, a gap of 0 and accuracy 0.984 — the policy "met" by a constant; with
equal opportunity, the true-positive-rate gap was 0 for every candidate because one group
had no validation positive; and a bootstrap draw that left a group's one positive row out
counted as a gap of 0, so a measured gap of 0.8 got the interval [0.0, 0.96].
"""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from sslops.config import Config, load_config
from sslops.errors import DataError
from sslops.evaluate.metrics import majority_note, model_metrics
from sslops.finetune.pareto import Candidate, one_class_note
from sslops.finetune.stage import FEW_LABELS, _few_positives_note, check_label_classes
from tests.conftest import ADULT, FAST_OVERRIDES, ROOT


def _rare_sample(path: Path, split: str, rows: int, share: float, seed: int) -> Path:
    """``rows`` rows of the shipped Adult split of which ``share`` earn >50K."""
    with gzip.open(ADULT / f"{split}.csv.gz", "rt", encoding="utf-8") as fh:
        header, *body = list(csv.reader(fh))
    label = header.index("income")
    positive = [r for r in body if r[label].startswith(">50K")]
    negative = [r for r in body if not r[label].startswith(">50K")]
    rng = random.Random(seed)
    chosen = rng.sample(positive, round(rows * share))
    chosen += rng.sample(negative, rows - len(chosen))
    rng.shuffle(chosen)
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *chosen])
    return path


@pytest.fixture(scope="module")
def rare_positive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict[str, Path]]:
    """Adult at 2% positives, 1% of the labels: prepare -> pretrain -> finetune -> evaluate."""
    from sslops.evaluate import evaluate
    from sslops.finetune import finetune
    from sslops.prepare import prepare
    from sslops.pretrain import pretrain

    root = tmp_path_factory.mktemp("rare")
    raw = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text(encoding="utf-8"))
    raw["data"]["train"] = str(_rare_sample(root / "train.csv", "train", 2500, 0.02, 0))
    raw["data"]["test"] = str(_rare_sample(root / "test.csv", "test", 1500, 0.02, 1))
    (root / "cfg.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    cfg = load_config(root / "cfg.yaml", [
        *FAST_OVERRIDES, "finetune.label_fraction=0.01", "finetune.fairness.boosted=null",
        "finetune.fairness.grid_search=0", "evaluate.permutation_repeats=1",
        # A strict policy: the candidates that predict a few positives have parity gaps
        # above it (penalty=10: 0.011), so only heads that say "no" for every validation
        # row qualify, the case the selection caveat is for.
        "finetune.fairness.max_gap=0.005",
    ])  # fmt: skip
    a = {"prepare": prepare(cfg, root / "prepare")}
    a["pretrain"] = pretrain(cfg, a["prepare"], root / "pretrain")
    a["finetune"] = finetune(cfg, a["prepare"], a["pretrain"], root / "finetune")
    a["evaluate"] = evaluate(cfg, a["prepare"], a["finetune"], root / "evaluate")
    return cfg, a


def test_few_positive_labels_are_counted_and_named(rare_positive) -> None:
    _, a = rare_positive
    report = json.loads((a["finetune"] / "finetune.json").read_text(encoding="utf-8"))
    by_class = report["labels_by_class"]
    assert by_class["positive"] == 2  # 1% of ~45 positives, at least 2 per class
    assert by_class["positive"] + by_class["negative"] == report["labels_used"]
    assert "2 positive" in report["few_labels_note"]
    assert "finetune.label_fraction" in report["few_labels_note"]


def test_a_selection_of_the_constant_predictor_is_called_out(rare_positive) -> None:
    _, a = rare_positive
    fairness = json.loads((a["finetune"] / "finetune.json").read_text(encoding="utf-8"))["fairness"]
    chosen = next(c for c in fairness["candidates"] if c["name"] == fairness["selected"])
    assert chosen["validation_selection_rate"] == 0.0  # the constant "no": the 2% finding
    assert any("predicts negative for all" in note and "evaluate.threshold" in note
               for note in fairness["selection_caveats"])  # fmt: skip


def test_evaluate_says_when_a_model_is_no_better_than_the_majority_class(rare_positive) -> None:
    _, a = rare_positive
    metrics = json.loads((a["evaluate"] / "metrics.json").read_text(encoding="utf-8"))
    mitigated = metrics["models"]["mitigated"]
    assert mitigated["accuracy"] <= metrics["majority_class_accuracy"]
    assert "no better than always predicting the majority class" in mitigated["majority_note"]
    md = (a["evaluate"] / "metrics.md").read_text(encoding="utf-8")
    assert f"- mitigated: {mitigated['majority_note']}." in md


def test_a_training_split_with_under_two_rows_of_a_class_is_refused() -> None:
    target = np.zeros(500, dtype=np.int64)
    target[7] = 1
    with pytest.raises(DataError, match=r"1 row\(s\) of the positive class of label 'income'"):
        check_label_classes(target, np.arange(500), "income", 0.01)
    with pytest.raises(DataError, match="needs at least 2 of each class"):
        check_label_classes(np.ones(50, dtype=np.int64), np.arange(50), "income", 0.5)


def test_enough_labels_of_each_class_carry_no_note() -> None:
    target = np.array([1] * FEW_LABELS + [0] * 90)
    out = check_label_classes(target, np.arange(100), "y", 1.0)
    assert out == {"labels_by_class": {"positive": FEW_LABELS, "negative": 90}}
    few = check_label_classes(target, np.arange(1, 100), "y", 1.0)
    assert (
        f"{FEW_LABELS - 1} positive (of {FEW_LABELS} in the training split)"
        in (few["few_labels_note"])
    )


def test_one_class_note_only_for_a_constant_selection() -> None:
    constant = Candidate("ssl", "none", 0.0, 0.98, {}, selection_rate=0.0)
    assert "predicts negative for all 376 validation rows" in one_class_note(constant, 376)
    assert "predicts positive" in one_class_note(
        Candidate("x", "none", 0.0, 0.02, {}, selection_rate=1.0), 50
    )
    assert one_class_note(Candidate("x", "none", 0.0, 0.9, {}, selection_rate=0.01), 50) is None


def test_a_labeled_gap_on_one_group_with_positives_says_it_measures_nothing() -> None:
    y = np.array([1] * 6 + [0] * 200)
    sex = np.array(["Male"] * 106 + ["Female"] * 100)  # every positive is a man
    note = _few_positives_note("equal_opportunity", y, {"sex": sex}, 10)
    assert note is not None
    assert "sex: Female 0, Male 6" in note and "undefined for every candidate" in note
    assert _few_positives_note("demographic_parity", y, {"sex": sex}, 10) is None
    many = np.array(([1] * 20 + [0] * 80) * 2)
    assert _few_positives_note("equalized_odds", many, {"sex": np.repeat(["a", "b"], 100)},
                               10) is None  # fmt: skip


def _one_positive_in_a_group() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group a: 20 positives, 4 selected (TPR 0.2); group b: 1 positive, selected (TPR 1)."""
    groups = np.array(["a"] * 200 + ["b"] * 200)
    y = np.zeros(400, dtype=np.int64)
    y[:20] = y[200] = 1
    predicted = np.zeros(400, dtype=np.int64)
    predicted[:4] = predicted[200] = 1
    return y, predicted, groups


def test_a_gap_undefined_in_many_resamples_gets_no_interval() -> None:
    y, predicted, groups = _one_positive_in_a_group()
    m = model_metrics(y, 0.2 + 0.6 * predicted, 0.5, {"s": groups}, resamples=200, seed=0)
    assert m["eopp_difference"] == pytest.approx(0.8)
    # The old draws counted a resample without b's positive as a gap of 0: [0.0, 0.96].
    for intervals in (m["intervals"], m["gap_intervals"]["s"]):
        assert np.isnan(intervals["eopp_difference"]).all()
        low, high = intervals["eo_difference"]  # the FPR gap stands in where TPR's is undefined
        assert low <= m["eo_difference"] <= high
        low, high = intervals["dp_difference"]  # selection rates: defined in every draw
        assert 0.0 <= low <= m["dp_difference"] <= high


def test_a_gap_defined_in_every_resample_keeps_its_interval() -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(["a", "b"], 300)
    y = (rng.random(600) < 0.3).astype(np.int64)
    predicted = ((rng.random(600) < 0.5) & (y == 1) | (rng.random(600) < 0.1)).astype(np.int64)
    m = model_metrics(y, 0.2 + 0.6 * predicted, 0.5, {"s": groups}, resamples=100, seed=0)
    for key in ("dp_difference", "eo_difference", "eopp_difference"):
        low, high = m["gap_intervals"]["s"][key]
        assert 0.0 <= low <= high <= 1.0  # both groups hold both classes in every draw
        assert m["intervals"][key] == m["gap_intervals"]["s"][key]


def test_majority_note_speaks_only_for_a_model_at_the_majority_floor() -> None:
    constant = {"selection_rate": 0.0, "accuracy": 0.98, "roc_auc": 0.9}
    note = majority_note(constant, 0.98, 0.5)
    assert "predicts negative for every row" in note and "ROC AUC (0.9000)" in note
    few = {"selection_rate": 0.001, "accuracy": 0.979, "roc_auc": float("nan")}
    assert "predicts positive for 0.10% of the rows" in majority_note(few, 0.98, 0.5)
    assert "ROC AUC" not in majority_note(few, 0.98, 0.5)
    assert (
        majority_note({"selection_rate": 0.02, "accuracy": 0.985, "roc_auc": 0.9}, 0.98, 0.5)
        is None
    )


def test_the_label_efficiency_curve_counts_the_positives_it_was_fitted_on(rare_positive) -> None:
    from sslops.config import LabelEfficiencyConfig
    from sslops.evaluate.label_efficiency import curve_markdown, label_efficiency
    from sslops.prepare.dataset import PreparedData
    from sslops.pretrain.stage import load_encoder

    cfg, a = rare_positive
    cfg = cfg.model_copy(deep=True)
    cfg.evaluate.label_efficiency = LabelEfficiencyConfig(
        fractions=[0.01], full_fine_tune=False, ensemble=False
    )
    curve = label_efficiency(cfg, PreparedData(a["prepare"]), load_encoder(a["pretrain"]).eval())
    assert {r["positive_labels"] for r in curve["rows"]} == {2}
    labels = curve["rows"][0]["labels"]
    assert f"| 1% ({labels}; 2 positive) |" in curve_markdown(curve)


def test_images_and_series_name_a_class_the_training_split_lacks_and_count_few_labels() -> None:
    """The image/series path said "raise finetune.label_fraction" for a class the training
    split does not hold (no fraction can help) and never said a class had few labels."""
    names = ["0", "1", "2"]
    lacking = np.array([0] * 5 + [2] * 5)
    with pytest.raises(DataError, match=r"0 row\(s\) of class '1' of label 'digit' .*label more "
                                        r"rows of class '1'"):  # fmt: skip
        check_label_classes(lacking, np.arange(10), "digit", 0.5, names)
    target = np.repeat([0, 1, 2], 20)
    labeled = np.r_[0, 1, 20, 21, 40:60]
    out = check_label_classes(target, labeled, "digit", 0.1, names)
    assert out["labels_by_class"] == {"0": 2, "1": 2, "2": 20}
    assert "2 '0' (of 20 in the training split), 2 '1' (of 20" in out["few_labels_note"]
