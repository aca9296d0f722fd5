"""The sslops pipeline: prepare -> pretrain -> finetune -> {evaluate, export} -> audit.

Export runs before audit so the audit bundle's lineage ends at the ONNX bytes.
"""

from pathlib import Path

from kfp import compiler, dsl

from sslops.pipeline import components as c

PIPELINE_NAME = "sslops-ssl-pipeline"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Self-supervised pretraining, fairness-aware fine-tuning, evaluation, ONNX "
    "export and a compliance audit bundle.",
)
def ssl_pipeline(config_json: str):
    """``config_json`` is the resolved sslops config (``sslops config --json``)."""
    prepared = c.prepare(config_json=config_json).set_display_name("prepare data")
    pretrained = c.pretrain(config_json=config_json, prepared=prepared.outputs["prepared"])
    pretrained.set_display_name("self-supervised pretraining")
    finetuned = c.finetune(
        config_json=config_json,
        prepared=prepared.outputs["prepared"],
        pretrained=pretrained.outputs["pretrained"],
    ).set_display_name("fairness-aware fine-tuning")
    evaluated = c.evaluate(
        config_json=config_json,
        prepared=prepared.outputs["prepared"],
        finetuned=finetuned.outputs["finetuned"],
    ).set_display_name("evaluate")
    exported = c.export(
        config_json=config_json,
        prepared=prepared.outputs["prepared"],
        finetuned=finetuned.outputs["finetuned"],
    ).set_display_name("export ONNX")
    c.audit(
        config_json=config_json,
        prepared=prepared.outputs["prepared"],
        pretrained=pretrained.outputs["pretrained"],
        finetuned=finetuned.outputs["finetuned"],
        evaluation=evaluated.outputs["evaluation"],
        onnx_model=exported.outputs["onnx_model"],
    ).set_display_name("audit bundle")


def compile_pipeline(path: Path) -> Path:
    """Write the KFP IR YAML for upload in the KFP UI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(ssl_pipeline, str(path), pipeline_name=PIPELINE_NAME)
    return path
