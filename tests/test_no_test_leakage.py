"""No test or out-of-distribution information reaches anything fitted or selected.

The test and ood splits of a prepared table are poisoned (labels flipped, numbers
scrambled, a marker category planted) and pretraining and fine-tuning run again: the
weights, the drawn label rows, the selected model and its thresholds must come out byte
for byte the same, and the marker must appear in no file. The label-efficiency curve's
fitted models are watched directly: every one is fitted on the same stratified draw of
training rows. (What prepare itself guarantees is in tests/test_prepare_tabular.py,
``test_test_labels_never_change_what_is_fitted``.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from sslops.artifacts import META, hash_tree
from sslops.config import Config, LabelEfficiencyConfig, load_config
from sslops.finetune import finetune, stratified_label_subset
from sslops.prepare import PreparedData, prepare
from sslops.pretrain import pretrain
from tests.conftest import FAST_OVERRIDES, ROOT, adult_sample, small_config_dict

MARKER = "LEAKMARKER-7f3a"
SCORED = ("test", "ood")
# Written by pretrain from the test split on purpose (the sensitive-attribute probe's test
# AUC) or from the clock; everything else must not move.
REPORTED = {"summary.json", "history.json", "history.jsonl", "metrics.jsonl"}
REPORTED_KEYS = {"seconds", "samples_per_s", "sensitive_probe_auc"}
LIGHTER = [  # a smaller sweep than FAST_OVERRIDES': still a policy choosing among candidates
    "pretrain.epochs=1",
    "finetune.fairness.penalties=[0.0,100.0]",
    "finetune.fairness.boosted.embedding=false",
]


def poison(clean: Path, out: Path) -> Path:
    """A copy of the prepare artifact whose test and ood rows are changed: every label
    flipped, the numbers permuted and shifted, ``occupation`` set to :data:`MARKER`."""
    shutil.copytree(clean, out)
    rng = np.random.default_rng(1)
    for split in SCORED:
        frame = pd.read_parquet(out / f"{split}.parquet")
        frame["income"] = np.where(frame["income"].str.startswith(">"), "<=50K", ">50K")
        for column in ("age", "hours-per-week", "capital-gain"):
            frame[column] = rng.permutation(frame[column].to_numpy()) * 3 + 7
        frame["occupation"] = MARKER
        frame.to_parquet(out / f"{split}.parquet", index=False)
    meta = json.loads((out / META).read_text())
    meta["files"] = hash_tree(out)  # sealed again, as if prepare had written these rows
    (out / META).write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("leakage")
    data = {
        "train": adult_sample(root / "train.csv", "train", 1000, seed=3),
        "test": adult_sample(root / "test.csv", "test", 400, seed=3),
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(small_config_dict(data)))
    cfg = load_config(
        path, [*FAST_OVERRIDES, *LIGHTER, "prepare.ood=native-country != United-States"]
    )
    clean = prepare(cfg, root / "prepare-clean")
    prepared = {"clean": clean, "poisoned": poison(clean, root / "prepare-poisoned")}
    out: dict[str, Any] = {"cfg": cfg, "prepared": prepared}
    for name, prep in prepared.items():
        pre = pretrain(cfg, prep, root / f"pretrain-{name}")
        out[name] = {
            "pretrain": pre,
            "finetune": finetune(cfg, prep, pre, root / f"finetune-{name}"),
        }
    return out


def without_reported(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_reported(v) for k, v in value.items() if k not in REPORTED_KEYS}
    if isinstance(value, list):
        return [without_reported(v) for v in value]
    return value


def fitted_files(folder: Path) -> dict[str, Any]:
    """Every payload file's sha256; the reported files' content less their reported keys."""
    files: dict[str, Any] = {}
    for name, digest in hash_tree(folder).items():
        text = (folder / name).read_text() if name in REPORTED else ""
        if name not in REPORTED:
            files[name] = digest
        elif name.endswith(".jsonl"):  # loss, lr and kNN accuracy (validation) per step/epoch
            files[name] = [without_reported(json.loads(line)) for line in text.splitlines()]
        else:
            files[name] = without_reported(json.loads(text))
    return files


def test_the_poison_is_there(runs: dict[str, Any]) -> None:
    """The probe is real: the poisoned splits differ from the clean ones, hold the marker,
    and the one figure pretraining measures on the test split moves."""
    for split in SCORED:
        clean = pd.read_parquet(runs["prepared"]["clean"] / f"{split}.parquet")
        poisoned = pd.read_parquet(runs["prepared"]["poisoned"] / f"{split}.parquet")
        assert len(clean) == len(poisoned) > 0
        assert (clean["income"] != poisoned["income"]).all()
        assert (poisoned["occupation"] == MARKER).all()
    probe = {
        name: json.loads((runs[name]["pretrain"] / "summary.json").read_text())
        for name in ("clean", "poisoned")
    }
    assert probe["clean"]["sensitive_probe_auc"] != probe["poisoned"]["sensitive_probe_auc"]


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_poisoned_test_and_ood_rows_change_nothing_fitted(runs: dict[str, Any], stage: str) -> None:
    """Weights, labeled rows, every candidate's validation figures, the selected model, the
    ThresholdOptimizer's thresholds: all identical whatever the test and ood rows hold."""
    clean, poisoned = runs["clean"][stage], runs["poisoned"][stage]
    assert fitted_files(clean) == fitted_files(poisoned)
    for path in poisoned.rglob("*"):
        if path.is_file():
            assert MARKER.encode() not in path.read_bytes(), path


def test_label_efficiency_fits_every_model_on_the_same_training_draw(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each point of the curve: the SSL probe, the logistic regression, the gradient-boosted
    trees and the ensemble are fitted on one stratified, seeded draw of training rows (at
    100%: all of them, validation not included), never on a test row."""
    import sslops.evaluate.label_efficiency as curve
    from sslops.pretrain.stage import load_encoder

    cfg: Config = runs["cfg"].model_copy(deep=True)
    cfg.evaluate.label_efficiency = LabelEfficiencyConfig(fractions=[0.05, 1.0], draws=2)
    data = PreparedData(runs["prepared"]["clean"])
    train = data.train
    fitted: list[tuple[str, np.ndarray | None, np.ndarray]] = []

    def logistic(x: np.ndarray, y: np.ndarray, c: float) -> Any:
        fitted.append(("logistic", x, y))
        return real_logistic(x, y, c)

    class Trees:
        """Records the rows; fits few trees (the rows are checked, not the trees)."""

        def __init__(self, random_state: int) -> None:
            self.model = real_trees(random_state=random_state, max_iter=5)

        def fit(self, x: np.ndarray, y: np.ndarray) -> Trees:
            fitted.append(("trees", x, y))
            self.model.fit(x, y)
            return self

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.asarray(self.model.predict_proba(x))

    def fit_ensemble(*args: Any) -> Any:
        fitted.append(("ensemble", args[5], args[7]))
        return real_ensemble(*args)

    def fine_tune(probe: Any, x: Any, y: Any, settings: Any, seed: int) -> Any:
        fitted.append(("fine_tune", x.numpy(), y.numpy()))
        return probe  # the rows it is given are what is checked, not the training

    real_logistic, real_ensemble = curve.logistic, curve.fit_ensemble
    real_trees = curve.HistGradientBoostingClassifier
    monkeypatch.setattr(curve, "logistic", logistic)
    monkeypatch.setattr(curve, "HistGradientBoostingClassifier", Trees)
    monkeypatch.setattr(curve, "fit_ensemble", fit_ensemble)
    monkeypatch.setattr(curve, "fine_tune", fine_tune)
    result = curve.label_efficiency(cfg, data, load_encoder(runs["clean"]["pretrain"]))

    per_step = len(fitted) // 4
    assert per_step == 5 and len(fitted) == 20, [kind for kind, _, _ in fitted]
    for step, (fraction, draw) in enumerate([(0.05, 0), (0.05, 1), (1.0, 0), (1.0, 1)]):
        idx = stratified_label_subset(train.target, fraction, cfg.seed + draw)
        calls = fitted[step * per_step : (step + 1) * per_step]
        assert [kind for kind, _, _ in calls] == [
            "logistic", "fine_tune", "logistic", "trees", "ensemble"
        ]  # fmt: skip
        for kind, _, y in calls:
            np.testing.assert_array_equal(y, train.target[idx], err_msg=kind)
        np.testing.assert_array_equal(calls[1][1], data.pretraining.features[idx])
        np.testing.assert_array_equal(calls[2][1], train.features[idx])  # the baselines
        np.testing.assert_array_equal(calls[3][1], train.features[idx])
        np.testing.assert_array_equal(calls[4][1], idx)  # the ensemble's rows
        if fraction == 1.0:
            assert len(idx) == len(train.target)
        else:  # stratified: each class keeps its share
            shares = np.bincount(train.target[idx]) / np.bincount(train.target)
            assert np.allclose(shares, fraction, atol=0.01)
    labels = {(r["fraction"], r["draw"]): r["labels"] for r in result["rows"]}
    assert labels[(1.0, 0)] == len(train.target)


def poison_arrays(clean: Path, out: Path) -> Path:
    """A copy of an image or series prepare artifact whose test items are changed: every
    label moved to the next class, images inverted, series reversed and negated."""
    shutil.copytree(clean, out)
    classes = [str(c) for c in json.loads((out / "schema.json").read_text())["classes"]]
    frame = pd.read_parquet(out / "test.parquet")
    moved = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
    frame["label"] = frame["label"].astype(str).map(moved).astype(frame["label"].dtype)
    frame.to_parquet(out / "test.parquet", index=False)
    items = np.load(out / "test.npy")
    items = 255 - items if items.dtype == np.uint8 else -items[:, ::-1].copy()
    np.save(out / "test.npy", items)
    meta = json.loads((out / META).read_text())
    meta["files"] = hash_tree(out)
    (out / META).write_text(json.dumps(meta))
    return out


@pytest.mark.parametrize(
    "dataset", [pytest.param("gunpoint", marks=pytest.mark.slow), "mnist"]
)  # gunpoint's two pretrainings and sweeps take minutes on 2 cores
def test_poisoned_test_items_change_nothing_fitted(dataset: str, tmp_path: Path) -> None:
    """The same for images (a hashed split) and series (the archive's test file)."""
    import gzip

    from tests.test_arrays import MNIST, TINY_PRETRAIN

    overrides = [*TINY_PRETRAIN, "finetune.fairness.reductions=[0.05]"]
    if dataset == "mnist":
        with gzip.open(MNIST, "rt") as fh:  # sorted by label: every 16th row covers all digits
            rows = fh.read().splitlines()[::16][:300]
        (tmp_path / "digits.csv").write_text("\n".join(rows) + "\n")
        overrides += [f"data.train={tmp_path / 'digits.csv'}", "prepare.image_size=[16,16]",
                      "pretrain.epochs=1", "pretrain.batch_size=64", "finetune.label_fraction=0.3"]  # fmt: skip
    else:
        overrides += ["pretrain.epochs=2"]
    cfg = load_config(ROOT / "configs" / f"{dataset}.yaml", overrides)
    clean = prepare(cfg, tmp_path / "prepare-clean")
    poisoned = poison_arrays(clean, tmp_path / "prepare-poisoned")
    assert (np.load(clean / "test.npy") != np.load(poisoned / "test.npy")).any()
    fitted = {}
    for name, prep in {"clean": clean, "poisoned": poisoned}.items():
        pre = pretrain(cfg, prep, tmp_path / f"pretrain-{name}")
        fin = finetune(cfg, prep, pre, tmp_path / f"finetune-{name}")
        fitted[name] = {"pretrain": fitted_files(pre), "finetune": fitted_files(fin)}
    assert fitted["clean"] == fitted["poisoned"]
