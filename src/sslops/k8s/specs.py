"""Multi-node pretraining objects: a Kubeflow Trainer TrainJob or a Training Operator PyTorchJob.

Both are built from one :class:`Placement` (the node pool, GPUs, processes and the shared
workspace, read from the config), so the two kinds cannot drift apart: same node
selector, tolerations, resources, security context and volumes. Each node runs
``torchrun -m sslops.pretrain`` on files in the workspace PVC; the engines supply
the rendezvous (``PET_*`` for a TrainJob, ``MASTER_ADDR``/``RANK`` for a PyTorchJob).

The restart budget (``platform.max_restarts``) is torchrun's ``--max-restarts`` in both
kinds (a crashed rank restarts its node's ranks in place) and a PyTorchJob's
``runPolicy.backoffLimit``. A TrainJob cannot carry its JobSet's ``failurePolicy`` (the
CRD lets a runtime patch change ``replicatedJobs`` only): that budget is the runtime's
(the chart's ``trainingRuntime.maxRestarts``, the gpu-pool component's runtime).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sslops.config import Config
from sslops.console import LOG_FORMAT_ENV
from sslops.k8s.settings import NodePoolConfig

TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
PYTORCHJOB_API = "kubeflow.org/v1"
LAUNCHER = "sslops.io/launcher"  # manager of the TrainJob's runtime patch
TRAINER_CONTAINER = "node"  # the container name in the torch-distributed runtime
PYTORCH_CONTAINER = "pytorch"  # the container name the Training Operator requires
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # platform.queue_name: Kueue's LocalQueue
SHM_SIZE = "16Gi"  # NCCL and DataLoader workers share memory through /dev/shm
SHM_PATH = "/dev/shm"  # a per-pod memory emptyDir (SHM_SIZE) is mounted there  # nosec B108
# torchrun's own SIGKILL comes this much before the kubelet's, so torchrun can still
# report how its ranks ended.
SHUTDOWN_MARGIN_SECONDS = 10


def cuda_image(image: str) -> str:
    """The CUDA variant of an sslops image: the same tag with ``-cuda`` (see Containerfile)."""
    return f"{image}-cuda"


@dataclass(frozen=True)
class Placement:
    """Where and how big: the settings both job kinds are built from."""

    nodes: int
    processes_per_node: int
    gpus_per_node: int
    pool: NodePoolConfig
    accelerator_type: str
    workspace_pvc: str
    workspace_path: str
    run_as_user: int | None
    timeout_seconds: int
    grace_seconds: int = 120
    max_restarts: int = 3
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    log_format: str = "text"  # platform.log_format: SSLOPS_LOG_FORMAT in the pods when json
    priority_class: str | None = None  # a PyTorchJob's pods (a TrainJob's: its runtime)

    @classmethod
    def from_config(cls, config: Config, pod_labels: Mapping[str, str] | None = None) -> Placement:
        """``pod_labels`` (the pipeline's) go over the config's ``platform.pod_labels``."""
        pretrain, platform = config.pretrain, config.platform
        gpus = pretrain.gpus_per_node
        labels = {
            **platform.pod_labels,
            **(pod_labels or {}),
            "app.kubernetes.io/name": "sslops",
            "app.kubernetes.io/component": "pretrain",
        }
        if platform.queue_name:
            labels[QUEUE_LABEL] = platform.queue_name
        return cls(
            nodes=pretrain.nodes,
            processes_per_node=pretrain.processes,
            gpus_per_node=gpus,
            pool=platform.gpu_pool if gpus else platform.cpu_pool,
            accelerator_type=platform.gpu_pool.accelerator_type,
            workspace_pvc=platform.storage.workspace_pvc or "",
            workspace_path=platform.storage.workspace_path,
            run_as_user=platform.run_as_user,
            timeout_seconds=platform.job_timeout_minutes * 60,
            grace_seconds=platform.termination_grace_seconds,
            max_restarts=platform.max_restarts,
            labels=labels,
            service_account=platform.service_account,
            image_pull_secrets=tuple(platform.image_pull_secrets),
            log_format=platform.log_format,
            priority_class=platform.priority_class,
        )

    def resources(self) -> dict[str, dict[str, Any]]:
        amounts: dict[str, Any] = {"cpu": self.pool.cpu, "memory": self.pool.memory}
        if self.gpus_per_node:
            amounts[self.accelerator_type] = self.gpus_per_node
        return {"requests": dict(amounts), "limits": dict(amounts)}

    def pod_security_context(self) -> dict[str, Any]:
        """Non-root; the image's UID, or none where the platform assigns one (OpenShift's
        restricted-v2 SCC refuses a UID outside the namespace's range)."""
        identity = {} if self.run_as_user is None else {
            "runAsUser": self.run_as_user,
            "runAsGroup": self.run_as_user,
            "fsGroup": self.run_as_user,
        }  # fmt: skip
        return {"runAsNonRoot": True, **identity, "seccompProfile": {"type": "RuntimeDefault"}}

    @staticmethod
    def container_security_context() -> dict[str, Any]:
        return {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }

    def env(self) -> list[dict[str, str]]:
        """On SIGTERM torchrun passes the signal to its ranks (which finish the step and
        checkpoint it) and SIGKILLs them after ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` (30 s by
        default, whatever the pod's grace period): the pod's grace less a margin."""
        shutdown = self.grace_seconds - SHUTDOWN_MARGIN_SECONDS
        env = [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(shutdown)},
        ]
        if self.log_format != "text":  # the ranks' lines as JSON (torchrun's own stay text)
            env.append({"name": LOG_FORMAT_ENV, "value": self.log_format})
        return env

    def volumes(self) -> list[dict[str, Any]]:
        return [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": self.workspace_pvc}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
        ]

    def volume_mounts(self) -> list[dict[str, Any]]:
        return [
            {"name": "workspace", "mountPath": self.workspace_path},
            {"name": "tmp", "mountPath": "/tmp"},  # a per-pod emptyDir, not a shared /tmp  # nosec B108
            {"name": "dshm", "mountPath": SHM_PATH},
        ]


@dataclass(frozen=True)
class JobRequest:
    """What to run: the object's name and namespace, the image and the run folder."""

    name: str
    namespace: str
    image: str
    run_dir: str  # inside the workspace: config.json, prepared/, pretrained/ (written)


def pretrain_args(request: JobRequest, max_restarts: int) -> list[str]:
    """torchrun's restart budget, then one rank of the pretrain stage (sslops.pretrain).
    Each restart joins under its own store prefix and resumes from the latest checkpoint."""
    return [
        f"--max-restarts={max_restarts}",
        "-m", "sslops.pretrain",
        "--config", f"{request.run_dir}/config.json",
        "--prepared", f"{request.run_dir}/prepared",
        "--out", f"{request.run_dir}/pretrained",
    ]  # fmt: skip


def _metadata(request: JobRequest, placement: Placement) -> dict[str, Any]:
    return {"name": request.name, "namespace": request.namespace, "labels": placement.labels}


def build_trainjob(
    placement: Placement,
    request: JobRequest,
    runtime: str = "torch-distributed",
    runtime_kind: str = "ClusterTrainingRuntime",
) -> dict[str, Any]:
    """A ``trainer.kubeflow.org/v1alpha1`` TrainJob on the ``torch-distributed`` runtime.

    Size and image go in ``spec.trainer``; the node pool, volumes and security context go
    in a runtime patch, the only place a TrainJob may change the runtime's pod template.
    """
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": placement.grace_seconds,
        "nodeSelector": placement.pool.node_selector,
        "tolerations": [t.to_k8s() for t in placement.pool.tolerations],
        "securityContext": placement.pod_security_context(),
        "volumes": placement.volumes(),
        "containers": [
            {
                "name": TRAINER_CONTAINER,
                "securityContext": placement.container_security_context(),
                "volumeMounts": placement.volume_mounts(),
            }
        ],
    }
    if placement.service_account:
        pod_spec["serviceAccountName"] = placement.service_account
    if placement.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in placement.image_pull_secrets]
    node_job = {
        "name": "node",
        "template": {
            "spec": {"template": {"metadata": {"labels": placement.labels}, "spec": pod_spec}}
        },
    }
    return {
        "apiVersion": TRAINJOB_API,
        "kind": "TrainJob",
        "metadata": _metadata(request, placement),
        "spec": {
            "runtimeRef": {
                "apiGroup": "trainer.kubeflow.org",
                "kind": runtime_kind,
                "name": runtime,
            },
            "activeDeadlineSeconds": placement.timeout_seconds,
            "trainer": {
                "image": request.image,
                "command": ["torchrun"],
                "args": pretrain_args(request, placement.max_restarts),
                "numNodes": placement.nodes,
                "numProcPerNode": placement.processes_per_node,
                "resourcesPerNode": placement.resources(),
                "env": placement.env(),
            },
            "runtimePatches": [
                {
                    "manager": LAUNCHER,
                    "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_job]}}},
                }
            ],
        },
    }


def build_pytorchjob(placement: Placement, request: JobRequest) -> dict[str, Any]:
    """A ``kubeflow.org/v1`` PyTorchJob: one Master and ``nodes - 1`` Workers, same pod each."""
    rendezvous = [
        f"--nnodes={placement.nodes}",
        f"--nproc-per-node={placement.processes_per_node}",
        # Set by the Training Operator on every replica; Kubernetes expands $(VAR).
        "--node-rank=$(RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
    ]
    container = {
        "name": PYTORCH_CONTAINER,
        "image": request.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["torchrun"],
        "args": rendezvous + pretrain_args(request, placement.max_restarts),
        "env": placement.env(),
        "resources": placement.resources(),
        "securityContext": placement.container_security_context(),
        "volumeMounts": placement.volume_mounts(),
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": placement.grace_seconds,
        "nodeSelector": placement.pool.node_selector,
        "tolerations": [t.to_k8s() for t in placement.pool.tolerations],
        "securityContext": placement.pod_security_context(),
        "volumes": placement.volumes(),
        "containers": [container],
    }
    if placement.service_account:
        pod_spec["serviceAccountName"] = placement.service_account
    if placement.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in placement.image_pull_secrets]
    if placement.priority_class:
        pod_spec["priorityClassName"] = placement.priority_class

    def replica(count: int) -> dict[str, Any]:
        return {
            "replicas": count,
            "restartPolicy": "OnFailure",
            "template": {"metadata": {"labels": placement.labels}, "spec": pod_spec},
        }

    replicas = {"Master": replica(1)}
    if placement.nodes > 1:
        replicas["Worker"] = replica(placement.nodes - 1)
    return {
        "apiVersion": PYTORCHJOB_API,
        "kind": "PyTorchJob",
        "metadata": _metadata(request, placement),
        "spec": {
            "nprocPerNode": str(placement.processes_per_node),
            "runPolicy": {
                "cleanPodPolicy": "Running",
                "backoffLimit": placement.max_restarts,
                "activeDeadlineSeconds": placement.timeout_seconds,
            },
            "pytorchReplicaSpecs": replicas,
        },
    }


def build_training_job(
    cfg: Config, request: JobRequest, pod_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The object ``pretrain.launcher`` asks for, placed by ``platform``; its pods carry
    ``pod_labels`` too (the launcher's: the pipeline's, a Helm release's name among them)."""
    placement = Placement.from_config(cfg, pod_labels)
    if cfg.pretrain.launcher == "trainjob":
        platform = cfg.platform
        return build_trainjob(
            placement, request, platform.training_runtime, platform.training_runtime_kind
        )
    if cfg.pretrain.launcher == "pytorchjob":
        return build_pytorchjob(placement, request)
    raise ValueError(
        f"pretrain.launcher {cfg.pretrain.launcher!r} runs in the pipeline's own pod; "
        "a training job needs pretrain.launcher trainjob or pytorchjob"
    )
