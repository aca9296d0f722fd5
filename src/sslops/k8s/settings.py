"""The ``platform`` config section: where pipeline tasks and training jobs run on Kubernetes.

One node-pool settings object feeds everything that places pods: the kfp-kubernetes
settings compiled into the pipeline, the TrainJob and the PyTorchJob. ``kfp.local``
ignores all of it, so ``sslops run`` works the same with any values here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

STAGES = ("prepare", "pretrain", "finetune", "evaluate", "export", "audit")
Stage = Literal["prepare", "pretrain", "finetune", "evaluate", "export", "audit"]


_NOT_CACHED: dict[Stage, bool] = {"audit": False}  # an audit must re-sign every run


class _Section(BaseModel):
    # Same rules as sslops.config's sections (that module imports this one).
    model_config = ConfigDict(extra="forbid", validate_default=True, coerce_numbers_to_str=True)


class TolerationConfig(_Section):
    """One Kubernetes toleration; the default tolerates any value of the key."""

    key: str = Field(description="The taint's key, e.g. nvidia.com/gpu.")
    operator: Literal["Exists", "Equal"] = Field(
        default="Exists", description="Exists: any value of the key; Equal: only `value`."
    )
    value: str | None = Field(default=None, description="The taint's value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect tolerated; null: every effect."
    )

    def to_k8s(self) -> dict[str, str]:
        toleration = {"key": self.key, "operator": self.operator}
        if self.value is not None:
            toleration["value"] = self.value
        if self.effect is not None:
            toleration["effect"] = self.effect
        return toleration


class NodePoolConfig(_Section):
    """Where a pod runs and what it gets: node labels, tolerated taints, CPU and memory."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the pods must match."
    )
    tolerations: list[TolerationConfig] = Field(
        default_factory=list, description="Taints of those nodes the pods tolerate."
    )
    cpu: str = Field(default="2", description="CPU request = limit, per pod (per node for jobs).")
    memory: str = Field(default="8Gi", description="Memory request = limit, per pod.")


class GpuPoolConfig(NodePoolConfig):
    """The GPU node pool. The defaults match the node label and taint docs/deploy.md sets up."""

    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"sslops.io/node-pool": "gpu"},
        description="Node labels the pods must match.",
    )
    tolerations: list[TolerationConfig] = Field(
        default_factory=lambda: [TolerationConfig(key="nvidia.com/gpu", effect="NoSchedule")],
        description="Taints of those nodes the pods tolerate.",
    )
    cpu: str = Field(default="8", description="CPU request = limit, per pod (per node for jobs).")
    memory: str = Field(default="64Gi", description="Memory request = limit, per pod.")
    accelerator_type: str = Field(
        default="nvidia.com/gpu", description="Extended resource name of the accelerator."
    )


class StorageConfig(_Section):
    """Where artifacts live and how tasks authenticate to the object store."""

    pipeline_root: str | None = Field(
        default=None, description="s3://, gs:// or minio:// artifact root; none = KFP's default."
    )
    workspace_pvc: str | None = Field(
        default=None, description="ReadWriteMany PVC shared by the launcher and training pods."
    )
    workspace_path: str = Field(default="/workspace", description="Where that PVC is mounted.")
    credentials_secret: str | None = Field(
        default=None, description="Secret whose keys become environment variables of every task."
    )
    credentials_keys: list[str] = Field(
        default_factory=lambda: ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        description="Keys of that Secret (each becomes the env var of the same name).",
    )


class PlatformConfig(_Section):
    """Kubernetes settings compiled into the pipeline and used by the training-job launcher."""

    cpu_pool: NodePoolConfig = Field(default_factory=NodePoolConfig)
    gpu_pool: GpuPoolConfig = Field(default_factory=GpuPoolConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    signing_key_secret: str | None = Field(
        default=None, description="Secret holding the audit signing key (PEM), for audit only."
    )
    signing_key_item: str = Field(default="signing-key", description="Key inside that Secret.")
    signing_key_env: str = Field(
        default="SSLOPS_SIGNING_KEY",
        description="Env var the key is exposed as in audit (the same as audit.signing.key_env).",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets the pods pull the sslops image with."
    )
    pod_labels: dict[str, str] = Field(
        default_factory=lambda: {
            "app.kubernetes.io/part-of": "sslops",
            "app.kubernetes.io/instance": "sslops",
        },
        description="Labels on every task and training pod: the NetworkPolicies of the Helm "
        "release named in app.kubernetes.io/instance (the overlays': sslops) select them.",
    )
    caching: dict[Stage, bool] = Field(
        default_factory=lambda: _NOT_CACHED.copy(),
        description="KFP caching per stage; stages not listed are cached, except audit.",
    )
    training_runtime: str = Field(
        default="torch-distributed", description="Training runtime a TrainJob refers to."
    )
    training_runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        default="ClusterTrainingRuntime",
        description="TrainingRuntime: the namespaced one manifests/components/gpu-pool adds.",
    )
    service_account: str | None = Field(
        default=None, description="Service account of the training pods; none = namespace default."
    )
    priority_class: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]$|^[a-z0-9][-a-z0-9.]*[a-z0-9]$",
        description="PriorityClass of a PyTorchJob's pods (priorityClassName); none = the "
        "cluster's default. A TrainJob's pods take theirs from the training runtime (the "
        "chart's trainingRuntime.priorityClassName): its CRD cannot set it per job.",
    )
    run_as_user: int | None = Field(
        default=10001, ge=1,
        description="The image's non-root UID; null: the platform assigns one (OpenShift).",
    )  # fmt: skip
    queue_name: str | None = Field(
        default=None, description="Kueue LocalQueue for training jobs (kueue.x-k8s.io/queue-name)."
    )
    job_timeout_minutes: int = Field(
        default=24 * 60, ge=1,
        description="Deadline of a training job, and of the in-pod GPU pretraining task.",
    )  # fmt: skip
    max_restarts: int = Field(
        default=3, ge=0, le=100,
        description="Restart budget of a training job: torchrun --max-restarts (a crashed rank "
        "restarts its node's ranks in place) and a PyTorchJob's runPolicy.backoffLimit (failed "
        "pods replaced); every restart resumes from the latest checkpoint.",
    )  # fmt: skip
    launcher_retries: int = Field(
        default=2, ge=0, le=10,
        description="KFP retries of the launch_pretrain task (set_retry, compiled in; Argo "
        "retries a failed launcher container): a launcher pod drained or preempted exits "
        "leaving its training job running, and the retry follows that job.",
    )  # fmt: skip
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="json: SSLOPS_LOG_FORMAT=json in every pipeline task's container and "
        "training pod, so their stderr is one JSON object a line for a log shipper "
        "(docs/automation.md); text sets nothing (plain lines).",
    )
    termination_grace_seconds: int = Field(
        default=120, ge=30, le=3600,
        description="Training pods' terminationGracePeriodSeconds: time from SIGTERM (a "
        "preempted node) to SIGKILL for the ranks to finish their step and write a checkpoint.",
    )  # fmt: skip

    def caches(self, stage: Stage) -> bool:
        """Whether KFP may cache ``stage``: as set in ``caching``, else the default (audit
        never: setting another stage's key must not turn the audit's re-signing off)."""
        return self.caching.get(stage, _NOT_CACHED.get(stage, True))
