"""The sslops pipeline: prepare -> pretrain -> finetune -> {evaluate, export} -> audit.

Export runs before audit so the audit bundle's lineage ends at the ONNX bytes.

``build_pipeline(cfg)`` builds it for a config: the ``platform`` section places the tasks
(kfp-kubernetes, compiled into the YAML; ``kfp.local`` ignores it), ``pretrain.launcher``
chooses in-pod pretraining or a TrainJob/PyTorchJob launcher, and the config itself
becomes the default of ``config_json`` so a run can be started from the KFP UI as is.
``ssl_pipeline`` is the pipeline for the default platform, which ``sslops run`` executes.
"""

import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler, dsl, kubernetes
from kfp.compiler.compiler_utils import KubernetesManifestOptions

from sslops.config import Config, PretrainConfig
from sslops.k8s.kfp_platform import make_pipeline, place_task
from sslops.k8s.launcher import POD_NAME_ENV
from sslops.k8s.settings import PlatformConfig
from sslops.k8s.specs import cuda_image
from sslops.pipeline import components as c

PIPELINE_NAME = "sslops-ssl-pipeline"
DESCRIPTION = (
    "Self-supervised pretraining, fairness-aware fine-tuning, evaluation, ONNX export and a "
    "compliance audit bundle."
)


def build_pipeline(
    cfg: Config | None = None, name: str = PIPELINE_NAME, config_default: str | None = None
) -> Any:
    """The pipeline for ``cfg`` (default platform and a required ``config_json`` without one).

    ``config_default`` is the JSON shown as ``config_json``'s default (``cfg`` resolved when
    not given); tasks fill in every unset key when they parse it.
    """
    platform = cfg.platform if cfg else PlatformConfig()
    pretrain_cfg = cfg.pretrain if cfg else PretrainConfig()
    place = partial(place_task, platform=platform)

    def ssl_pipeline(config_json: str):
        """Pretrain, fine-tune under the fairness policy, evaluate, export, audit.

        Args:
            config_json: The sslops config as JSON (what `sslops config --json` prints); the
                default is the config this pipeline was compiled with. Edit any key, e.g.
                data.train (a file on the workspace volume, /workspace/...; a new path
                for new data, as prepare is cached on this text), seed, finetune.fairness.
        """
        prepared = c.prepare(config_json=config_json).set_display_name("prepare data")
        place(prepared, "prepare", workspace=True)  # data.train etc. may lie on the volume
        if pretrain_cfg.launcher == "local":
            gpus = pretrain_cfg.gpus_per_node
            component = c.pretrain_cuda if gpus else c.pretrain
            pretrained = component(config_json=config_json, prepared=prepared.outputs["prepared"])
            pretrained.set_display_name("self-supervised pretraining")
            place(pretrained, "pretrain", gpus=gpus)
        else:
            pretrained = c.launch_pretrain(
                config_json=config_json,
                image=c.IMAGE,
                gpu_image=cuda_image(c.IMAGE),
                # a constant (the Helm chart adds its release's), not the run's config_json
                pod_labels=dict(platform.pod_labels),
                prepared=prepared.outputs["prepared"],
                # the job's identity: the same on a retry of this task, so the retry resumes
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
            )
            # Not the compiled launcher's kind: the run's config_json picks TrainJob or PyTorchJob.
            pretrained.set_display_name("self-supervised pretraining (training job)")
            place(pretrained, "pretrain", workspace=True)
            # the launcher reads its own pod on SIGTERM: a disruption leaves the job running
            kubernetes.use_field_path_as_env(pretrained, POD_NAME_ENV, "metadata.name")
            if platform.launcher_retries:  # ... and the retry follows it
                # KFP's default retry window (backoff_max_duration) is an hour from the first
                # attempt: a launcher preempted after that would not be retried.
                pretrained.set_retry(
                    num_retries=platform.launcher_retries, backoff_duration="60s",
                    backoff_max_duration=f"{platform.job_timeout_minutes * 60}s",
                )  # fmt: skip
        finetuned = c.finetune(
            config_json=config_json,
            prepared=prepared.outputs["prepared"],
            pretrained=pretrained.outputs["pretrained"],
        ).set_display_name("fairness-aware fine-tuning")
        place(finetuned, "finetune")
        evaluated = c.evaluate(
            config_json=config_json,
            prepared=prepared.outputs["prepared"],
            finetuned=finetuned.outputs["finetuned"],
        ).set_display_name("evaluate")
        place(evaluated, "evaluate")
        exported = c.export(
            config_json=config_json,
            prepared=prepared.outputs["prepared"],
            finetuned=finetuned.outputs["finetuned"],
        ).set_display_name("export ONNX")
        place(exported, "export")
        audited = c.audit(
            config_json=config_json,
            prepared=prepared.outputs["prepared"],
            pretrained=pretrained.outputs["pretrained"],
            finetuned=finetuned.outputs["finetuned"],
            evaluation=evaluated.outputs["evaluation"],
            onnx_model=exported.outputs["onnx_model"],
            # run.json's image: a constant (the chart and overlays set their image), not a
            # run parameter the run form could change
            image=c.IMAGE,
        ).set_display_name("audit bundle")
        place(audited, "audit", workspace=True)  # where audit.registry files bundles

    if cfg is not None:  # KFP reads the parameter default from the signature
        ssl_pipeline.__defaults__ = (config_default or cfg.to_json(),)
    return make_pipeline(ssl_pipeline, name, DESCRIPTION, platform)


ssl_pipeline = build_pipeline()


def compile_pipeline(
    path: Path,
    cfg: Config | None = None,
    name: str = PIPELINE_NAME,
    config_default: str | None = None,
) -> Path:
    """Write the KFP IR YAML for upload in the KFP UI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(cfg, name, config_default)
    compiler.Compiler().compile(pipeline, str(path), pipeline_name=name)
    return path


def compile_kubernetes_manifests(
    path: Path,
    cfg: Config | None,
    name: str,
    version: str,
    namespace: str | None = None,
    config_default: str | None = None,
    pipeline: Any = None,
) -> Path:
    """Write the KFP Kubernetes-native ``Pipeline`` + ``PipelineVersion`` for GitOps.

    ``pipeline``: another pipeline object to write (default: ``build_pipeline(cfg, ...)``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    options = KubernetesManifestOptions(
        pipeline_name=name,
        pipeline_display_name=name,
        pipeline_version_name=version,
        namespace=namespace,
        include_pipeline_manifest=True,
    )
    compiler.Compiler().compile(
        build_pipeline(cfg, name, config_default) if pipeline is None else pipeline,
        str(path),
        pipeline_name=name,
        kubernetes_manifest_format=True,
        kubernetes_manifest_options=options,
    )
    # The Pipeline CRD (pipelines.kubeflow.org/v2beta1) defines only spec.description; the
    # compiler also writes spec.displayName, which strict field validation rejects. The
    # display name equals the object's name, so nothing is lost.
    # A PipelineVersion's spec is immutable (KFP's admission webhook refuses an update), so
    # its name carries a digest of the spec: a changed pipeline is a new version, and the
    # old one stays (not pruned by Argo CD or Flux), as runs and schedules refer to it.
    documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    for document in documents:
        if document["kind"] == "Pipeline":
            document["spec"].pop("displayName", None)
            # Synced before its versions (KFP refuses a version of a Pipeline not there yet).
            document["metadata"]["annotations"] = {"argocd.argoproj.io/sync-wave": "-1"}
        if document["kind"] == "PipelineVersion":
            document["metadata"]["name"] = f"{version}-{spec_digest(document['spec'])}"
            document["metadata"]["annotations"] = dict(KEEP_OLD_VERSIONS)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=True), encoding="utf-8")
    return path


# On a PipelineVersion: a newer one replaces it in Git, and it stays on the cluster.
KEEP_OLD_VERSIONS = {
    "argocd.argoproj.io/sync-options": "Prune=false",
    "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
    "kustomize.toolkit.fluxcd.io/prune": "disabled",
}


def spec_digest(spec: dict[str, Any]) -> str:
    """10 hex digits of the sha256 of a PipelineVersion's pipeline and platform spec."""
    content = {"pipelineSpec": spec.get("pipelineSpec"), "platformSpec": spec.get("platformSpec")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
