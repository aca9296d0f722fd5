"""Shared fixtures: a small real sample of UCI Adult and one set of stage artifacts built from it."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from sslops.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "src" / "sslops" / "datasets" / "adult"
SHARED = ROOT.parent / "shared"
BIN = Path(sys.executable).parent

# Small and fast: the settings every pipeline-level test uses on top of configs/adult.yaml.
FAST_OVERRIDES = [
    "pretrain.epochs=2",
    "pretrain.hidden_dim=32",
    "pretrain.embed_dim=16",
    "pretrain.projection_dim=16",
    "pretrain.batch_size=128",
    "pretrain.threads=1",
    "finetune.label_fraction=0.1",
    "finetune.fairness.steps=50",
    "finetune.fairness.penalties=[0.0,10.0,100.0]",
    "finetune.fairness.reductions=[0.02]",
    "finetune.fairness.boosted.penalties=[0.0,100.0]",
    "finetune.fairness.boosted.reductions=[0.01]",
    "finetune.fairness.boosted.max_iter=30",
    "finetune.fairness.boosted.embedding=true",  # exercise encoder + trees + head in export
    "evaluate.bootstrap=20",
    "evaluate.label_efficiency=null",
]


def fresh_interpreter_loads(code: str, packages: set[str]) -> tuple[str, list[str]]:
    """Run ``code`` in a new interpreter: (what it printed, which of ``packages`` it loaded)."""
    import ast
    import subprocess

    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(packages)!r})))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    *printed, loaded = done.stdout.strip().split("\n")
    return "\n".join(printed), [str(m) for m in ast.literal_eval(loaded)]


def shared_path(*parts: str) -> Path:
    """A path under ../shared, beside the repository (the k8s CRD schemas): CI's checkout has
    it; where it is missing the test skips naming the path, never passing without checking."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is expected beside the checkout, as in CI)")
    return path


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """The CRD schemas in ../shared/k8s/crds (Trainer, Kubeflow Pipelines …); skips without them."""
    from sslops.k8s.validation import load_crd_schemas

    return load_crd_schemas(shared_path("k8s", "crds"))


@pytest.fixture(scope="session")
def crds() -> dict[tuple[str, str], dict[str, Any]]:
    return crd_schemas()


def adult_sample(path: Path, split: str, rows: int, seed: int = 0) -> Path:
    """The first ``rows`` rows of a random permutation of the shipped Adult split, as plain CSV."""
    with gzip.open(ADULT / f"{split}.csv.gz", "rt", encoding="utf-8") as fh:
        frame = pd.read_csv(fh, dtype=str, keep_default_na=False)
    frame.sample(n=rows, random_state=seed).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adult-small")
    return {
        "train": adult_sample(root / "train.csv", "train", 3000),
        "test": adult_sample(root / "test.csv", "test", 1000),
    }


def small_config_dict(small_data: dict[str, Path]) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text())
    raw["data"]["train"] = str(small_data["train"])
    raw["data"]["test"] = str(small_data["test"])
    return raw


@pytest.fixture(scope="session")
def small_config(small_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("cfg") / "small.yaml"
    path.write_text(yaml.safe_dump(small_config_dict(small_data)))
    return load_config(path, FAST_OVERRIDES)


@pytest.fixture(scope="session")
def stage_artifacts(
    small_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """prepare -> pretrain -> finetune -> evaluate -> export -> audit, once per session."""
    from sslops.audit import audit
    from sslops.evaluate import evaluate
    from sslops.export import export
    from sslops.finetune import finetune
    from sslops.prepare import prepare
    from sslops.pretrain import pretrain

    root = tmp_path_factory.mktemp("stages")
    a = {"prepare": prepare(small_config, root / "prepare")}
    a["pretrain"] = pretrain(small_config, a["prepare"], root / "pretrain")
    a["finetune"] = finetune(small_config, a["prepare"], a["pretrain"], root / "finetune")
    a["evaluate"] = evaluate(small_config, a["prepare"], a["finetune"], root / "evaluate")
    a["export"] = export(small_config, a["prepare"], a["finetune"], root / "export")
    a["audit"] = audit(small_config, dict(a), root / "audit")
    return a


@pytest.fixture(autouse=True)
def _terminal_of_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse's help and rich's tables wrap to COLUMNS where it is set (a CI runner may set
    it): every test, and every command it starts, sees 80 columns, as in a pipe without it."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running the installed ``sslops`` / ``dvc`` executables in a subprocess."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
