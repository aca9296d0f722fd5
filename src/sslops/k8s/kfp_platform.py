"""Compile-time placement of KFP tasks with kfp-kubernetes, from the ``platform`` config.

Every task gets its node pool (selector, tolerations, CPU/memory), the pod labels the
NetworkPolicy selects, image pull secrets, the storage-credential Secret as environment
variables, a non-root security context and its stage's caching setting. GPU tasks get
the accelerator type and limit, a memory ``/dev/shm`` and the Kueue queue label
(``platform.queue_name``); the audit task gets the signing-key Secret as the
environment variable the audit stage reads (``audit.signing.key_env``); with
``platform.log_format: json`` every task gets ``SSLOPS_LOG_FORMAT=json``;
tasks that share files with training pods mount the workspace PVC. ``kfp.local`` ignores
all of this, so local runs are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kfp import dsl, kubernetes

from sslops.console import LOG_FORMAT_ENV
from sslops.k8s.settings import PlatformConfig, Stage
from sslops.k8s.specs import QUEUE_LABEL, SHM_PATH, SHM_SIZE


def make_pipeline(
    function: Callable[..., None], name: str, description: str, platform: PlatformConfig
) -> Any:
    """``function`` as a KFP pipeline rooted at the platform's pipeline root. The KFP UI's
    run form shows each parameter's description from the docstring's ``Args:``; they are
    joined onto one line here (the docstring wraps them)."""
    pipeline = dsl.pipeline(
        name=name, description=description, pipeline_root=platform.storage.pipeline_root
    )(function)
    parameters = pipeline.pipeline_spec.root.input_definitions.parameters
    for key, spec in pipeline.component_spec.inputs.items():
        if spec.description:
            spec.description = " ".join(spec.description.split())
            parameters[key].description = spec.description
    return pipeline


def place_task(
    task: Any, stage: Stage, platform: PlatformConfig, *, gpus: int = 0, workspace: bool = False
) -> Any:
    """Apply the platform settings for ``stage`` to ``task`` (a KFP PipelineTask)."""
    pool = platform.gpu_pool if gpus else platform.cpu_pool
    for key, value in pool.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in pool.tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
        )
    task.set_cpu_request(pool.cpu).set_cpu_limit(pool.cpu)
    task.set_memory_request(pool.memory).set_memory_limit(pool.memory)
    if gpus:
        task.set_accelerator_type(platform.gpu_pool.accelerator_type)
        task.set_accelerator_limit(gpus)
        # The training jobs' deadline: a hung GPU pod gives its GPUs back too.
        kubernetes.set_timeout(task, platform.job_timeout_minutes * 60)
        # NCCL between the pod's ranks (one per GPU, torchrun) shares memory through
        # /dev/shm, which is the container runtime's 64 MiB without this; as in the training
        # jobs' pods, a memory emptyDir, counted in the task's memory limit.
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path=SHM_PATH, medium="Memory", size_limit=SHM_SIZE
        )
    labels = dict(platform.pod_labels)
    if gpus and platform.queue_name:  # Kueue admits the GPU pod (its pod integration)
        labels[QUEUE_LABEL] = platform.queue_name
    for key, value in labels.items():
        kubernetes.add_pod_label(task, label_key=key, label_value=value)
    if platform.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(platform.image_pull_secrets))
    storage = platform.storage
    if storage.credentials_secret:
        kubernetes.use_secret_as_env(
            task,
            secret_name=storage.credentials_secret,
            secret_key_to_env={key: key for key in storage.credentials_keys},
        )
    if workspace and storage.workspace_pvc:
        kubernetes.mount_pvc(
            task, pvc_name=storage.workspace_pvc, mount_path=storage.workspace_path
        )
    if stage == "audit" and platform.signing_key_secret:
        kubernetes.use_secret_as_env(
            task,
            secret_name=platform.signing_key_secret,
            secret_key_to_env={platform.signing_key_item: platform.signing_key_env},
        )
    if platform.log_format != "text":
        task.set_env_variable(LOG_FORMAT_ENV, platform.log_format)
    kubernetes.set_security_context(
        task,
        run_as_user=platform.run_as_user,
        run_as_group=platform.run_as_user,
        run_as_non_root=True,
    )
    task.set_caching_options(platform.caches(stage))
    return task
