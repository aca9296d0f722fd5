"""TrainJob / PyTorchJob specs from the platform config, validated against the real CRDs;
the compiled pipelines carry the node pools and the accelerator limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sslops.config import load_config
from sslops.errors import ConfigError
from sslops.k8s.specs import JobRequest, build_training_job
from sslops.k8s.validation import ManifestError, validate_object
from tests.conftest import ROOT

GPU_POOL = [
    "pretrain.nodes=2",
    "pretrain.gpus_per_node=8",
    "platform.storage.workspace_pvc=sslops-workspace",
    "platform.gpu_pool.node_selector={cloud.google.com/gke-accelerator: nvidia-h100-80gb}",
    "platform.gpu_pool.tolerations=[{key: nvidia.com/gpu, operator: Equal, value: present, "
    "effect: NoSchedule}, {key: dedicated, operator: Equal, value: ml, effect: NoExecute}]",
    "platform.queue_name=team-a",
]
REQUEST = JobRequest("sslops-pretrain-0123", "team-a", "registry.local/sslops:0.1.0-cuda", "/w/r")


def _job(launcher: str, *overrides: str) -> dict[str, Any]:
    cfg = load_config(
        ROOT / "configs" / "adult.yaml", [f"pretrain.launcher={launcher}", *overrides]
    )
    return build_training_job(cfg, REQUEST)


def _pods(job: dict[str, Any]) -> list[dict[str, Any]]:
    if job["kind"] == "TrainJob":
        patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
        return [patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]]
    return [r["template"]["spec"] for r in job["spec"]["pytorchReplicaSpecs"].values()]


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
def test_two_nodes_of_eight_gpus_on_a_tainted_pool(launcher: str, crds) -> None:
    job = _job(launcher, *GPU_POOL)
    assert validate_object(job, crds) == "crd"
    for pod in _pods(job):
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
        assert pod["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
             "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"},
        ]  # fmt: skip
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert {
            "name": "workspace",
            "persistentVolumeClaim": {"claimName": "sslops-workspace"},
        } in (pod["volumes"])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    if launcher == "trainjob":
        trainer = job["spec"]["trainer"]
        assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
        resources = trainer["resourcesPerNode"]
        assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
        assert trainer["command"] == ["torchrun"]
        assert trainer["args"][:4] == ["--max-restarts=3", "-m", "sslops.pretrain", "--config"]
    else:
        replicas = job["spec"]["pytorchReplicaSpecs"]
        assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 1)
        assert job["spec"]["nprocPerNode"] == "8"
        container = replicas["Worker"]["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch"
        assert "--nnodes=2" in container["args"] and "--node-rank=$(RANK)" in container["args"]
        resources = container["resources"]
    for amounts in (resources["requests"], resources["limits"]):
        assert amounts["nvidia.com/gpu"] == 8


def test_cpu_job_uses_the_cpu_pool_and_no_accelerator(crds) -> None:
    job = _job("trainjob", "platform.storage.workspace_pvc=ws", "pretrain.nodes=4")
    validate_object(job, crds)
    trainer = job["spec"]["trainer"]
    assert trainer["resourcesPerNode"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert trainer["numProcPerNode"] == 1
    assert _pods(job)[0]["nodeSelector"] == {}


def test_a_misspelt_field_fails_schema_validation(crds) -> None:
    job = _job("trainjob", *GPU_POOL)
    job["spec"]["trainer"]["numNode"] = 2
    with pytest.raises(ManifestError, match=r"TrainJob/sslops-pretrain-0123: spec\.trainer"):
        validate_object(job, crds)
    job = _job("pytorchjob", *GPU_POOL)
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    with pytest.raises(ManifestError, match=r"pytorchReplicaSpecs\.Master\.replicas"):
        validate_object(job, crds)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pretrain.nodes=2"], r"pretrain\.nodes=2 needs pretrain\.launcher trainjob"),
        (["pretrain.launcher=trainjob"], r"needs platform\.storage\.workspace_pvc"),
        (["platform.caching.pretrian=false"], r"platform\.caching\.pretrian"),
        (["platform.gpu_pool.tolerations=[{key: a, effect: Sometimes}]"], r"effect"),
        # each rank takes the GPU of its local rank: ranks 2 and 3 of a 2-GPU pod failed on
        # the GPU node after scheduling, and 1 process on 8 requested GPUs left 7 idle
        (
            ["pretrain.gpus_per_node=2", "pretrain.processes_per_node=4"],
            r"processes_per_node=4 with pretrain\.gpus_per_node=2: expected one process per GPU",
        ),
        (
            [
                "pretrain.launcher=trainjob",
                "platform.storage.workspace_pvc=ws",
                "pretrain.gpus_per_node=8",
                "pretrain.processes_per_node=1",
            ],
            r"processes_per_node 0 or 8\).*the rest stay idle",
        ),
    ],
)
def test_platform_mistakes_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "adult.yaml", overrides)


def _compiled(name: str) -> list[dict[str, Any]]:
    text = (ROOT / "pipelines" / "compiled" / name).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_compiled_gpu_task_carries_accelerator_and_gpu_pool() -> None:
    spec, platform = _compiled("ssl_pipeline.yaml")
    executors = spec["deploymentSpec"]["executors"]
    accelerator = executors["exec-pretrain"]["container"]["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "1")
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert placed["exec-pretrain"]["nodeSelector"]["labels"] == {"sslops.io/node-pool": "gpu"}
    assert placed["exec-pretrain"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    # the training jobs' deadline (platform.job_timeout_minutes): a hung GPU pod frees its GPU
    assert placed["exec-pretrain"]["activeDeadlineSeconds"] == "86400"
    for name, executor in executors.items():
        if name != "exec-pretrain":
            assert "accelerator" not in executor["container"].get("resources", {}), name
            assert "activeDeadlineSeconds" not in placed[name], name
        assert placed[name]["podMetadata"]["labels"]["app.kubernetes.io/part-of"] == "sslops"
        assert placed[name]["securityContext"]["runAsNonRoot"] is True
    audit_env = placed["exec-audit"]["secretAsEnv"][0]
    assert audit_env["secretName"] == "sslops-signing-key"
    assert audit_env["keyToEnv"] == [{"envVar": "SSLOPS_SIGNING_KEY", "secretKey": "signing-key"}]
    caching = {t: v["cachingOptions"] for t, v in spec["root"]["dag"]["tasks"].items()}
    assert caching["audit"] == {} and caching["prepare"] == {"enableCache": True}


def test_compiled_multinode_pipeline_launches_a_trainjob(crds) -> None:
    pipeline, version = _compiled("ssl_pipeline_multinode.k8s.yaml")
    for obj in (pipeline, version):
        assert validate_object(obj, crds) == "crd"
    tasks = version["spec"]["pipelineSpec"]["root"]["dag"]["tasks"]
    assert tasks["launch-pretrain"]["componentRef"]["name"] == "comp-launch-pretrain"
    # the run form's config_json may say pytorchjob: the graph does not name the compiled kind
    assert (
        tasks["launch-pretrain"]["taskInfo"]["name"] == "self-supervised pretraining (training job)"
    )
    placed = version["spec"]["platformSpec"]["platforms"]["kubernetes"]["deploymentSpec"]
    mount = placed["executors"]["exec-launch-pretrain"]["pvcMount"][0]
    assert (mount["constant"], mount["mountPath"]) == ("sslops-workspace", "/workspace")
    # the launcher reads its own pod on SIGTERM (a drained node leaves the job running)
    assert placed["executors"]["exec-launch-pretrain"]["fieldPathAsEnv"] == [
        {"fieldPath": "metadata.name", "name": "SSLOPS_POD_NAME"}
    ]
    # ... and the task is retried (platform.launcher_retries), so the retry follows the job;
    # the retry window spans the job's deadline, not KFP's default hour from the first try
    retry = tasks["launch-pretrain"]["retryPolicy"]
    assert (retry["maxRetryCount"], retry["backoffMaxDuration"]) == (2, "86400s")
    assert all("retryPolicy" not in t for n, t in tasks.items() if n != "launch-pretrain")


def test_launcher_retries_zero_compiles_no_retry(tmp_path: Path) -> None:
    from sslops.pipeline.ssl_pipeline import compile_pipeline

    overrides = ["pretrain.launcher=trainjob", "platform.storage.workspace_pvc=ws",
                 "platform.job_timeout_minutes=90"]  # fmt: skip
    for retries, expected in ((0, None), (5, (5, "5400s"))):
        cfg = load_config(ROOT / "configs" / "adult.yaml",
                          [*overrides, f"platform.launcher_retries={retries}"])  # fmt: skip
        spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", cfg).read_text()))
        retry = spec["root"]["dag"]["tasks"]["launch-pretrain"].get("retryPolicy")
        got = None if retry is None else (retry["maxRetryCount"], retry["backoffMaxDuration"])
        assert got == expected


def test_turning_one_stage_s_caching_off_keeps_the_audit_uncached(tmp_path: Path) -> None:
    """`--set platform.caching.prepare=false` (new data under the same path) replaced the
    default `{audit: false}`, so the audit task was cached: a rerun reused the earlier bundle,
    neither signed nor filed again."""
    from sslops.pipeline.ssl_pipeline import compile_pipeline

    cfg = load_config(ROOT / "configs" / "adult.yaml", ["platform.caching.prepare=false"])
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", cfg).read_text()))
    caching = {t: v.get("cachingOptions", {}) for t, v in spec["root"]["dag"]["tasks"].items()}
    assert not caching["prepare"].get("enableCache") and not caching["audit"].get("enableCache")
    assert caching["finetune"] == {"enableCache": True}
    cfg = load_config(ROOT / "configs" / "adult.yaml", ["platform.caching.audit=true"])
    assert cfg.platform.caches("audit")  # only when asked for


@pytest.mark.parametrize("name", ["ssl_pipeline.yaml", "ssl_pipeline_multinode.yaml"])
def test_prepare_reads_data_from_the_workspace_volume(name: str) -> None:
    """config_json says data.train may be a file on the workspace volume: the prepare task
    must mount it (it did not, so a cluster run could read only the packaged demo data)."""
    _, platform = _compiled(name)
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mount = placed["exec-prepare"]["pvcMount"][0]
    assert (mount["constant"], mount["mountPath"]) == ("sslops-workspace", "/workspace")


def test_render_trainjob_prints_a_valid_object(crds, tmp_path: Path) -> None:
    from sslops.k8s.render import render_trainjob
    from sslops.k8s.validation import load_documents

    cfg = load_config(ROOT / "configs" / "adult.yaml", ["pretrain.launcher=trainjob", *GPU_POOL])
    (job,) = load_documents(render_trainjob(cfg, namespace="team-a", image="r.local/sslops:1"))
    validate_object(job, crds)
    assert job["spec"]["trainer"]["image"] == "r.local/sslops:1-cuda"


def test_render_trainjob_refuses_a_namespace_that_is_not_a_dns_label(capsys) -> None:
    from sslops.cli import main

    args = ["render", "--target", "trainjob", "--config", str(ROOT / "configs" / "adult.yaml"),
            "--set", "pretrain.launcher=trainjob", "--set", "platform.storage.workspace_pvc=ws"]  # fmt: skip
    for namespace in ("Bad NS", "-a", "a" * 64, ""):
        assert main([*args, f"--namespace={namespace}"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == (
            f"error: --namespace {namespace!r}: expected a DNS-1123 label (lowercase letters, "
            "digits and '-', at most 63 characters)\n"
        )
    assert main([*args, "--namespace", "team-a"]) == 0
    assert "namespace: team-a" in capsys.readouterr().out


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
@pytest.mark.parametrize(
    ("overrides", "grace"), [((), 120), (("platform.termination_grace_seconds=600",), 600)]
)
def test_preempted_pods_get_time_to_checkpoint(launcher: str, overrides, grace: int, crds) -> None:
    # Kubernetes' default grace (30 s) and torchrun's shutdown timeout (30 s) would SIGKILL
    # ranks still finishing their step and writing the checkpoint SIGTERM asked for.
    job = _job(launcher, *GPU_POOL, *overrides)
    validate_object(job, crds)
    assert all(pod["terminationGracePeriodSeconds"] == grace for pod in _pods(job))
    if launcher == "trainjob":
        env = job["spec"]["trainer"]["env"]
    else:
        env = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
            "env"
        ]
    assert {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(grace - 10)} in env


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
def test_training_pods_keep_their_checkpoints_on_the_workspace_volume(launcher: str) -> None:
    from sslops.pretrain.stage import checkpoint_dir_for

    for overrides in [(), ("pretrain.checkpoint_dir=/workspace/ckpt/run-1",)]:
        cfg = load_config(
            ROOT / "configs" / "adult.yaml",
            [f"pretrain.launcher={launcher}", *GPU_POOL, *overrides],
        )
        mounts = _pods(
            build_training_job(cfg, JobRequest("j", "ns", "img", "/workspace/sslops/j"))
        )[0]
        (mount,) = [m for m in mounts["containers"][0]["volumeMounts"] if m["name"] == "workspace"]
        folder = checkpoint_dir_for(cfg, Path("/workspace/sslops/j/pretrained"))
        assert folder.is_relative_to(mount["mountPath"]), folder
    for elsewhere in ["/tmp/ckpt", "ckpt", "/workspace-other/ckpt"]:
        with pytest.raises(
            ConfigError,
            match=f"pretrain.checkpoint_dir '{elsewhere}' is not on the workspace volume",
        ):
            load_config(
                ROOT / "configs" / "adult.yaml",
                [
                    f"pretrain.launcher={launcher}",
                    *GPU_POOL,
                    f"pretrain.checkpoint_dir={elsewhere}",
                ],
            )


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
def test_the_restart_budget_reaches_torchrun_and_the_job(launcher: str, crds) -> None:
    """Before: torchrun got no --max-restarts (a crashed rank failed its whole pod) and a
    PyTorchJob's backoffLimit was a fixed 3."""
    for budget, overrides in ((3, []), (7, ["platform.max_restarts=7"])):
        job = _job(launcher, *GPU_POOL, *overrides)
        assert validate_object(job, crds) == "crd"
        if launcher == "trainjob":
            args = job["spec"]["trainer"]["args"]
        else:
            (master, worker) = job["spec"]["pytorchReplicaSpecs"].values()
            assert master["template"]["spec"]["containers"][0]["args"] == worker["template"][
                "spec"]["containers"][0]["args"]  # fmt: skip
            args = master["template"]["spec"]["containers"][0]["args"]
            assert job["spec"]["runPolicy"]["backoffLimit"] == budget
        assert f"--max-restarts={budget}" in args
        assert args.index(f"--max-restarts={budget}") < args.index("-m")  # torchrun's, not ours
    with pytest.raises(ConfigError, match="max_restarts"):
        _job(launcher, *GPU_POOL, "platform.max_restarts=-1")


def test_a_trainjob_cannot_carry_its_jobset_failure_policy(crds) -> None:
    """Why the TrainJob's pod-level budget lives in the runtime (the chart's
    trainingRuntime.maxRestarts): the CRD refuses a failurePolicy in a runtime patch."""
    job = _job("trainjob", *GPU_POOL)
    job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "failurePolicy"] = {"maxRestarts": 3}  # fmt: skip
    with pytest.raises(ManifestError, match="failurePolicy"):
        validate_object(job, crds)


def _env_of(job: dict[str, Any]) -> list[list[dict[str, str]]]:
    if job["kind"] == "TrainJob":
        return [job["spec"]["trainer"]["env"]]
    return [r["template"]["spec"]["containers"][0]["env"]
            for r in job["spec"]["pytorchReplicaSpecs"].values()]  # fmt: skip


@pytest.mark.parametrize("name", ["ssl_pipeline", "ssl_pipeline_multinode"])
def test_platform_log_format_json_reaches_every_task_and_training_pod(
    name: str, tmp_path: Path, crds
) -> None:
    """SSLOPS_LOG_FORMAT=json reached no container on a cluster: nothing set it in a task or
    a training pod (found by the logs review). platform.log_format: json sets it in each
    (the pipeline tasks and both job kinds); text, the default, sets nothing."""
    from sslops.pipeline.ssl_pipeline import compile_pipeline

    wanted = {"name": "SSLOPS_LOG_FORMAT", "value": "json"}
    multinode = (
        ["pretrain.launcher=trainjob", "platform.storage.workspace_pvc=w"]
        if name.endswith("multinode")
        else []
    )
    for log_format in ("json", "text"):
        sets = [f"platform.log_format={log_format}", *multinode]
        cfg = load_config(ROOT / "configs" / "adult.yaml", sets)
        spec = next(
            yaml.safe_load_all(compile_pipeline(tmp_path / f"{name}.yaml", cfg).read_text())
        )
        executors = spec["deploymentSpec"]["executors"]
        assert len(executors) >= 6 and ("exec-launch-pretrain" in executors) == bool(multinode)
        for executor in executors.values():
            env = executor["container"].get("env", [])
            assert (wanted in env) == (log_format == "json"), executor["container"]["args"]
        for launcher in ("trainjob", "pytorchjob"):
            job = _job(launcher, *GPU_POOL, f"platform.log_format={log_format}")
            validate_object(job, crds)
            for env in _env_of(job):
                assert (wanted in env) == (log_format == "json")


def test_a_priority_class_reaches_every_pytorchjob_pod_and_is_refused_for_a_trainjob(
    crds,
) -> None:
    """A shared cluster's PriorityClasses (found by the tenant review: no pod sslops creates
    could be given one). A TrainJob's runtime patch has no priorityClassName (the CRD), so
    the config says where it goes instead of dropping it."""
    job = _job("pytorchjob", *GPU_POOL, "platform.priority_class=team-a-batch")
    assert validate_object(job, crds) == "crd"
    pods = _pods(job)
    assert len(pods) == 2 and all(p["priorityClassName"] == "team-a-batch" for p in pods)
    assert all("priorityClassName" not in p for p in _pods(_job("pytorchjob", *GPU_POOL)))
    with pytest.raises(ConfigError, match=r"platform.priority_class 'team-a-batch' cannot "
                       r"reach a TrainJob's pods .*trainingRuntime.priorityClassName"):  # fmt: skip
        _job("trainjob", *GPU_POOL, "platform.priority_class=team-a-batch")
    with pytest.raises(ConfigError, match=r"platform\.priority_class"):
        _job("pytorchjob", *GPU_POOL, "platform.priority_class=Team_A")


def test_the_gpu_task_gets_a_memory_dev_shm_and_the_kueue_queue(tmp_path: Path) -> None:
    """The one-pod pipeline's GPU task (found by the scheduling review): its torchrun ranks
    (one per GPU) talk NCCL through /dev/shm, which was the runtime's 64 MiB, while the
    training jobs' pods had a 16Gi memory emptyDir; and platform.queue_name labelled the
    training jobs only, so under Kueue's pod integration the GPU pod bypassed the queue's
    GPU quota. The CPU tasks get neither."""
    from sslops.pipeline.ssl_pipeline import compile_pipeline

    sets = ["pretrain.gpus_per_node=4", "platform.queue_name=team-a"]
    cfg = load_config(ROOT / "configs" / "adult.yaml", sets)
    _, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", cfg).read_text())
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    shm = {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "16Gi"}
    assert placed["exec-pretrain"]["emptyDirMounts"] == [shm]
    assert placed["exec-pretrain"]["podMetadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    for name, executor in placed.items():
        if name != "exec-pretrain":
            assert "emptyDirMounts" not in executor, name
            assert "kueue.x-k8s.io/queue-name" not in executor["podMetadata"]["labels"], name
    # the committed one-pod pipeline (1 GPU) has the same /dev/shm
    _, committed = _compiled("ssl_pipeline.yaml")
    gpu_task = committed["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-pretrain"]
    assert gpu_task["emptyDirMounts"] == [shm]
