"""The KFP lightweight components. Each body imports sslops and calls one task function.

Six stages, the pretrain stage also on the CUDA image (``pretrain_cuda``), and
``launch_pretrain``, which runs pretraining as a multi-node TrainJob or PyTorchJob.

No ``from __future__ import annotations`` here: KFP reads the annotations at runtime.

``base_image`` is the sslops image (tag = package version) and nothing is pip-installed
at run time, so the same components run in ``kfp.local.SubprocessRunner`` and on a
cluster.
"""

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from sslops.k8s.specs import cuda_image
from sslops.pipeline.image import base_image

IMAGE = base_image()


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare(config_json: str, prepared: Output[Dataset], datacard: Output[Markdown]):
    """Read, canonicalize, deduplicate and split the raw table; fit the encoding; data card."""
    from sslops.pipeline.tasks import prepare_task

    prepare_task(config_json, prepared, datacard)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def pretrain(config_json: str, prepared: Input[Dataset], pretrained: Output[Model]):
    """Self-supervised pretraining of the encoder on all training rows, labels ignored."""
    from sslops.pipeline.tasks import pretrain_task

    pretrain_task(config_json, prepared, pretrained)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def finetune(
    config_json: str, prepared: Input[Dataset], pretrained: Input[Model], finetuned: Output[Model]
):
    """Few-label heads: SSL probe, fairness-mitigated head, supervised baseline."""
    from sslops.pipeline.tasks import finetune_task

    finetune_task(config_json, prepared, pretrained, finetuned)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    config_json: str,
    prepared: Input[Dataset],
    finetuned: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
):
    """Test-split metrics overall and per sensitive group, for every model."""
    from sslops.pipeline.tasks import evaluate_task

    evaluate_task(config_json, prepared, finetuned, evaluation, metrics, classification, report)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export(
    config_json: str, prepared: Input[Dataset], finetuned: Input[Model], onnx_model: Output[Model]
):
    """ONNX export of the selected model, parity-checked with onnxruntime on the test split."""
    from sslops.pipeline.tasks import export_task

    export_task(config_json, prepared, finetuned, onnx_model)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def audit(
    config_json: str,
    prepared: Input[Dataset],
    pretrained: Input[Model],
    finetuned: Input[Model],
    evaluation: Input[Artifact],
    onnx_model: Input[Model],
    bundle: Output[Artifact],
    model_card: Output[HTML],
    model_card_md: Output[Markdown],
    image: str,
):
    """Model card, lineage to the raw data and a hash manifest: the compliance bundle.

    ``image`` is this task's image as the pipeline was compiled or installed (a constant,
    not a run parameter: a digest where one is pinned), which run.json records."""
    from sslops.pipeline.tasks import audit_task

    audit_task(
        config_json, prepared, pretrained, finetuned, evaluation, onnx_model,
        bundle, model_card, model_card_md, image,
    )  # fmt: skip


# In-pod GPU pretraining: the same component on the CUDA variant of the image.
pretrain_cuda = dsl.component(base_image=cuda_image(IMAGE), install_kfp_package=False)(
    pretrain.python_func
)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def launch_pretrain(
    config_json: str,
    image: str,
    gpu_image: str,
    pod_labels: dict,
    prepared: Input[Dataset],
    pretrained: Output[Model],
    run_id: str = "",
    task_name: str = "",
):
    """Multi-node pretraining: a Kubeflow TrainJob or PyTorchJob created, followed and collected.

    The training pods run ``image``, or ``gpu_image`` (the CUDA variant) when they get GPUs.
    They carry ``pod_labels`` (the pipeline's tasks' labels, which the NetworkPolicies
    select) over the config's ``platform.pod_labels``.
    ``run_id`` and ``task_name`` (the pipeline passes the KFP run's id and the task's name)
    name the job and its folder on the workspace volume: a retry of the task resumes from the
    checkpoints the earlier attempt left; without them each attempt starts over.
    """
    from sslops.console import json_stderr
    from sslops.k8s.launcher import launch_pretrain_task

    with json_stderr("pretrain", stdout=True):  # platform.log_format: json
        launch_pretrain_task(
            config_json, image, gpu_image, prepared, pretrained,
            run_id=run_id, task_name=task_name, pod_labels=pod_labels,
        )  # fmt: skip
