"""The planted-shortcut test: a feature correlated with the label in training only is flagged
when the model relies on it, and not flagged when it carries no signal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sslops.config import load_config
from tests.conftest import FAST_OVERRIDES, small_config_dict


def _with_planted(small_data: dict[str, Path], root: Path, correlated: bool) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    paths = {}
    for split, path in small_data.items():
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        positive = (frame["income"] == ">50K").to_numpy()
        if correlated and split == "train":
            agree = rng.random(len(frame)) < 0.95
            planted = np.where(agree, positive, ~positive)
        else:
            planted = rng.random(len(frame)) < 0.5
        frame["planted"] = np.where(planted, "tick", "cross")
        paths[split] = root / f"{split}.csv"
        frame.to_csv(paths[split], index=False)
    return paths


def _shortcuts(small_data: dict[str, Path], root: Path, correlated: bool) -> dict:
    from sslops.evaluate import evaluate
    from sslops.finetune import finetune
    from sslops.prepare import prepare
    from sslops.pretrain import pretrain

    root.mkdir()
    raw = small_config_dict(small_data)
    raw["data"].update({k: str(v) for k, v in _with_planted(small_data, root, correlated).items()})
    raw["prepare"]["ood"] = "native-country != United-States"  # an OOD split, scored apart
    (root / "cfg.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(
        root / "cfg.yaml",
        [*FAST_OVERRIDES, "evaluate.shortcut_columns=[planted]", "export.model=ssl"],
    )
    prepared = prepare(cfg, root / "prepare")
    pretrained = pretrain(cfg, prepared, root / "pretrain")
    tuned = finetune(cfg, prepared, pretrained, root / "finetune")
    evaluated = evaluate(cfg, prepared, tuned, root / "evaluate")
    report = json.loads((evaluated / "shortcuts.json").read_text())
    report["ood.json"] = json.loads((evaluated / "ood.json").read_text())
    report["metrics.md"] = (evaluated / "metrics.md").read_text()
    return report


@pytest.mark.parametrize("correlated", [True, False])
def test_planted_shortcut_is_flagged_only_when_used(
    small_data: dict[str, Path], tmp_path: Path, correlated: bool
) -> None:
    report = _shortcuts(small_data, tmp_path / "run", correlated)
    planted = report["permutation"]["planted"]
    assert planted["flagged"] is correlated
    assert ("planted" in report["flagged"]) is correlated
    if correlated:
        assert planted["prediction_flip_rate"] > report["reliance_threshold"]
    # the flip rate's 95% interval over test rows holds the mean; far from the threshold
    # either way here, so the flag is not uncertain
    low, high = planted["prediction_flip_rate_interval"]
    assert low <= planted["prediction_flip_rate"] <= high
    assert planted["flag_uncertain"] is False
    # the OOD split: how shifted it is, and every model on it against test with intervals
    ood = report["ood.json"]
    shift = ood["shift"]
    assert shift["predicate_columns"] == ["native-country"]
    assert shift["domain_auc"] > 0.9  # the defining column alone separates the splits
    assert 0.3 < shift["domain_auc_without_predicate"] < shift["domain_auc"]
    assert set(ood["compared_with_test"]) == set(ood["models"])
    for name, row in ood["compared_with_test"].items():
        acc = row["accuracy"]
        assert acc["ood"] == pytest.approx(ood["models"][name]["accuracy"])
        assert acc["difference"] == pytest.approx(acc["ood"] - acc["test"])
        assert acc["difference_interval"][0] < acc["difference"] < acc["difference_interval"][1]
    assert "Out-of-distribution split (ood," in report["metrics.md"]
    # The shipped Adult config checks the proxies of sex (the counterfactual flip of sex
    # alone keeps them): the model leans on relationship, planted or not.
    assert {"relationship", "marital-status"} <= set(report["permutation"])
    assert report["permutation"]["relationship"]["prediction_flip_rate"] > 0
    # Counterfactual flips of the sensitive attributes are reported either way.
    assert set(report["counterfactual"]) == {"sex", "race"}
