"""`dvc repro` runs the same stages through the CLI and reproduces a run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import FAST_OVERRIDES, ROOT, small_config_dict


def test_dvc_repro_runs_every_stage(small_data, tmp_path: Path, cli_env) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    from sslops.config import apply_overrides, validate_config

    raw = apply_overrides(small_config_dict(small_data), FAST_OVERRIDES)
    params = validate_config(raw).model_dump(mode="json")  # every key explicit, as params.yaml
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    def dvc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["dvc", *args], cwd=repo, capture_output=True, text=True, env=cli_env, timeout=600
        )

    assert dvc("init", "--no-scm", "-q").returncode == 0
    result = dvc("repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("prepare", "pretrain", "finetune", "evaluate", "export", "audit"):
        assert (repo / "artifacts" / stage / "meta.json").is_file()
    assert (repo / "artifacts" / "audit" / "model_card.html").is_file()
    assert (repo / "dvc.lock").is_file()
    # Nothing changed: a second repro runs no stage.
    again = dvc("repro")
    assert again.returncode == 0
    assert "Running stage" not in again.stdout
    # A parameter change reruns only what depends on it.
    params["evaluate"]["threshold"] = 0.4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = dvc("status")
    assert "finetune" in status.stdout and "pretrain" not in status.stdout


def test_params_yaml_is_the_resolved_demo_config() -> None:
    """`dvc repro` trains what `make demo` trains: params.yaml is configs/adult.yaml resolved."""
    from sslops.config import load_config

    params = (ROOT / "params.yaml").read_text(encoding="utf-8")
    resolved = load_config(ROOT / "configs" / "adult.yaml").model_dump(mode="json")
    body = "".join(params.splitlines(keepends=True)[2:])  # after the two header lines
    assert body == yaml.safe_dump(resolved, sort_keys=False), (
        "params.yaml is stale; regenerate: "
        "sslops config --config configs/adult.yaml > params.yaml (keep its two header lines)"
    )
