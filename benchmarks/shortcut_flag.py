"""The planted-shortcut flag's false positives and power, and the Adult OOD split's shift.

Small Adult (``data.train`` 3,000 / ``data.test`` 1,000 rows drawn with the seed), the test
suite's fast settings (tests/conftest.py ``FAST_OVERRIDES``), ``export.model=ssl``,
``prepare.ood: native-country != United-States``. A ``planted`` column ("tick" / "cross")
agrees with the label on a share ``agreement`` of the training rows and is a coin flip
elsewhere (validation, test, OOD); ``none`` makes it a coin flip in training too (the
null: the flag must stay off). One JSON line per run: the planted column's permutation
result, its training correlation with the label, every flagged column, and ood.json's
shift and test-vs-OOD comparison for ``ssl``.

    .venv/bin/python benchmarks/shortcut_flag.py OUT_DIR --seeds 0,1 --agreements none,0.83,0.95
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sslops.config import load_config  # noqa: E402
from sslops.evaluate import evaluate  # noqa: E402
from sslops.finetune import finetune  # noqa: E402
from sslops.prepare import prepare  # noqa: E402
from sslops.pretrain import pretrain  # noqa: E402
from tests.conftest import FAST_OVERRIDES, adult_sample, small_config_dict  # noqa: E402


def _planted(base: dict[str, Path], run: Path, agreement: float | None, seed: int) -> tuple:
    rng = np.random.default_rng(100 + seed)
    paths, phi = {}, None
    for split, path in base.items():
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        positive = (frame["income"] == ">50K").to_numpy()
        if agreement is not None and split == "train":
            planted = np.where(rng.random(len(frame)) < agreement, positive, ~positive)
            phi = float(np.corrcoef(planted, positive)[0, 1])
        else:
            planted = rng.random(len(frame)) < 0.5
        frame["planted"] = np.where(planted, "tick", "cross")
        paths[split] = run / f"{split}.csv"
        frame.to_csv(paths[split], index=False)
    return paths, phi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--agreements", default="none,0.83,0.95")
    args = parser.parse_args()
    for seed in (int(s) for s in args.seeds.split(",")):
        data = args.out / f"data{seed}"
        data.mkdir(parents=True, exist_ok=True)
        base = {"train": adult_sample(data / "train.csv", "train", 3000, seed),
                "test": adult_sample(data / "test.csv", "test", 1000, seed)}  # fmt: skip
        for text in args.agreements.split(","):
            agreement = None if text == "none" else float(text)
            run = args.out / f"s{seed}-{text}"
            run.mkdir(exist_ok=True)
            paths, phi = _planted(base, run, agreement, seed)
            raw = small_config_dict(base)
            raw["data"].update({k: str(v) for k, v in paths.items()})
            raw["seed"] = seed
            raw["prepare"]["ood"] = "native-country != United-States"
            (run / "cfg.yaml").write_text(yaml.safe_dump(raw))
            cfg = load_config(run / "cfg.yaml", [*FAST_OVERRIDES, "export.model=ssl",
                                                 "evaluate.shortcut_columns=[planted]"])  # fmt: skip
            start = time.time()
            p = prepare(cfg, run / "prepare")
            f = finetune(cfg, p, pretrain(cfg, p, run / "pretrain"), run / "finetune")
            e = evaluate(cfg, p, f, run / "evaluate")
            shortcuts = json.loads((e / "shortcuts.json").read_text())
            ood = json.loads((e / "ood.json").read_text())
            print(json.dumps({
                "run": run.name, "train_phi": phi, "planted": shortcuts["permutation"]["planted"],
                "flagged": shortcuts["flagged"], "ood_rows": ood["rows"], "shift": ood["shift"],
                "ssl_ood_vs_test": ood["compared_with_test"]["ssl"],
                "seconds": round(time.time() - start),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
