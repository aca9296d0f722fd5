"""run.json names the image reference the pipeline was compiled or installed with (a digest
where one is pinned), carried to the audit task as a constant the run form does not show."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from sslops import __version__ as VERSION
from sslops.config import Config
from sslops.k8s.validation import load_documents
from tests.conftest import ROOT

DIGEST = "sha256:" + "ab" * 32
COMPILED = ROOT / "pipelines" / "compiled"


def _audit_image(pipeline_spec: dict[str, Any]) -> str:
    audit = pipeline_spec["root"]["dag"]["tasks"]["audit"]["inputs"]["parameters"]
    return audit["image"]["runtimeValue"]["constant"]


@pytest.mark.parametrize("stem", ["ssl_pipeline", "ssl_pipeline_multinode"])
def test_the_compiled_audit_task_gets_its_own_image_as_a_constant(stem: str) -> None:
    spec = next(yaml.safe_load_all((COMPILED / f"{stem}.yaml").read_text()))
    executor = spec["deploymentSpec"]["executors"]["exec-audit"]["container"]["image"]
    assert _audit_image(spec) == executor == f"ghcr.io/sslops/sslops:{VERSION}"
    # not a pipeline parameter: the KFP run form shows config_json only
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"config_json"}


def _pipeline_versions(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o["spec"]["pipelineSpec"]
        for o in objects
        if o["kind"] == "PipelineVersion"
        and "audit" in o["spec"]["pipelineSpec"]["root"]["dag"]["tasks"]
    ]


def test_the_charts_mirror_and_digest_reach_the_audit_task(tmp_path: Path) -> None:
    pytest.importorskip("helm_python")
    from sslops.k8s.render import render_helm

    chart = ROOT / "helm" / "sslops"
    values = tmp_path / "pinned.yaml"
    values.write_text(yaml.safe_dump({"image": {"registry": "mirror.local/ml", "digest": DIGEST}}))
    specs = _pipeline_versions(load_documents(render_helm(chart, [values])))
    assert len(specs) == 2  # the one-pod and the multi-node pipeline
    for spec in specs:
        executor = spec["deploymentSpec"]["executors"]["exec-audit"]["container"]["image"]
        assert _audit_image(spec) == executor == f"mirror.local/ml/sslops:{VERSION}@{DIGEST}"
    # without values: the tag, as compiled
    for spec in _pipeline_versions(load_documents(render_helm(chart, []))):
        assert _audit_image(spec) == f"ghcr.io/sslops/sslops:{VERSION}"


def test_a_kustomize_mirror_reaches_the_audit_task() -> None:
    from sslops.errors import SslopsError
    from sslops.k8s.render import kubectl, render_kustomize

    try:
        kubectl()
    except SslopsError as exc:
        pytest.skip(str(exc))
    specs = _pipeline_versions(
        load_documents(render_kustomize(ROOT / "manifests" / "overlays" / "onprem"))
    )
    assert len(specs) == 2
    for spec in specs:
        assert _audit_image(spec) == f"registry.internal.example:5000/sslops/sslops:{VERSION}"


def _audit_in_a_pod(
    small_config: Config, stage_artifacts: dict[str, Path], out: Path, image: str
) -> dict[str, Any]:
    from sslops.pipeline.tasks import audit_task

    def artifact(path: Path, uri: str = "") -> SimpleNamespace:
        return SimpleNamespace(path=str(path), uri=uri or str(path), metadata={})

    bundle = artifact(out / "bundle", "minio://mlpipeline/sslops-ssl-pipeline/run-7/audit/3/bundle")
    audit_task(
        small_config.to_json(),
        *(artifact(stage_artifacts[s]) for s in ("prepare", "pretrain", "finetune", "evaluate", "export")),
        bundle, artifact(out / "card.html"), artifact(out / "card.md"), image,
    )  # fmt: skip
    return json.loads((out / "bundle" / "bundle" / "run.json").read_text())


def test_the_audit_task_records_the_pinned_reference_it_was_given(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    """In a pod: the reference the pipeline was installed with, not one the task derives from
    its own environment (the old code wrote ghcr.io/sslops/sslops:<version> whatever ran)."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("SSLOPS_FINAL_LOCATIONS", raising=False)
    monkeypatch.delenv("SSLOPS_IMAGE_REGISTRY", raising=False)
    pinned = f"mirror.local/ml/sslops:{VERSION}@{DIGEST}"
    run = _audit_in_a_pod(small_config, stage_artifacts, tmp_path / "pinned", pinned)
    assert run["executed_by"] == "kfp" and run["kfp_run_id"] == "run-7"
    assert run["image"] == pinned
    assert (run["image_pinned_by"], run["image_immutable"]) == ("digest", True)
    tagged = f"mirror.local/ml/sslops:{VERSION}"
    run = _audit_in_a_pod(small_config, stage_artifacts, tmp_path / "tagged", tagged)
    assert (run["image"], run["image_pinned_by"], run["image_immutable"]) == (tagged, "tag", False)


def test_sslops_run_and_the_command_line_say_no_container_ran_unless_told(monkeypatch) -> None:
    """kfp.local runs the tasks as processes: the compiled reference is not what ran."""
    from sslops.audit.stage import _run_record
    from sslops.pipeline.tasks import kfp_run_context

    where = {"root": "/elsewhere", "out": "/elsewhere/out", "folders": {}}  # sslops run's
    monkeypatch.setenv("SSLOPS_FINAL_LOCATIONS", json.dumps(where))
    monkeypatch.delenv("SSLOPS_IMAGE", raising=False)
    bundle = SimpleNamespace(uri="/tmp/r/sslops-ssl-pipeline-2026/audit/bundle")
    run = kfp_run_context(bundle, f"ghcr.io/sslops/sslops:{VERSION}")
    assert run["image"] is None and run["image_pinned_by"] is None
    assert run["image_from"] == "none: no container ran" and "no container" in run["executed_by"]
    monkeypatch.setenv("SSLOPS_IMAGE", f"r.local/sslops@{DIGEST}")
    run = kfp_run_context(bundle, f"ghcr.io/sslops/sslops:{VERSION}")
    assert (run["image"], run["image_pinned_by"], run["image_from"]) == (
        f"r.local/sslops@{DIGEST}",
        "digest",
        "SSLOPS_IMAGE",
    )
    assert _run_record(None)["image_pinned_by"] == "digest"
    monkeypatch.delenv("SSLOPS_IMAGE")
    assert _run_record(None)["image"] is None and _run_record(None)["image_immutable"] is None


def test_the_model_card_says_whether_its_image_is_pinned() -> None:
    from sslops.audit.card import _image_line
    from sslops.audit.environment import image_record

    pinned = _image_line(image_record(f"mirror.local/ml/sslops:{VERSION}@{DIGEST}", "pipeline"))
    assert pinned.startswith(f"mirror.local/ml/sslops:{VERSION}@{DIGEST} (pinned by digest")
    tagged = _image_line(image_record(f"ghcr.io/sslops/sslops:{VERSION}", "pipeline"))
    assert "a tag, not a digest" in tagged and "image.digest" in tagged
    assert _image_line(image_record(None, "none")) == "n/a (not run in a container)"
