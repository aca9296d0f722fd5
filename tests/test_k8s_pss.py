"""Pod Security Standards, `restricted` profile, on every pod spec sslops defines: the chart's
and the overlays' pods, the training runtimes, and the training pods the launcher asks for
(a TrainJob's runtime patch over the stock torch-distributed runtime, a PyTorchJob's
replicas). The profile's rules as https://kubernetes.io/docs/concepts/security/pod-security-standards/
lists them for Kubernetes 1.31, checked on the specs (no cluster's admission here); plus
what a shared cluster's admin asks beyond it: a read-only root filesystem, requests and limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sslops.config import load_config
from sslops.k8s.render import read_values, render_helm_templates
from sslops.k8s.specs import JobRequest, build_training_job
from sslops.k8s.validation import load_documents
from tests.conftest import ROOT, shared_path
from tests.test_k8s_helm import _pod_specs
from tests.test_k8s_network import overlay_with_verify

CHART = ROOT / "helm" / "sslops"
ENVIRONMENTS = ("onprem", "aws", "gcp", "azure")
VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
           "persistentVolumeClaim", "projected", "secret"}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the `restricted` profile refuses in ``pod`` (a PodSpec), one line each."""
    problems = []
    context = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(key)
    problems += [
        f"volume {v['name']}" for v in pod.get("volumes", []) if not set(v) - {"name"} <= VOLUMES
    ]
    for container in pod.get("initContainers", []) + pod["containers"]:
        name, own = container["name"], container.get("securityContext") or {}
        if own.get("privileged"):
            problems.append(f"{name}: privileged")
        if own.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation not false")
        capabilities = own.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if own.get("runAsNonRoot", context.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot not true")
        if own.get("runAsUser", context.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (own.get("seccompProfile") or context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
        if any(p.get("hostPort") for p in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


def hardening_gaps(pod: dict[str, Any]) -> list[str]:
    """Beyond the profile: read-only root (a writable /tmp emptyDir), CPU and memory limits
    equal to the requests (a ResourceQuota on limits admits the pod)."""
    problems = []
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod["containers"]:
        name = container["name"]
        if (container.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem writable")
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        if not tmp or "emptyDir" not in volumes[tmp[0]["name"]]:
            problems.append(f"{name}: no emptyDir at /tmp")
        resources = container.get("resources") or {}
        for amount in ("cpu", "memory"):
            limit = (resources.get("limits") or {}).get(amount)
            if limit is None or (resources.get("requests") or {}).get(amount) != limit:
                problems.append(f"{name}: {amount} request and limit unset or different")
    return problems


def _chart_pods() -> dict[str, dict[str, Any]]:
    pods = {}
    for env in ENVIRONMENTS:
        values = read_values([CHART / f"values-{env}.yaml"])
        values["auditRegistry"] = {"verify": {"enabled": True}}
        rendered = render_helm_templates(CHART, values)
        for name, text in rendered.items():
            if name.endswith(".yaml"):
                for obj in load_documents(text):
                    for i, pod in enumerate(_pod_specs(obj)):
                        pods[f"chart {env} {obj['kind']} {obj['metadata']['name']} {i}"] = pod
    return pods


def _training_pods() -> dict[str, dict[str, Any]]:
    """The launcher's pods; a TrainJob's as the Trainer merges its patch over the stock
    runtime's container (which sets only the image) and adds resourcesPerNode."""
    pods = {}
    stock = yaml.safe_load(
        shared_path("k8s", "runtimes", "torch-distributed.yaml")
        .read_text().replace("{{- with .Values.runtimes.commonLabels }}", "")
        .replace("{{- toYaml . | nindent 4 }}", "").replace("{{- end }}", "")
        .replace('{{- include "trainer.labels" . | nindent 4 }}', "")
    )  # fmt: skip
    [stock_container] = _pod_specs(stock)[0]["containers"]
    for gpus in (0, 8):
        for launcher in ("trainjob", "pytorchjob"):
            cfg = load_config(ROOT / "configs" / "adult.yaml", [
                f"pretrain.launcher={launcher}", "pretrain.nodes=2", f"pretrain.gpus_per_node={gpus}",
                "platform.storage.workspace_pvc=sslops-workspace",
            ])  # fmt: skip
            job = build_training_job(cfg, JobRequest("j", "team-a", "i", "/workspace/r"))
            if launcher == "trainjob":
                patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
                pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
                [container] = pod["containers"]
                merged = {**stock_container, **container,
                          "resources": job["spec"]["trainer"]["resourcesPerNode"]}  # fmt: skip
                pods[f"TrainJob gpus={gpus}"] = {**pod, "containers": [merged]}
            else:
                for role, replica in job["spec"]["pytorchReplicaSpecs"].items():
                    pods[f"PyTorchJob gpus={gpus} {role}"] = replica["template"]["spec"]
    return pods


def test_every_pod_sslops_defines_passes_restricted_and_is_hardened() -> None:
    pods = {**_chart_pods(), **_training_pods()}
    assert (
        len(pods) >= 4 * 3 + 2 + 4
    )  # per env: test pod, CronJob, runtime; 2 TrainJobs, 4 replicas
    problems = {
        name: restricted_violations(pod) + hardening_gaps(pod) for name, pod in pods.items()
    }
    assert {name: p for name, p in problems.items() if p} == {}


def test_the_overlays_pods_pass_restricted_and_are_hardened(tmp_path: Path) -> None:
    for env in ENVIRONMENTS:
        pods = [p for o in overlay_with_verify(env, tmp_path) for p in _pod_specs(o)]
        assert len(pods) == 2  # the training runtime's node, the CronJob's
        for pod in pods:
            assert restricted_violations(pod) + hardening_gaps(pod) == [], env


def test_the_checker_finds_what_restricted_refuses() -> None:
    """Positive control: a pod as the stock torch-distributed runtime alone makes it."""
    bare = {"containers": [{"name": "node", "image": "i"}], "volumes": [
        {"name": "h", "hostPath": {"path": "/"}}]}  # fmt: skip
    found = restricted_violations(bare)
    assert found == [
        "volume h", "node: allowPrivilegeEscalation not false",
        "node: capabilities do not drop ALL", "node: runAsNonRoot not true",
        "node: seccompProfile None",
    ]  # fmt: skip
    assert hardening_gaps(bare) == [
        "node: root filesystem writable", "node: no emptyDir at /tmp",
        "node: cpu request and limit unset or different",
        "node: memory request and limit unset or different",
    ]  # fmt: skip
