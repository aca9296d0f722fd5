"""The audit registry's nightly verification on a cluster: the chart's optional CronJob and
the kustomize component render, validate against the Kubernetes schemas, are locked down,
mount the workspace read-only, and equal each other."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from sslops.k8s.render import (
    RenderError,
    kubectl,
    render_helm,
    render_helm_templates,
    render_kustomize,
)
from sslops.k8s.validation import load_documents, validate_object
from tests.conftest import ROOT
from tests.test_k8s_helm import assert_locked_down_and_sized
from tests.test_k8s_kustomize import _comparable

CHART = ROOT / "helm" / "sslops"
COMPONENT = ROOT / "manifests" / "components" / "audit-registry-verify"

pytest.importorskip("helm_python")


def _cronjobs(
    values: dict[str, Any], tmp_path: Path, extra: list[Path] = ()
) -> list[dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    objects = load_documents(render_helm(CHART, [*extra, path]))
    return [obj for obj in objects if obj["kind"] == "CronJob"]


def build_component(tmp_path: Path) -> str:
    """``kubectl kustomize`` of a kustomization holding only the component (kustomize takes
    no absolute path to a component: it is named relative to the temporary folder)."""
    folder = tmp_path / "kustomize"
    folder.mkdir()
    relative = os.path.relpath(COMPONENT, folder)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "kubeflow", "components": [relative],
    }))  # fmt: skip
    return render_kustomize(folder)


ENABLED = {"auditRegistry": {"verify": {"enabled": True}}}


def test_off_by_default_in_every_environment(tmp_path: Path) -> None:
    assert _cronjobs({}, tmp_path) == []
    for env in ("onprem", "aws", "gcp", "azure"):
        assert _cronjobs({}, tmp_path, [CHART / f"values-{env}.yaml"]) == []


@pytest.mark.parametrize("env", ["default", "onprem", "aws"])
def test_the_cronjob_verifies_the_registry_read_only_and_validates(
    env: str, tmp_path: Path
) -> None:
    extra = [] if env == "default" else [CHART / f"values-{env}.yaml"]
    [cronjob] = _cronjobs(ENABLED, tmp_path, extra)
    assert validate_object(cronjob, {}) == "kubernetes"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # a failed verification is reported, not retried away
    # A run hung on the volume (an NFS server gone) fails and alerts; without a deadline it
    # would run for ever and Forbid would skip every later run, with no Job ever failing.
    assert job["activeDeadlineSeconds"] == 3600
    pod = job["template"]["spec"]
    assert_locked_down_and_sized(pod)
    [container] = pod["containers"]
    assert container["command"] == [
        "sslops", "audit", "list", "--registry", "/workspace/audit-registry", "--verify",
    ]  # fmt: skip
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["workspace"] == {"name": "workspace", "mountPath": "/workspace", "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["workspace"]["persistentVolumeClaim"] == {
        "claimName": "sslops-workspace", "readOnly": True,
    }  # fmt: skip
    # The NetworkPolicy's default deny covers it (it needs no network).
    assert job["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sslops"


def test_the_deadline_is_a_value_and_must_leave_time_to_run(tmp_path: Path) -> None:
    values = {"auditRegistry": {"verify": {"enabled": True, "activeDeadlineSeconds": 7200}}}
    [cronjob] = _cronjobs(values, tmp_path)
    assert cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 7200
    for wrong in (0, "1h"):
        values["auditRegistry"]["verify"]["activeDeadlineSeconds"] = wrong
        with pytest.raises(RenderError, match=r"auditRegistry\.verify\.activeDeadlineSeconds"):
            render_helm_templates(CHART, values)


def test_a_public_key_makes_every_bundle_need_the_issuers_signature(tmp_path: Path) -> None:
    values = {"auditRegistry": {"path": "/workspace/registries/credit",
                                "verify": {"enabled": True, "schedule": "@daily",
                                           "publicKey": {"configMap": "issuer-key"}}}}  # fmt: skip
    [cronjob] = _cronjobs(values, tmp_path)
    assert validate_object(cronjob, {}) == "kubernetes" and cronjob["spec"]["schedule"] == "@daily"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[4] == "/workspace/registries/credit"
    assert command[-2:] == ["--public-key", "/var/run/sslops/public-key/issuer.pub.pem"]
    key = next(v for v in pod["volumes"] if v["name"] == "public-key")
    assert key["configMap"] == {
        "name": "issuer-key", "items": [{"key": "issuer.pub.pem", "path": "issuer.pub.pem"}],
    }  # fmt: skip
    assert "checkpoint" not in {v["name"] for v in pod["volumes"]}


def test_a_checkpoint_from_git_makes_removed_entries_fail_the_job(tmp_path: Path) -> None:
    values = {"auditRegistry": {"verify": {
        "enabled": True, "publicKey": {"configMap": "issuer-key"},
        "checkpoint": {"configMap": "audit-checkpoint", "key": "reg.json"},
    }}}  # fmt: skip
    [cronjob] = _cronjobs(values, tmp_path)
    assert validate_object(cronjob, {}) == "kubernetes"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][6:] == [
        "--public-key", "/var/run/sslops/public-key/issuer.pub.pem",
        "--checkpoint", "/var/run/sslops/checkpoint/reg.json",
    ]  # fmt: skip
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["checkpoint"] == {
        "name": "checkpoint", "mountPath": "/var/run/sslops/checkpoint", "readOnly": True,
    }  # fmt: skip
    volume = next(v for v in pod["volumes"] if v["name"] == "checkpoint")
    assert volume["configMap"] == {
        "name": "audit-checkpoint", "items": [{"key": "reg.json", "path": "reg.json"}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("verify", "path", "named"),
    [
        ({"enabled": True}, "/data/registry", "auditRegistry.path"),
        ({"enabled": True, "schedule": "every night"}, "/workspace/r", "auditRegistry.verify.schedule"),
        ({"enabled": True, "publicKey": {"configMap": "Issuer_Key"}}, "/workspace/r",
         "auditRegistry.verify.publicKey.configMap"),
        ({"enabled": True, "checkpoint": {"configMap": "c", "key": "a/b.json"}}, "/workspace/r",
         "auditRegistry.verify.checkpoint.key"),
    ],
)  # fmt: skip
def test_the_schema_refuses_a_registry_off_the_volume_and_bad_settings(
    verify: dict[str, Any], path: str, named: str
) -> None:
    with pytest.raises(RenderError) as caught:
        render_helm_templates(CHART, {"auditRegistry": {"path": path, "verify": verify}})
    assert named in str(caught.value)


def test_the_kustomize_component_equals_the_chart(tmp_path: Path) -> None:
    try:
        kubectl()
    except RenderError as exc:
        pytest.skip(str(exc))
    [built] = load_documents(build_component(tmp_path))
    assert validate_object(built, {}) == "kubernetes"
    [rendered] = _cronjobs(ENABLED, tmp_path)
    assert built["metadata"]["namespace"] == "kubeflow"
    assert _comparable(built) == _comparable(rendered)
