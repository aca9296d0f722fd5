"""manifests/: every overlay builds with `kubectl kustomize`, every object validates, each
overlay equals the Helm chart with the same environment's values, GitOps examples point at
overlays that build."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sslops import __version__ as VERSION
from sslops.config import config_from_json
from sslops.k8s.render import RenderError, kubectl, render_helm, render_kustomize
from sslops.k8s.validation import load_documents, validate_all
from tests.conftest import ROOT
from tests.test_k8s_network import overlay_with_verify

MANIFESTS = ROOT / "manifests"
ENVIRONMENTS = ("onprem", "aws", "gcp", "azure")


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    try:
        kubectl()
    except RenderError as exc:
        pytest.skip(str(exc))
    return {
        env: load_documents(render_kustomize(MANIFESTS / "overlays" / env)) for env in ENVIRONMENTS
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlay_builds_and_every_object_validates(env: str, built, crds) -> None:
    counts = validate_all(built[env], crds)
    assert counts == {
        "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "NetworkPolicy": 3,
        "PersistentVolumeClaim": 1, "Pipeline": 4, "PipelineVersion": 4,
        "TrainingRuntime": 1, "ResourceQuota": 1,
    }  # fmt: skip
    for obj in built[env]:
        assert obj["metadata"]["namespace"] == "kubeflow", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sslops"


def unversioned(name: str) -> str:
    """A PipelineVersion's name without the digest of its spec (the chart takes it of the spec
    as rendered, ``make compile`` of the spec as compiled: their JSON differs in form)."""
    return re.sub(r"-[0-9a-f]{10}$", "", name)


def _comparable(obj: dict[str, Any]) -> tuple[tuple[str, str], dict[str, Any]]:
    """Kind (a ClusterTrainingRuntime compares with a TrainingRuntime), name (a
    PipelineVersion's without its digest), and content without the tool-specific metadata."""
    kind = {"ClusterTrainingRuntime": "TrainingRuntime"}.get(obj["kind"], obj["kind"])
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    annotations = obj["metadata"].get("annotations") or {}
    body["annotations"] = {k: v for k, v in annotations.items() if not k.startswith("helm.sh/")}
    if obj["kind"] == "RoleBinding":
        body["subjects"] = [
            {k: v for k, v in s.items() if k != "namespace"} for s in body["subjects"]
        ]
    name = obj["metadata"]["name"]
    return (kind, unversioned(name) if kind == "PipelineVersion" else name), body


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlay_equals_the_helm_chart_with_the_same_environment(env: str, built) -> None:
    pytest.importorskip("helm_python")
    chart = ROOT / "helm" / "sslops"
    helm = dict(
        map(_comparable, load_documents(render_helm(chart, [chart / f"values-{env}.yaml"])))
    )
    kustomize = dict(map(_comparable, built[env]))
    assert set(helm) - set(kustomize) == {("Pod", "sslops-test")}  # `helm test` only
    assert set(kustomize) <= set(helm)
    for key, body in kustomize.items():
        assert body == helm[key], f"{env}: {key} differs between the overlay and the chart"


def test_onprem_mirror_reaches_the_pipelines_and_the_runtime(built) -> None:
    mirror = f"registry.internal.example:5000/sslops/sslops:{VERSION}"
    versions = [o for o in built["onprem"] if o["kind"] == "PipelineVersion"]
    for version in versions:
        spec = version["spec"]["pipelineSpec"]
        assert spec["defaultPipelineRoot"] == "minio://mlpipeline/sslops"
        for executor in spec["deploymentSpec"]["executors"].values():
            assert executor["container"]["image"].startswith(mirror), executor["container"]
    tasks = next(v for v in versions if "multinode" in v["metadata"]["name"])["spec"]
    parameters = tasks["pipelineSpec"]["root"]["dag"]["tasks"]["launch-pretrain"]["inputs"]
    assert parameters["parameters"]["gpu_image"]["runtimeValue"]["constant"] == f"{mirror}-cuda"
    (runtime,) = [o for o in built["onprem"] if o["kind"] == "TrainingRuntime"]
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == f"{mirror}-cuda"
    assert pod["spec"]["nodeSelector"] == {"sslops.io/node-pool": "gpu"}
    assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_digests_pinned_per_tag_keep_the_cuda_image_on_gpu_work(built, tmp_path: Path) -> None:
    """The CPU and CUDA images share a name: an ``images:`` entry per tag (as docs/deploy.md
    shows) pins each by its own digest; one entry without a tag would pin all 19 references,
    GPU work included, to the CPU image's digest."""
    import os

    mirror = "registry.internal.example:5000/sslops/sslops"
    cpu, cuda = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    overlay = tmp_path / "pinned"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS / "overlays" / "onprem", overlay)],
        "images": [{"name": f"{mirror}:{VERSION}", "digest": cpu},
                   {"name": f"{mirror}:{VERSION}-cuda", "digest": cuda}],
    }))  # fmt: skip
    text = render_kustomize(overlay)
    assert (text.count(f"{mirror}@{cpu}"), text.count(f"{mirror}@{cuda}")) == (16, 3)
    cuda_refs = [line for line in render_kustomize(MANIFESTS / "overlays" / "onprem").splitlines()
                 if f"{mirror}:{VERSION}-cuda" in line]  # fmt: skip
    assert len(cuda_refs) == 3  # exec-pretrain, the launcher's gpu_image, the training runtime


def test_kustomizations_use_current_fields_only() -> None:
    deprecated = {"commonLabels", "patchesStrategicMerge", "patchesJson6902", "bases", "vars"}
    files = [*MANIFESTS.rglob("kustomization.yaml"), ROOT / "pipelines/compiled/kustomization.yaml"]
    for path in files:
        content = yaml.safe_load(path.read_text())
        if content.get("apiVersion", "").startswith("kustomize.config.k8s.io"):
            assert not deprecated & set(content), f"{path}: {deprecated & set(content)}"
    component = yaml.safe_load((MANIFESTS / "components/gpu-pool/kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    for env in ENVIRONMENTS:
        overlay = yaml.safe_load((MANIFESTS / "overlays" / env / "kustomization.yaml").read_text())
        assert overlay["components"] == ["../../components/gpu-pool"]
        assert overlay["resources"] == ["../../base"]


def test_gitops_examples_sync_an_overlay_that_builds() -> None:
    (application,) = load_documents((MANIFESTS / "argocd/application.yaml").read_text())
    assert (application["apiVersion"], application["kind"]) == (
        "argoproj.io/v1alpha1",
        "Application",
    )
    source = application["spec"]["source"]
    assert (ROOT / source["path"] / "kustomization.yaml").is_file()
    assert application["spec"]["destination"]["namespace"] == "kubeflow"
    repo, *fluxes = load_documents((MANIFESTS / "flux/sslops.yaml").read_text())
    assert repo["kind"] == "GitRepository" and len(fluxes) == 2
    for flux in fluxes:
        assert (flux["apiVersion"], flux["kind"]) == (
            "kustomize.toolkit.fluxcd.io/v1",
            "Kustomization",
        )
        assert flux["spec"]["sourceRef"] == {"kind": repo["kind"], "name": repo["metadata"]["name"]}
        assert (ROOT / flux["spec"]["path"] / "kustomization.yaml").is_file()
    assert (
        repo["spec"]["url"] == source["repoURL"]
        and repo["spec"]["ref"]["tag"] == source["targetRevision"]
    )


def _flux_build(flux: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    """What kustomize-controller applies for a Flux Kustomization: its path, built with its
    targetNamespace and its patches on top."""
    import os

    folder = tmp_path / flux["metadata"]["name"]
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": flux["spec"]["targetNamespace"],
        "resources": [os.path.relpath(ROOT / flux["spec"]["path"], folder)],
        "patches": flux["spec"].get("patches", []),
    }))  # fmt: skip
    return load_documents(render_kustomize(folder))


def test_flux_applies_the_pipelines_before_their_versions(built, tmp_path: Path) -> None:
    """KFP's webhook refuses a PipelineVersion whose Pipeline does not exist, also in the
    server-side dry-run Flux runs on every object of a Kustomization before applying any: one
    Kustomization holding both never syncs. The Pipelines go first, in a Kustomization of
    their own, and the overlay (without them) depends on it; together they are the overlay."""
    _, pipelines, sslops = load_documents((MANIFESTS / "flux/sslops.yaml").read_text())
    assert sslops["spec"]["dependsOn"] == [{"name": pipelines["metadata"]["name"]}]
    first, then = _flux_build(pipelines, tmp_path), _flux_build(sslops, tmp_path)
    assert {o["kind"] for o in first} == {"Pipeline"} and len(first) == 4
    assert "Pipeline" not in {o["kind"] for o in then}
    names = {o["metadata"]["name"] for o in first}
    versions = [o for o in then if o["kind"] == "PipelineVersion"]
    assert len(versions) == 4 and {v["spec"]["pipelineName"] for v in versions} <= names

    def key(o: dict[str, Any]) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    env = sslops["spec"]["path"].rstrip("/").rsplit("/", 1)[1]
    assert sorted(first + then, key=key) == sorted(built[env], key=key)


def test_sslops_render_kustomize_prints_the_overlay(cli_env: dict[str, str], built) -> None:
    import subprocess

    result = subprocess.run(
        ["sslops", "render", "--target", "kustomize", "--overlay", "aws"],
        capture_output=True, text=True, env=cli_env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert load_documents(result.stdout) == built["aws"]
    missing = subprocess.run(
        ["sslops", "render", "--target", "kustomize", "--overlay", "moon"],
        capture_output=True, text=True, env=cli_env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"error: no kustomization.yaml in {Path('manifests/overlays/moon')}; --overlay takes "
        "aws, azure, gcp, onprem or a directory"
    )


KEEP = {
    "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
    "kustomize.toolkit.fluxcd.io/prune": "disabled",
}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_workspace_outlives_a_prune_and_a_deleted_gitops_object(env: str, built) -> None:
    """The workspace PVC holds the runs' data and the audit registry. The Argo CD Application
    has the resources finalizer (deleting it deletes what it synced) and Flux prunes what a
    deleted Kustomization applied: neither may take the PVC, as Helm's keep does not."""
    (pvc,) = [o for o in built[env] if o["kind"] == "PersistentVolumeClaim"]
    assert KEEP.items() <= pvc["metadata"]["annotations"].items()


def _dangling(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """What the build's objects name that the build does not hold: each PipelineVersion's
    Pipeline, the claim its tasks and (its config_json) the training pods mount, the
    RoleBinding's Role and ServiceAccounts (KFP's pipeline-runner is KFP's own); and the
    app.kubernetes.io/instance its NetworkPolicies select that none of its pods carry."""
    held = {(o["kind"], o["metadata"]["name"]) for o in objects}
    named: set[tuple[str, str]] = set()
    pod_instances, selected = set(), set()
    for obj in objects:
        if obj["kind"] == "PipelineVersion":
            spec = obj["spec"]
            named.add(("Pipeline", spec["pipelineName"]))
            platform = spec["platformSpec"]["platforms"]["kubernetes"]["deploymentSpec"]
            for executor in platform["executors"].values():
                pod_instances.add(executor["podMetadata"]["labels"]["app.kubernetes.io/instance"])
                for mount in executor.get("pvcMount", []):
                    named.add(("PersistentVolumeClaim", mount["constant"]))
            parameters = spec["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
            config = config_from_json(parameters["config_json"]["defaultValue"])
            named.add(("PersistentVolumeClaim", config.platform.storage.workspace_pvc or ""))
        elif obj["kind"] == "RoleBinding":
            named.add(("Role", obj["roleRef"]["name"]))
            named |= {
                ("ServiceAccount", s["name"])
                for s in obj["subjects"]
                if s["name"] != "pipeline-runner"
            }
        elif obj["kind"] == "NetworkPolicy":
            selected.add(obj["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"])
    return (named - held) | {("instance", i) for i in selected - pod_instances}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_an_overlay_copied_to_another_namespace_shares_nothing_with_the_first(
    env: str, built, crds, tmp_path: Path
) -> None:
    """docs/deploy.md section 11: a second install from the overlays goes in its own
    namespace. The copy validates, every object lands there, every name the pipelines,
    the RoleBinding and the policies refer to is the copy's own, and no object is shared."""
    assert _dangling(built[env]) == set()
    copy = overlay_with_verify(env, tmp_path, namespace="team-b")
    validate_all(copy, crds)
    assert {o["metadata"].get("namespace") for o in copy} == {"team-b"}
    assert _dangling(copy) == set()

    def keys(objects: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {(o["metadata"]["namespace"], o["kind"], o["metadata"]["name"]) for o in objects}

    assert keys(copy) & keys(built[env]) == set()


def test_a_name_prefix_leaves_the_pipelines_on_the_first_installs_names(
    built, crds, tmp_path: Path
) -> None:
    """What docs/deploy.md section 11 warns of, found by the tenant2 review: with a
    namePrefix, kustomize renames the objects and the RoleBinding's references, but not the
    names inside the compiled pipelines nor the pods' instance label; a prefixed second
    install in one namespace would attach its versions to the first's Pipelines, mount the
    first's workspace and share its NetworkPolicies' selection."""
    prefixed = overlay_with_verify("onprem", tmp_path, namePrefix="fraud-")
    validate_all(prefixed, crds)  # it builds and validates: nothing says it is broken
    assert {o["metadata"]["name"] for o in prefixed} == {
        f"fraud-{o['metadata']['name']}" for o in built["onprem"]
    } | {"fraud-sslops-verify-audit-registry"}
    pipelines = {o["metadata"]["name"] for o in built["onprem"] if o["kind"] == "Pipeline"}
    assert _dangling(prefixed) == {
        *(("Pipeline", name) for name in pipelines),
        ("PersistentVolumeClaim", "sslops-workspace"),
    }
    policies = [o for o in prefixed if o["kind"] == "NetworkPolicy"]
    assert {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] for p in policies
    } == {"sslops"}
