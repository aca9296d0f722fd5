"""Upgrading sslops: one version everywhere it is written, and what a newer sslops does with
what an older one wrote (docs/upgrading.md): it works, with the documented fallback, or fails
with one error naming the format found and the formats it reads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import onnx
import pandas as pd
import pytest
import yaml

from sslops.audit.bundle import BUNDLE_FORMAT, MANIFEST, _digest, canonical_json, verify_path
from sslops.predict import predict
from tests.conftest import ROOT

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


# --- the version ------------------------------------------------------------------------------


def _import_version(src: Path, *flags: str) -> str:
    """``sslops.__version__`` as a fresh interpreter imports it from ``src``."""
    result = subprocess.run(
        [sys.executable, *flags, "-c", "import sslops; print(sslops.__version__)"],
        env={"PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, check=False, cwd=src,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_source_tree_reports_its_pyproject_version_not_a_made_up_one(tmp_path: Path) -> None:
    """A checkout, an unpacked sdist or a stale editable install: the tree's own version
    (it keys the stage cache and tags the components' image); without metadata and
    pyproject.toml, a version no release has."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src" / "sslops", tree / "src" / "sslops",
                    ignore=shutil.ignore_patterns("__pycache__", "datasets"))  # fmt: skip
    (tree / "pyproject.toml").write_text('[project]\nname = "sslops"\nversion = "9.8.7"\n')
    # -S: no site-packages, so no installed sslops metadata to fall back on
    assert _import_version(tree / "src", "-S") == "9.8.7"
    # installed metadata that lags behind the tree (an editable install before a bump)
    assert _import_version(tree / "src") == "9.8.7"
    (tree / "pyproject.toml").write_text('[project]\nname = "other"\nversion = "1.0"\n')
    assert _import_version(tree / "src", "-S") == "0+unknown"
    (tree / "pyproject.toml").unlink()
    assert _import_version(tree / "src", "-S") == "0+unknown"


def test_this_checkout_and_the_cli_report_pyprojects_version(cli_env: dict[str, str]) -> None:
    import sslops

    assert sslops.__version__ == VERSION
    shown = subprocess.run(["sslops", "--version"], env=cli_env, capture_output=True, text=True)
    assert shown.stdout.strip() == f"sslops {VERSION}", shown.stderr


def test_every_place_the_release_version_is_written_is_pyprojects() -> None:
    """A release bumps pyproject.toml; the image label, the chart and the kustomize labels and
    images must follow (`make image` and the components read it; the build refuses a
    mismatch)."""
    containerfile = (ROOT / "Containerfile").read_text(encoding="utf-8")
    assert re.findall(r"^ARG VERSION=(\S+)$", containerfile, re.M) == [VERSION, VERSION]
    assert '"${installed}" != "${VERSION}"' in containerfile  # the build checks the package
    chart = yaml.safe_load((ROOT / "helm" / "sslops" / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == VERSION
    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        for found in re.findall(r"app\.kubernetes\.io/version: \"?([^\"\s]+)", text):
            assert found == VERSION, f"{path.relative_to(ROOT)}: version label {found}"
        for found in re.findall(r"sslops/sslops:([\w.]+?)(?:-cuda)?\s", text):
            assert found == VERSION, f"{path.relative_to(ROOT)}: image tag {found}"


def test_the_stage_cache_of_another_version_is_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted run resumed by an upgraded sslops runs every stage again."""
    from sslops.pipeline import stage_cache

    monkeypatch.setattr(stage_cache, "git_commit", lambda: None)  # an installed wheel's case
    key = stage_cache.stage_key("prepare", "{}", {})
    monkeypatch.setattr(stage_cache, "__version__", "99.0.0")
    assert stage_cache.stage_key("prepare", "{}", {}) != key


def test_meta_json_records_the_version_that_ran_not_the_install_metadatas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A source tree without install metadata (or with an editable install's, older than the
    tree) still records its own version in every artifact's meta.json."""
    from importlib.metadata import PackageNotFoundError

    from sslops import artifacts

    real = artifacts.version

    def no_sslops_metadata(name: str) -> str:
        if name == "sslops":
            raise PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(artifacts, "version", no_sslops_metadata)
    versions = artifacts.package_versions()
    assert versions["sslops"] == VERSION
    assert versions["torch"] == real("torch")


# --- artifacts an older sslops wrote ------------------------------------------------------------


def _without_metadata(model: Path, out: Path, drop: set[str], **replace: str) -> Path:
    proto = onnx.load(str(model))
    kept = [(p.key, replace.get(p.key, p.value)) for p in proto.metadata_props if p.key not in drop]
    del proto.metadata_props[:]
    for key, value in kept:
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))
    return out


def test_a_model_exported_before_the_case_rule_was_recorded_scores_as_training_did(
    stage_artifacts: dict[str, Path], small_data: dict[str, Path], tmp_path: Path
) -> None:
    """model.onnx without ``preprocessing``/``inputs`` metadata (or a spec without
    ``case_insensitive_levels``): training's default rule, said in the summary and the
    provenance record, not every 'private' silently scored as an unseen level."""
    frame = pd.read_csv(small_data["test"], dtype=str, keep_default_na=False).head(40)
    frame["workclass"] = frame["workclass"].str.lower()
    data = tmp_path / "rows.csv"
    frame.to_csv(data, index=False)
    current = stage_artifacts["export"] / "model.onnx"
    expected = predict(current, data, tmp_path / "current.csv")
    assert "case_insensitive_levels" not in expected.described
    spec = json.loads(
        {p.key: p.value for p in onnx.load(str(current)).metadata_props}["preprocessing"]
    )
    older_spec = json.dumps({k: v for k, v in spec.items() if k != "case_insensitive_levels"})
    for name, model in {
        "no-spec": _without_metadata(current, tmp_path / "a.onnx", {"preprocessing", "inputs"}),
        "old-spec": _without_metadata(
            current, tmp_path / "b.onnx", set(), preprocessing=older_spec
        ),
    }.items():
        result = predict(model, data, tmp_path / f"{name}.csv")
        assert (tmp_path / f"{name}.csv").read_text().splitlines()[1:] == (
            (tmp_path / "current.csv").read_text().splitlines()[1:]
        ), name
        assert "workclass" not in result.described  # not counted unseen
        assert "does not record case_insensitive_levels" in result.described
        record = json.loads((tmp_path / f"{name}.meta.json").read_text())
        assert f"(sslops {VERSION})" in record["case_rule"]
    assert "case_rule" not in json.loads((tmp_path / "current.meta.json").read_text())


def _reseal(bundle: Path, **changes: Any) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    body = {k: v for k, v in manifest.items() if k != "digest"} | changes
    (bundle / MANIFEST).write_bytes(canonical_json({**body, "digest": _digest(body)}))


@pytest.mark.parametrize("found", [BUNDLE_FORMAT + 1, "2", None])
def test_a_bundle_of_a_format_this_sslops_does_not_read_is_not_reported_intact(
    stage_artifacts: dict[str, Path], tmp_path: Path, found: Any
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(stage_artifacts["audit"] / "bundle", bundle)
    assert verify_path(bundle)["problems"] == []
    _reseal(bundle, bundle_format=found)
    assert verify_path(bundle)["problems"] == [
        f"{MANIFEST}: bundle_format {found!r} is not one sslops {VERSION} reads (1 to "
        f"{BUNDLE_FORMAT}); verify it with the sslops version that wrote it or a newer one"
    ]
    _reseal(bundle, bundle_format=1)  # the earliest format: its files and hashes still check
    assert verify_path(bundle)["problems"] == []
