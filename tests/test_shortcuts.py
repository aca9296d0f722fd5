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
    (root / "cfg.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(
        root / "cfg.yaml",
        [*FAST_OVERRIDES, "evaluate.shortcut_columns=[planted]", "export.model=ssl"],
    )
    prepared = prepare(cfg, root / "prepare")
    pretrained = pretrain(cfg, prepared, root / "pretrain")
    tuned = finetune(cfg, prepared, pretrained, root / "finetune")
    evaluated = evaluate(cfg, prepared, tuned, root / "evaluate")
    return json.loads((evaluated / "shortcuts.json").read_text())


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
    # Counterfactual flips of the sensitive attributes are reported either way.
    assert set(report["counterfactual"]) == {"sex", "race"}
