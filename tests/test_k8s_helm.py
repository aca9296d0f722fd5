"""The Helm chart: lint clean, renders for every environment's values, every object validates
(kubernetes-validate at 1.31 for built-in kinds, the CRDs' schemas for custom resources)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from sslops import __version__ as VERSION
from sslops.errors import SslopsError
from sslops.k8s.render import read_values, render_helm, render_helm_templates
from sslops.k8s.validation import load_documents, validate_all
from tests.conftest import ROOT
from tests.test_k8s_kustomize import unversioned

helm_python = pytest.importorskip("helm_python")

CHART = ROOT / "helm" / "sslops"
ENVIRONMENTS = ("onprem", "aws", "gcp", "azure")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    out = {"default": load_documents(render_helm(CHART, []))}
    for env in ENVIRONMENTS:
        out[env] = load_documents(render_helm(CHART, [CHART / f"values-{env}.yaml"]))
    return out


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("env", ["default", *ENVIRONMENTS])
def test_helm_lint_is_clean(env: str) -> None:
    values = read_values([CHART / f"values-{env}.yaml"]) if env != "default" else {}
    report = helm_python.lint(str(CHART), values, strict=True, kube_version="v1.31.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert report["errors"] == [] and problems == [], report
    # The only remaining message is the informational "icon is recommended".
    assert all(m["error"] == "icon is recommended" for m in report["messages"]), report


@pytest.mark.parametrize("env", ["default", *ENVIRONMENTS])
def test_every_rendered_object_validates(env: str, rendered, crds) -> None:
    counts = validate_all(rendered[env], crds)
    expected = {"ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "PersistentVolumeClaim"}
    expected |= {"Pipeline", "PipelineVersion", "Pod"}
    if env != "default":
        expected |= {"TrainingRuntime", "ResourceQuota"}
    assert set(counts) == expected
    assert counts["PipelineVersion"] == 4 and counts["NetworkPolicy"] == 3


def test_schema_refuses_a_secret_value_and_unknown_keys() -> None:
    from sslops.k8s.render import RenderError

    for values, where in (
        (
            {"signingKey": {"secretName": "k", "key": "k", "value": "-----BEGIN KEY-----"}},
            "signingKey: unknown 'value'",
        ),
        ({"signingkey": {"secretName": "k"}}, "the top level: unknown 'signingkey' (did you "
         "mean 'signingKey'?); allowed: auditRegistry, cpuPool, fullnameOverride, global,"),
        ({"pipelines": {"pipelineRoot": "azure://container"}}, "pipelines.pipelineRoot: "),
        ({"image": {"digest": "latest"}}, "image.digest: "),
    ):  # fmt: skip
        with pytest.raises(RenderError) as caught:  # the key, dotted, as a values file has it
            render_helm_templates(CHART, values)
        message = str(caught.value)
        assert message.startswith(f"values do not match {CHART / 'values.schema.json'}: ")
        assert where in message and "\n" not in message, message


def test_several_schema_problems_are_one_line_each_with_the_key_meant() -> None:
    """Helm's report spans lines ("sslops:\\n- at '/image': ..."), which the CLI's one line
    showed as literal \\n; now each problem at its key, a misspelt key with the one meant."""
    from sslops.k8s.render import RenderError

    with pytest.raises(RenderError) as caught:
        render_helm_templates(CHART, {"image": {"pullPolicy": "Sometimes", "registri": "x"}})
    assert str(caught.value).split(": ", 1)[1] == (
        "image.pullPolicy: value must be one of 'Always', 'IfNotPresent', 'Never'; image: "
        "unknown 'registri' (did you mean 'registry'?); allowed: cudaDigest, digest, "
        "pullPolicy, registry, repository, tag"
    )


def test_a_values_file_that_is_not_yaml_is_named(tmp_path: Path) -> None:
    from sslops.errors import ConfigError

    (tmp_path / "values.yaml").write_text("replicaCount: [\n")
    with pytest.raises(
        ConfigError, match=r"values file .*values\.yaml is not valid YAML: .*line 2"
    ):
        read_values([tmp_path / "values.yaml"])
    with pytest.raises(SslopsError, match=r"values file is a folder: .*; expected a YAML file"):
        read_values([tmp_path])
    with pytest.raises(SslopsError, match=r"values file not found: .*nope\.yaml; expected a YAML"):
        read_values([tmp_path / "nope.yaml"])


def _leaves(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the values, each checked to have a described schema node."""
    leaves = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        assert key in schema.get("properties", {}), f"{path} is not in values.schema.json"
        node = schema["properties"][key]
        assert node.get("description"), f"{path} has no description in values.schema.json"
        if "properties" in node:
            leaves += _leaves(value, node, f"{path}.")
        else:
            leaves.append(path)
    return leaves


def test_every_value_is_documented() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    leaves = _leaves(values, schema)
    assert len(leaves) > 40
    for path in leaves:
        assert f"| `{path}` |" in readme, f"{path} is missing from helm/sslops/README.md"


def _pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods ``obj`` defines (metadata and spec): a Pod itself, a runtime's, a CronJob's."""
    if obj["kind"] == "Pod":
        return [obj]
    if obj["kind"] in ("TrainingRuntime", "ClusterTrainingRuntime"):
        jobs = obj["spec"]["template"]["spec"]["replicatedJobs"]
        return [job["template"]["spec"]["template"] for job in jobs]
    if obj["kind"] == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]]
    return []


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [pod["spec"] for pod in _pod_templates(obj)]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_pods_are_locked_down_and_sized(env: str, rendered) -> None:
    pods = [spec for obj in rendered[env] for spec in _pod_specs(obj)]
    assert len(pods) == 2  # the helm test pod and the training runtime's node
    for pod in pods:
        assert_locked_down_and_sized(pod)


def assert_locked_down_and_sized(pod: dict[str, Any]) -> None:
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert {"cpu", "memory"} <= set(limits)
        assert {k: requests[k] for k in ("cpu", "memory")} == {
            k: limits[k] for k in ("cpu", "memory")
        }, f"{container['name']}: CPU and memory requests differ from the limits"


def test_launcher_role_is_least_privilege(rendered) -> None:
    (role,) = _of_kind(rendered["default"], "Role")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules[(("trainer.kubeflow.org",), ("trainjobs",))] == {
        "create", "get", "list", "watch", "delete",
    }  # fmt: skip
    assert rules[(("",), ("pods/log",))] == {"get"}
    everything = [x for r in role["rules"] for x in r["resources"] + r["verbs"] + r["apiGroups"]]
    assert "*" not in everything and "secrets" not in everything
    (binding,) = _of_kind(rendered["default"], "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == ["sslops-launcher", "pipeline-runner"]


def test_network_policy_denies_by_default_and_allows_what_tasks_need(rendered) -> None:
    deny, _training, allow = _of_kind(rendered["aws"], "NetworkPolicy")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "egress" not in deny["spec"]
    egress = allow["spec"]["egress"]
    ports = [{p["port"] for p in rule.get("ports", [])} for rule in egress]
    assert {53} <= ports[0] and {8887, 8888} == ports[1] and {8080} == ports[2]
    s3 = egress[3]["to"][0]["ipBlock"]
    assert s3["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in s3["except"] and ports[3] == {443}
    (onprem_allow,) = [
        p for p in _of_kind(rendered["onprem"], "NetworkPolicy")
        if p["metadata"]["name"] == "sslops-allow"
    ]  # fmt: skip
    store = onprem_allow["spec"]["egress"][3]  # KFP's bundled SeaweedFS, at its pod's port
    assert store["to"][0]["podSelector"]["matchLabels"] == {"app": "seaweedfs"}
    assert store["ports"] == [{"protocol": "TCP", "port": 8333}]


def test_chart_installs_the_compiled_pipelines_unchanged(rendered) -> None:
    compiled = {
        unversioned(doc["metadata"]["name"]): doc
        for name in (
            "ssl_pipeline",
            "ssl_pipeline_multinode",
            "shadow_pipeline",
            "predict_pipeline",
        )
        for doc in load_documents(
            (ROOT / "pipelines" / "compiled" / f"{name}.k8s.yaml").read_text()
        )
    }
    versions = _of_kind(rendered["default"], "PipelineVersion")
    assert {unversioned(v["metadata"]["name"]) for v in versions} == {
        n for n, doc in compiled.items() if doc["kind"] == "PipelineVersion"
    }  # every compiled pipeline, the shadow and predict ones too
    for version in versions:
        assert version["spec"] == compiled[unversioned(version["metadata"]["name"])]["spec"]
        # Immutable on the cluster: a new spec is a new name, and old versions stay.
        annotations = version["metadata"]["annotations"]
        assert annotations["helm.sh/resource-policy"] == "keep"
        assert annotations["kustomize.toolkit.fluxcd.io/prune"] == "disabled"
    for version in _of_kind(rendered["aws"], "PipelineVersion"):
        root = version["spec"]["pipelineSpec"]["defaultPipelineRoot"]
        assert root == "s3://sslops-artifacts-111122223333/pipelines"


def test_image_mirror_and_digest_reach_every_task_and_the_launcher(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    values = tmp_path / "mirror.yaml"
    values.write_text(yaml.safe_dump({"image": {"registry": "mirror.local/ml", "digest": digest}}))
    objects = load_documents(render_helm(CHART, [values]))
    versions = _of_kind(objects, "PipelineVersion")
    images = [
        executor["container"]["image"]
        for version in versions
        for executor in version["spec"]["pipelineSpec"]["deploymentSpec"]["executors"].values()
    ]
    assert len(images) == 14
    assert all(i.startswith(f"mirror.local/ml/sslops:{VERSION}") for i in images), images
    assert images.count(f"mirror.local/ml/sslops:{VERSION}@{digest}") == 13  # the CPU tasks
    multinode = next(v for v in versions if "multinode-0-1-0-" in v["metadata"]["name"])
    launcher = multinode["spec"]["pipelineSpec"]["root"]["dag"]["tasks"]["launch-pretrain"]
    parameters = launcher["inputs"]["parameters"]
    assert parameters["image"]["runtimeValue"]["constant"] == images[0]
    assert (
        parameters["gpu_image"]["runtimeValue"]["constant"]
        == f"mirror.local/ml/sslops:{VERSION}-cuda"
    )


@pytest.mark.parametrize("env", ["default", *ENVIRONMENTS])
def test_the_workspace_is_kept_by_helm_and_by_gitops_tools(env: str, rendered) -> None:
    from tests.test_k8s_kustomize import KEEP

    (pvc,) = _of_kind(rendered[env], "PersistentVolumeClaim")
    annotations = pvc["metadata"]["annotations"]
    assert annotations["helm.sh/resource-policy"] == "keep"
    assert KEEP.items() <= annotations.items()


def test_notes_name_the_pipelines_and_warn_when_the_policy_allows_no_store() -> None:
    notes = render_helm_templates(CHART, {})["sslops/templates/NOTES.txt"]
    assert "  - sslops-ssl-pipeline\n" in notes and "  - sslops-predict-pipeline" in notes
    assert "WARNING: the NetworkPolicy denies sslops pods the object store" in notes
    onprem = read_values([CHART / "values-onprem.yaml"])
    assert "WARNING" not in render_helm_templates(CHART, onprem)["sslops/templates/NOTES.txt"]


def test_the_training_runtime_is_namespaced_unless_asked_cluster_wide(crds) -> None:
    onprem = read_values([CHART / "values-onprem.yaml"])
    for release, namespace in (("sslops", "team-a"), ("sslops", "team-b")):
        objects = load_documents(_rendered_yaml(onprem, release, namespace))
        [runtime] = [o for o in objects if o["kind"].endswith("TrainingRuntime")]
        assert (runtime["kind"], runtime["metadata"]["namespace"]) == ("TrainingRuntime", namespace)
        assert not [o for o in objects if "namespace" not in o["metadata"]]  # nothing cluster-wide
    onprem["trainingRuntime"]["kind"] = "ClusterTrainingRuntime"
    [runtime] = [o for o in load_documents(_rendered_yaml(onprem)) if o["kind"].endswith("Runtime")]
    assert runtime["kind"] == "ClusterTrainingRuntime" and "namespace" not in runtime["metadata"]
    assert validate_all([runtime], crds) == {"ClusterTrainingRuntime": 1}


def _rendered_yaml(
    values: dict[str, Any], release: str = "sslops", namespace: str = "kubeflow"
) -> str:
    rendered = render_helm_templates(CHART, values, release, namespace)
    return "\n---\n".join(text for name, text in rendered.items() if name.endswith(".yaml"))


def test_an_object_store_without_labels_or_ports_is_refused() -> None:
    from sslops.k8s.render import RenderError

    for store in ({"namespace": "kubeflow", "ports": [8333]},
                  {"namespace": "kubeflow", "podLabels": {"app": "seaweedfs"}}):  # fmt: skip
        with pytest.raises(RenderError, match="give podLabels and ports too"):
            render_helm_templates(CHART, {"networkPolicy": {"objectStore": store}})


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        ({"to": [{"ipblock": {"cidr": "10.0.0.0/8"}}]}, "extraEgress.0.to.0: additional "
         "properties 'ipblock'"),
        ({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "excpet": ["10.0.0.0/8"]}}]},
         "to.0.ipBlock: additional properties 'excpet'"),
        ({"to": [{}]}, "extraEgress.0.to.0: minProperties"),
        ({"to": [{"ipBlock": {"cidr": "10.0.0.1"}}]}, "to.0.ipBlock.cidr"),
        ({"to": [{"podSelector": {"matchLabel": {"a": "b"}}}]}, "'matchLabel'"),
        ({"ports": [{"protocl": "TCP", "port": 443}]}, "extraEgress.0.ports.0"),
    ],
)  # fmt: skip
def test_extra_egress_rules_are_checked_field_by_field(rule: dict[str, Any], named: str) -> None:
    """A misspelt field of an extra egress rule is dropped by the API server: a misspelt
    ``except`` widens the rule to the whole range, a misspelt peer becomes an error at apply
    time. The schema refuses both, by key; the documented rules (values-gcp.yaml) pass."""
    from sslops.k8s.render import RenderError

    with pytest.raises(RenderError) as caught:
        render_helm_templates(CHART, {"networkPolicy": {"extraEgress": [rule]}})
    assert named in str(caught.value) and "\n" not in str(caught.value)
    valid = [{"to": [{"namespaceSelector": {"matchLabels": {"a": "b"}},
                      "podSelector": {"matchExpressions": [{"key": "k", "operator": "Exists"}]}}],
              "ports": [{"protocol": "UDP", "port": 53, "endPort": 60}]}]  # fmt: skip
    render_helm_templates(CHART, {"networkPolicy": {"extraEgress": valid}})


def _versions(values: dict[str, Any], tmp_path: Path) -> dict[str, dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    objects = _of_kind(load_documents(render_helm(CHART, [path])), "PipelineVersion")
    return {v["metadata"]["name"]: v for v in objects}


def test_a_changed_spec_is_a_new_version_and_pull_secrets_reach_every_task(
    tmp_path: Path,
) -> None:
    # KFP refuses an update of a PipelineVersion's spec: an upgrade that changes it must
    # create a version of another name (the old one is kept: helm.sh/resource-policy).
    default = _versions({}, tmp_path)
    assert _versions({"workspace": {"size": "2Ti"}}, tmp_path).keys() == default.keys()
    for changed in ({"image": {"tag": "0.1.1"}}, {"pipelines": {"pipelineRoot": "s3://b/p"}},
                    {"imagePullSecrets": ["regcred"]}):  # fmt: skip
        renamed = _versions(changed, tmp_path)
        assert not renamed.keys() & default.keys(), changed
        assert {unversioned(n) for n in renamed} == {unversioned(n) for n in default}
    for version in renamed.values():  # the pull secret, on every task's pod
        kubernetes = version["spec"]["platformSpec"]["platforms"]["kubernetes"]
        executors = kubernetes["deploymentSpec"]["executors"]
        tasks = version["spec"]["pipelineSpec"]["deploymentSpec"]["executors"]
        assert executors.keys() == tasks.keys()
        assert all(e["imagePullSecret"] == [{"secretName": "regcred"}] for e in executors.values())


@pytest.mark.parametrize(
    ("release", "namespace", "message"),
    [
        ("Bad Name!", "kubeflow", "--release 'Bad Name!': expected a DNS-1123 label (lowercase "
         "letters, digits and '-', at most 53 characters)"),
        ("r" * 54, "kubeflow", "at most 53 characters"),
        ("sslops", "Bad NS", "--namespace 'Bad NS': expected a DNS-1123 label (lowercase "
         "letters, digits and '-', at most 63 characters)"),
        ("sslops", "team-a-", "--namespace 'team-a-'"),
        ("sslops", "team.a", "--namespace 'team.a'"),
        ("sslops", "n" * 64, "at most 63 characters"),
    ],
)  # fmt: skip
def test_release_and_namespace_must_be_dns_labels(
    release: str, namespace: str, message: str, capsys
) -> None:
    from sslops.cli import main
    from sslops.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        render_helm_templates(CHART, {}, release, namespace)
    assert message in str(raised.value)
    args = ["render", "--target", "helm", "--chart", str(CHART)]
    assert main([*args, "--release", release, "--namespace", namespace]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_a_valid_release_and_namespace_reach_the_objects() -> None:
    objects = load_documents(render_helm(CHART, [], "r" * 53, "n" * 63))
    assert {o["metadata"].get("namespace") for o in objects} <= {"n" * 63, None}


def test_schema_takes_kubernetes_quantities_and_refuses_a_trailing_slash() -> None:
    from sslops.k8s.render import RenderError

    for size in ("1.5Ti", "500G", "750Gi"):
        render_helm_templates(CHART, {"workspace": {"size": size}})
    for values, where in (
        ({"workspace": {"size": "500 GB"}}, "workspace.size"),
        ({"image": {"registry": "mirror.local/ml/"}}, "image.registry"),
    ):
        with pytest.raises(RenderError, match=where.replace(".", r"\.")):
            render_helm_templates(CHART, values)


@pytest.mark.parametrize("uid", [1000680000, None])
def test_the_uid_reaches_every_pod_task_and_training_job_or_none_is_set(
    uid: int | None, tmp_path: Path, crds
) -> None:
    """One value sets the identity everywhere (a large UID stays an integer, not 1.00068e+09);
    null sets none, for OpenShift's restricted-v2 SCC, which assigns the namespace's UID."""
    from sslops.config import config_from_json
    from sslops.k8s.specs import JobRequest, build_training_job

    values = read_values([CHART / "values-onprem.yaml"])
    values["securityContext"] = {"runAsUser": uid}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    objects = load_documents(render_helm(CHART, [path]))
    assert validate_all(objects, crds)
    pods = [spec for obj in objects for spec in _pod_specs(obj)]
    assert len(pods) == 2
    for pod in pods:
        assert_locked_down_and_sized(pod)
        identity = {
            k: pod["securityContext"].get(k) for k in ("runAsUser", "runAsGroup", "fsGroup")
        }
        assert identity == dict.fromkeys(identity, uid)
        assert all(c["securityContext"].get("runAsUser") == uid for c in pod["containers"])
    for version in _of_kind(objects, "PipelineVersion"):
        kubernetes = version["spec"]["platformSpec"]["platforms"]["kubernetes"]
        for name, executor in kubernetes["deploymentSpec"]["executors"].items():
            context = executor["securityContext"]
            assert context["runAsNonRoot"] is True, name
            expected = None if uid is None else str(uid)  # int64 is a string in KFP's JSON
            assert (context.get("runAsUser"), context.get("runAsGroup")) == (expected,) * 2, name
        # the launcher's training jobs take the identity from the config the pipeline runs
        parameters = version["spec"]["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
        cfg = config_from_json(parameters["config_json"]["defaultValue"])
        assert cfg.platform.run_as_user == uid
        request = JobRequest(name="j", namespace="kubeflow", image="i", run_dir="/workspace/r")
        job = build_training_job(cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(
            update={"launcher": "trainjob"})}), request)  # fmt: skip
        patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
        pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
        assert pod["securityContext"].get("runAsUser") == uid
        assert pod["securityContext"]["runAsNonRoot"] is True


# Fields the API server refuses to change on an existing object (`helm upgrade` would fail
# on the first changed one), by kind; a Pod or Job that is not a hook is immutable as a whole.
IMMUTABLE = {
    "PersistentVolumeClaim": (("spec", "accessModes"), ("spec", "storageClassName"),
                              ("spec", "volumeName"), ("spec", "volumeMode")),
    "RoleBinding": (("roleRef",),),
    "Job": (("spec",),),
    "Pod": (("spec",),),
    "PipelineVersion": (("spec",),),  # KFP's webhook refuses an update of a version's spec
}  # fmt: skip


def _release(version: str, tmp_path: Path, values: list[Path]) -> dict[tuple[str, str], Any]:
    """The chart rendered as release ``version`` (chart and app version), by kind and name."""
    chart = tmp_path / version / "sslops"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = meta["appVersion"] = version
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return {
        (o["kind"], o["metadata"]["name"]): o for o in load_documents(render_helm(chart, values))
    }


@pytest.mark.parametrize("env", ["default", "onprem"])
def test_helm_upgrade_to_the_next_release_changes_no_immutable_field(
    env: str, tmp_path: Path
) -> None:
    """``helm upgrade`` from this release to the next: every object both render keeps its
    immutable fields and its selectors (a selector naming the version would leave the old
    release's pods unselected); new pipeline versions get new names and the old ones stay."""
    values = [CHART / f"values-{env}.yaml"] if env != "default" else []
    old, new = _release("0.1.0", tmp_path, values), _release("0.2.0", tmp_path, values)
    hooks = {
        key for key, o in new.items() if "helm.sh/hook" in o["metadata"].get("annotations", {})
    }
    for key in sorted(set(old) & set(new) - hooks):
        for path in IMMUTABLE.get(key[0], ()):
            before, after = old[key], new[key]
            for part in path:
                before, after = (before or {}).get(part), (after or {}).get(part)
            assert before == after, f"{key}: {'.'.join(path)} changes on upgrade"

    def selectors(obj: Any) -> list[Any]:
        if isinstance(obj, dict):
            found = [v for k, v in obj.items() if k in ("podSelector", "selector", "matchLabels")]
            return found + [s for v in obj.values() for s in selectors(v)]
        return [s for v in obj for s in selectors(v)] if isinstance(obj, list) else []

    for key in sorted(set(old) & set(new)):
        assert selectors(old[key]) == selectors(new[key]), f"{key}: a selector names the version"
        assert "app.kubernetes.io/version" not in json.dumps(selectors(new[key])), key
    replaced = {k for k in set(old) - set(new)}
    assert replaced and {k[0] for k in replaced} == {"PipelineVersion"}, replaced
    for key in replaced:
        assert old[key]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", key
    for key in hooks:  # helm test pods: deleted before the next release's are created
        policy = new[key]["metadata"]["annotations"].get("helm.sh/hook-delete-policy", "")
        assert "before-hook-creation" in policy, key


def test_the_training_runtime_carries_a_restart_budget(crds) -> None:
    """A TrainJob's pods are restarted by its runtime's JobSet failurePolicy, which no
    runtime of the chart set (a lost node failed the job outright)."""
    values = read_values([CHART / "values-onprem.yaml"])
    for budget in (3, 0, 5):
        if budget != 3:
            values["trainingRuntime"]["maxRestarts"] = budget
        [runtime] = [
            o for o in load_documents(_rendered_yaml(values)) if o["kind"].endswith("Runtime")
        ]
        assert runtime["spec"]["template"]["spec"]["failurePolicy"] == {"maxRestarts": budget}
        assert validate_all([runtime], crds) == {"TrainingRuntime": 1}


def test_two_releases_in_one_namespace_share_no_object_and_each_uses_its_own(crds) -> None:
    """Two teams' releases in one namespace (found by the tenant review: both created the
    workspace PVC, the four Pipelines and their versions and the training runtime under the
    same names, so Helm refused the second install; a changed workspace.name or signing key
    reached no task). Release "sslops" keeps the compiled names (the kustomize comparison)."""
    from sslops.config import config_from_json

    values = read_values([CHART / "values-onprem.yaml"])
    values["auditRegistry"] = {"verify": {"enabled": True}}
    values["signingKey"] = {"secretName": "team-key", "key": "pem"}
    by_release = {}
    for release in ("team-a", "team-b"):
        objects = load_documents(_rendered_yaml(values, release, "shared"))
        assert validate_all(objects, crds)
        by_release[release] = objects
    names = [{(o["kind"], o["metadata"]["name"]) for o in objs} for objs in by_release.values()]
    assert names[0] & names[1] == set()
    for release, objects in by_release.items():
        own = {"app.kubernetes.io/part-of": "sslops", "app.kubernetes.io/instance": release}
        (claim,) = _of_kind(objects, "PersistentVolumeClaim")
        assert claim["metadata"]["name"] == f"{release}-sslops-workspace"
        (runtime,) = _of_kind(objects, "TrainingRuntime")
        assert runtime["metadata"]["name"] == f"{release}-sslops-torch-distributed"
        (cronjob,) = _of_kind(objects, "CronJob")
        volumes = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
        assert volumes[0]["persistentVolumeClaim"]["claimName"] == f"{release}-sslops-workspace"
        pipelines = {p["metadata"]["name"] for p in _of_kind(objects, "Pipeline")}
        assert f"{release}-sslops-ssl-pipeline" in pipelines and len(pipelines) == 4
        keys = []
        for version in _of_kind(objects, "PipelineVersion"):
            assert version["spec"]["pipelineName"] in pipelines
            assert version["metadata"]["name"].startswith(version["spec"]["pipelineName"] + "-")
            kubernetes = version["spec"]["platformSpec"]["platforms"]["kubernetes"]
            executors = kubernetes["deploymentSpec"]["executors"].values()
            mounts = [m for e in executors for m in e.get("pvcMount", [])]
            assert mounts and all(
                m["constant"] == m["pvcNameParameter"]["runtimeValue"]["constant"]
                == f"{release}-sslops-workspace" for m in mounts
            )  # fmt: skip
            keys += [s for e in executors for s in e.get("secretAsEnv", [])]
            parameters = version["spec"]["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
            cfg = config_from_json(parameters["config_json"]["defaultValue"])
            # the launcher mounts this claim in the training pods
            assert cfg.platform.storage.workspace_pvc == f"{release}-sslops-workspace"
            # the release's label on every task's pod, in the config and (the launcher's
            # pod_labels) on the training pods: its NetworkPolicies select it (tenant2 review)
            assert all(e["podMetadata"]["labels"] == own for e in executors)
            assert cfg.platform.pod_labels == own
            tasks = version["spec"]["pipelineSpec"]["root"]["dag"]["tasks"]
            if "launch-pretrain" in tasks:
                launcher = tasks["launch-pretrain"]["inputs"]["parameters"]["pod_labels"]
                assert launcher["runtimeValue"]["constant"] == own
        for obj in objects:
            for pod in _pod_templates(obj):
                assert own.items() <= pod["metadata"]["labels"].items(), obj["kind"]
        for policy in _of_kind(objects, "NetworkPolicy"):
            assert own.items() <= policy["spec"]["podSelector"]["matchLabels"].items()
        assert len(keys) == 2  # the audit task of each training pipeline
        for secret in keys:
            assert secret["secretName"] == "team-key"
            assert secret["secretNameParameter"]["runtimeValue"]["constant"] == "team-key"
            assert [k["secretKey"] for k in secret["keyToEnv"]] == ["pem"]


def test_pipeline_names_fit_the_label_kfp_gives_versions_whatever_the_release() -> None:
    """KFP's webhook labels each PipelineVersion with its Pipeline's name (a label value: 63
    characters at most); the longest release name Helm takes (53) must still install."""
    objects = load_documents(render_helm(CHART, [], "r" * 53))
    names = {p["metadata"]["name"] for p in _of_kind(objects, "Pipeline")}
    assert len(names) == 4 and max(map(len, names)) == 63
    assert "r" * 40 + "-ssl-pipeline-multinode" in names
    rendered = render_helm_templates(CHART, {"pipelines": {"namePrefix": "t"}}, "r" * 53)
    names = {
        o["metadata"]["name"] for o in load_documents(rendered["sslops/templates/pipeline.yaml"])
    }
    assert "t-ssl-pipeline-multinode" in names


def test_priority_classes_reach_the_charts_pods_and_the_training_runtime(crds) -> None:
    """Found by the tenant review: no pod the chart defines could be given a PriorityClass."""
    values = read_values([CHART / "values-onprem.yaml"])
    values["auditRegistry"] = {"verify": {"enabled": True}}
    values["priorityClassName"] = "team-a-batch"

    def priorities(values: dict[str, Any]) -> dict[str, str | None]:
        objects = load_documents(_rendered_yaml(values))
        assert validate_all(objects, crds)
        return {o["kind"]: s.get("priorityClassName") for o in objects for s in _pod_specs(o)}

    both = {"Pod": "team-a-batch", "CronJob": "team-a-batch", "TrainingRuntime": "team-a-batch"}
    assert priorities(values) == both
    values["trainingRuntime"]["priorityClassName"] = "team-a-training"
    assert priorities(values) == {**both, "TrainingRuntime": "team-a-training"}
    del values["priorityClassName"], values["trainingRuntime"]["priorityClassName"]
    assert priorities(values) == dict.fromkeys(both)


def test_a_teams_gpu_pool_reaches_every_pod_that_needs_a_gpu(crds) -> None:
    """Found by the tenant review: the GPU pool's node labels and taints were compiled into the
    pipelines the chart installs (the one-pod pretraining task, the launcher's config), so a
    team whose GPU nodes are labelled otherwise had to recompile; trainingRuntime's reached
    the runtime alone."""
    from sslops.config import config_from_json
    from sslops.k8s.settings import GpuPoolConfig
    from sslops.k8s.specs import JobRequest, build_training_job

    # the chart's default pool (empty values) is the compiled one: the pipelines render as
    # compiled (test_chart_installs_the_compiled_pipelines_unchanged) and so does the runtime
    compiled = GpuPoolConfig()
    runtime = _of_kind(load_documents(_rendered_yaml({"trainingRuntime": {"create": True}})),
                       "TrainingRuntime")[0]  # fmt: skip
    (pod,) = _pod_specs(runtime)
    assert pod["nodeSelector"] == compiled.node_selector
    assert pod["tolerations"] == [t.to_k8s() for t in compiled.tolerations]
    pool = {
        "nodeSelector": {"example.com/team": "a", "example.com/gpu": "h100"},
        "tolerations": [
            {"key": "example.com/team", "operator": "Equal", "value": "a", "effect": "NoSchedule"}
        ],
    }
    values = read_values([CHART / "values-onprem.yaml"])
    values["gpuPool"] = pool
    objects = load_documents(_rendered_yaml(values))
    assert validate_all(objects, crds)
    (runtime,) = _of_kind(objects, "TrainingRuntime")
    (pod,) = _pod_specs(runtime)
    assert (pod["nodeSelector"], pod["tolerations"]) == (pool["nodeSelector"], pool["tolerations"])
    placed = 0
    for version in _of_kind(objects, "PipelineVersion"):
        spec = version["spec"]
        executors = spec["platformSpec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for name, executor in spec["pipelineSpec"]["deploymentSpec"]["executors"].items():
            placement = executors[name]
            if "accelerator" in executor["container"].get("resources", {}):
                assert placement["nodeSelector"] == {"labels": pool["nodeSelector"]}
                assert placement["tolerations"] == pool["tolerations"]
                placed += 1
            else:
                assert "nodeSelector" not in placement and "tolerations" not in placement
        parameters = spec["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
        cfg = config_from_json(parameters["config_json"]["defaultValue"])
        if spec["pipelineName"].endswith("-multinode"):
            request = JobRequest(name="j", namespace="kubeflow", image="i", run_dir="/workspace/r")
            job = build_training_job(cfg, request)
            patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
            pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
            assert pod["nodeSelector"] == pool["nodeSelector"]
            assert pod["tolerations"] == pool["tolerations"]
        if "gpu_pool" in parameters["config_json"]["defaultValue"]:
            assert cfg.platform.gpu_pool.node_selector == pool["nodeSelector"]
    assert placed == 1  # the one-pod pipeline's pretraining task
    values["trainingRuntime"]["nodeSelector"] = {"only": "runtime"}
    (runtime,) = _of_kind(load_documents(_rendered_yaml(values)), "TrainingRuntime")
    assert _pod_specs(runtime)[0]["nodeSelector"] == {"only": "runtime"}


def test_a_cpu_pool_and_both_pools_sizes_reach_every_task_and_training_job(crds) -> None:
    """Found by the scheduling review: the chart could place only the GPU work, so the short
    CPU tasks could not be kept off a spot pool (or put on a tainted CPU pool) without
    recompiling, and every task's size was compiled in: 2 CPU and 8Gi for a stage whose
    peak on the demo config is under 1.2 GB, 8 CPU and 64Gi for the one GPU task, more
    than many one-GPU nodes have. cpuPool and gpuPool.cpu/memory set them per release."""
    from sslops.config import config_from_json
    from sslops.k8s.specs import JobRequest, build_training_job

    on_demand = {"karpenter.sh/capacity-type": "on-demand"}
    batch = [{"key": "example.com/batch", "operator": "Exists", "effect": "NoSchedule"}]
    values = read_values([CHART / "values-onprem.yaml"])
    values["auditRegistry"] = {"verify": {"enabled": True}}
    values["cpuPool"] = {"nodeSelector": on_demand, "tolerations": batch, "cpu": "500m",
                         "memory": "2Gi"}  # fmt: skip
    values["gpuPool"] = {"cpu": 4, "memory": "16Gi"}
    objects = load_documents(_rendered_yaml(values))
    assert validate_all(objects, crds)
    (cronjob,) = _of_kind(objects, "CronJob")
    (pod,) = _pod_specs(cronjob)
    assert (pod["nodeSelector"], pod["tolerations"]) == (on_demand, batch)
    sizes = {"cpu": ("500m", "4"), "memory": ("2Gi", "16Gi")}
    tasks = 0
    for version in _of_kind(objects, "PipelineVersion"):
        spec = version["spec"]
        placed = spec["platformSpec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for name, executor in spec["pipelineSpec"]["deploymentSpec"]["executors"].items():
            resources = executor["container"]["resources"]
            gpu = "accelerator" in resources
            for amount, (cpu_task, gpu_task) in sizes.items():
                for kind in ("Request", "Limit"):
                    field = f"resource{amount.capitalize()}{kind}"
                    assert resources[field] == (gpu_task if gpu else cpu_task), (name, field)
                    # KFP's driver reads the float fields only without these: none is left
                    assert f"{amount}{kind}" not in resources, (name, amount, kind)
            if gpu:
                assert placed[name]["nodeSelector"] == {"labels": {"sslops.io/node-pool": "gpu"}}
            else:
                assert placed[name]["nodeSelector"] == {"labels": on_demand}, name
                assert placed[name]["tolerations"] == batch, name
            tasks += 1
        parameters = spec["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
        cfg = config_from_json(parameters["config_json"]["defaultValue"])
        assert (cfg.platform.cpu_pool.cpu, cfg.platform.cpu_pool.memory) == ("500m", "2Gi")
        assert cfg.platform.cpu_pool.node_selector == on_demand
        assert [t.to_k8s() for t in cfg.platform.cpu_pool.tolerations] == batch
        assert (cfg.platform.gpu_pool.cpu, cfg.platform.gpu_pool.memory) == ("4", "16Gi")
        if spec["pipelineName"].endswith("-multinode"):  # the launcher's job, as it sizes it
            request = JobRequest(name="j", namespace="kubeflow", image="i", run_dir="/workspace/r")
            job = build_training_job(cfg, request)
            assert validate_all([job], crds)
            per_node = job["spec"]["trainer"]["resourcesPerNode"]["limits"]
            assert (per_node["cpu"], per_node["memory"]) == ("4", "16Gi")
    assert tasks == 14  # 6 + 6 training tasks, shadow, predict


def test_every_task_sets_requests_equal_to_limits_for_a_quota_on_limits(rendered) -> None:
    """A namespace ResourceQuota on limits.cpu/limits.memory refuses a pod without limits
    (docs/deploy.md, section 11): every compiled task sets both, GPU tasks the GPU too."""
    for version in _of_kind(rendered["default"], "PipelineVersion"):
        for name, executor in version["spec"]["pipelineSpec"]["deploymentSpec"][
            "executors"
        ].items():
            resources = executor["container"]["resources"]
            for amount in ("Cpu", "Memory"):
                request = resources[f"resource{amount}Request"]
                assert request == resources[f"resource{amount}Limit"], (name, amount)
            if "accelerator" in resources:
                assert int(resources["accelerator"]["resourceCount"]) >= 1, name
