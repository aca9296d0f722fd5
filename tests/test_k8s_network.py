"""The NetworkPolicies, evaluated: which connection between which pods they let through, for
the chart and every overlay. Pods' labels are the ones sslops gives them (the compiled
pipelines' tasks, the launcher's training jobs, the audit-registry CronJob); a small
evaluator of the NetworkPolicy rules (pod and namespace selectors, ports) stands in for the
CNI, which no test here has."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from sslops.config import config_from_json
from sslops.k8s.render import (
    RenderError,
    kubectl,
    read_values,
    render_helm_templates,
    render_kustomize,
)
from sslops.k8s.specs import JobRequest, build_training_job
from sslops.k8s.validation import load_documents
from tests.conftest import ROOT

CHART = ROOT / "helm" / "sslops"
ENVIRONMENTS = ("onprem", "aws", "gcp", "azure")
NAMESPACE = "kubeflow"

Pod = tuple[str, dict[str, str]]  # namespace, labels


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        present, value, values = key in labels, labels.get(key), expression.get("values") or []
        holds = {
            "In": present and value in values,
            "NotIn": not present or value not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not holds:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_namespace: str, pod: Pod) -> bool:
    namespace, labels = pod
    if "ipBlock" in peer:
        return False  # addresses outside the cluster's pods
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif namespace != policy_namespace:
        return False
    return _matches(peer.get("podSelector", {}), labels)


def _port_matches(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(
        p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports
    )


def _allowed(
    policies: list[dict[str, Any]], direction: str, pod: Pod, peer: Pod, port: int, protocol: str
) -> bool:
    """Whether ``pod``'s policies allow traffic in ``direction`` (ingress from ``peer``,
    egress to ``peer``): allowed when none selects it for that direction, else when a rule
    of one of them matches."""
    key = "ingress" if direction == "Ingress" else "egress"
    side = "from" if key == "ingress" else "to"
    selecting = [
        p for p in policies
        if p["metadata"]["namespace"] == pod[0]
        and _matches(p["spec"]["podSelector"], pod[1])
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]  # fmt: skip
    if not selecting:
        return True
    return any(
        _port_matches(rule, port, protocol)
        and (
            side not in rule
            or any(_peer_matches(q, p["metadata"]["namespace"], peer) for q in rule[side])
        )
        for p in selecting
        for rule in p["spec"].get(key) or []
    )


def connects(
    policies: list[dict[str, Any]], source: Pod, target: Pod, port: int, protocol: str = "TCP"
) -> bool:
    return _allowed(policies, "Egress", source, target, port, protocol) and _allowed(
        policies, "Ingress", target, source, port, protocol
    )


def _launched(objects: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """The labels of the multi-node pipeline's launcher task and of the training pods it
    creates: from the run's default config_json and the launcher's pod_labels, as the
    launcher builds them, for a PyTorchJob and a TrainJob alike."""
    [version] = [
        o for o in objects
        if o["kind"] == "PipelineVersion" and o["spec"]["pipelineName"].endswith("-multinode")
    ]  # fmt: skip
    pipeline = version["spec"]["pipelineSpec"]
    executors = version["spec"]["platformSpec"]["platforms"]["kubernetes"]["deploymentSpec"]
    task = executors["executors"]["exec-launch-pretrain"]["podMetadata"]["labels"]
    parameters = pipeline["root"]["dag"]["tasks"]["launch-pretrain"]["inputs"]["parameters"]
    # (a pipeline compiled before the launcher took pod_labels: the config's alone)
    pod_labels = parameters.get("pod_labels", {}).get("runtimeValue", {}).get("constant")
    cfg = config_from_json(
        pipeline["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    )
    request = JobRequest("j", NAMESPACE, "i", "/workspace/r")
    labels = []
    for launcher in ("pytorchjob", "trainjob"):
        update = {"launcher": launcher, "nodes": 2}
        job = build_training_job(
            cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update=update)}),
            request,
            pod_labels,
        )
        if launcher == "pytorchjob":
            template = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
        else:
            runtime = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]
            template = runtime["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
        labels.append(template["metadata"]["labels"])
    assert labels[0] == labels[1]
    return task, labels[0]


def _pods(objects: list[dict[str, Any]]) -> dict[str, Pod]:
    """The pods sslops runs, with the labels they get, and the services they reach."""
    task, training = _launched(objects)
    pods = {
        "task": (NAMESPACE, task),
        "training": (NAMESPACE, training),
        "other": (NAMESPACE, {"app": "notebook"}),
        "dns": ("kube-system", {"k8s-app": "kube-dns"}),
        "kfp-api": (NAMESPACE, {"app": "ml-pipeline"}),
    }
    for obj in objects:
        if obj["kind"] == "CronJob":
            pods["verify"] = (
                NAMESPACE,
                obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
            )
    return pods


def _chart(env: str, release: str = "sslops", **values: Any) -> list[dict[str, Any]]:
    values = {**read_values([CHART / f"values-{env}.yaml"]), **values}
    values["auditRegistry"] = {"verify": {"enabled": True}}
    rendered = render_helm_templates(CHART, values, release=release)
    return load_documents("\n---\n".join(t for n, t in rendered.items() if n.endswith(".yaml")))


def overlay_with_verify(env: str, tmp_path: Path, **kustomization: Any) -> list[dict[str, Any]]:
    """The overlay with the audit-registry component, as a team would add it in its own
    kustomization on top (with ``kustomization``'s fields: a namespace, a namePrefix)."""
    try:
        kubectl()
    except RenderError as exc:
        pytest.skip(str(exc))
    folder = tmp_path / env
    folder.mkdir()
    manifests = ROOT / "manifests"
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(manifests / "overlays" / env, folder)],
        "components": [os.path.relpath(manifests / "components" / "audit-registry-verify", folder)],
        **kustomization,
    }))  # fmt: skip
    return load_documents(render_kustomize(folder))


# (source, target, port, protocol): allowed?
EXPECTED = {
    # torchrun's rendezvous (c10d) and NCCL between the nodes of a training job
    ("training", "training", 29500, "TCP"): True,
    ("training", "training", 41234, "TCP"): True,
    # every sslops pod that has network: DNS and the KFP API
    ("task", "dns", 53, "UDP"): True,
    ("task", "kfp-api", 8888, "TCP"): True,
    ("training", "dns", 53, "UDP"): True,
    # nothing else reaches a pipeline task, and a task reaches no other sslops pod
    ("task", "task", 8080, "TCP"): False,
    ("training", "task", 8080, "TCP"): False,
    ("task", "training", 29500, "TCP"): False,
    ("other", "training", 29500, "TCP"): False,
    ("other", "task", 8080, "TCP"): False,
    # the nightly audit-registry check needs no network at all (docs/deploy.md, step 4)
    ("verify", "dns", 53, "UDP"): False,
    ("verify", "kfp-api", 8888, "TCP"): False,
    ("training", "verify", 8080, "TCP"): False,
    ("verify", "training", 29500, "TCP"): False,
}


@pytest.mark.parametrize("source", ["chart", "overlay"])
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_policies_let_through_exactly_what_each_pod_needs(
    source: str, env: str, tmp_path: Path
) -> None:
    """Found by the tenant review: every sslops pod (each pipeline task, the CronJob that
    needs no network) accepted connections on any port from every other, and the CronJob
    had DNS, the KFP API and the object store; only training nodes talk to each other."""
    objects = _chart(env) if source == "chart" else overlay_with_verify(env, tmp_path)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    pods = _pods(objects)
    got = {
        case: connects(policies, pods[case[0]], pods[case[1]], case[2], case[3])
        for case in EXPECTED
    }
    assert got == EXPECTED


# Two teams' releases side by side in one namespace; fraud's allows its database too.
TWO_RELEASES = {
    # each release's training nodes reach each other, never the other release's
    ("fraud-training", "fraud-training", 29500, "TCP"): True,
    ("credit-training", "credit-training", 29500, "TCP"): True,
    ("fraud-training", "credit-training", 29500, "TCP"): False,
    ("credit-training", "fraud-training", 41234, "TCP"): False,
    ("fraud-task", "credit-training", 29500, "TCP"): False,
    # one release's allowed destinations are not the other's
    ("fraud-task", "fraud-db", 5432, "TCP"): True,
    ("fraud-training", "fraud-db", 5432, "TCP"): True,
    ("credit-task", "fraud-db", 5432, "TCP"): False,
    ("credit-training", "fraud-db", 5432, "TCP"): False,
    ("credit-verify", "fraud-db", 5432, "TCP"): False,
    # and each keeps what it needs
    ("credit-task", "dns", 53, "UDP"): True,
    ("credit-training", "kfp-api", 8888, "TCP"): True,
    ("fraud-verify", "dns", 53, "UDP"): False,
}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_two_releases_in_one_namespace_keep_to_their_own_pods(env: str) -> None:
    """Found by the tenant2 review: two releases' policies selected every sslops pod
    (app.kubernetes.io/part-of: sslops), so one release's training pods accepted the
    other's, and one release's extraEgress let the other's pods out too."""
    database = [{
        "to": [{"podSelector": {"matchLabels": {"app": "fraud-db"}}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }]  # fmt: skip
    fraud = _chart(env, "fraud", networkPolicy={
        **read_values([CHART / f"values-{env}.yaml"]).get("networkPolicy", {}),
        "extraEgress": database,
    })  # fmt: skip
    credit = _chart(env, "credit")
    policies = [o for o in fraud + credit if o["kind"] == "NetworkPolicy"]
    assert len(policies) == 6
    pods = {
        **{f"fraud-{k}": v for k, v in _pods(fraud).items()},
        **{f"credit-{k}": v for k, v in _pods(credit).items()},
        "fraud-db": (NAMESPACE, {"app": "fraud-db"}),
        "dns": ("kube-system", {"k8s-app": "kube-dns"}),
        "kfp-api": (NAMESPACE, {"app": "ml-pipeline"}),
    }
    got = {
        case: connects(policies, pods[case[0]], pods[case[1]], case[2], case[3])
        for case in TWO_RELEASES
    }
    assert got == TWO_RELEASES
