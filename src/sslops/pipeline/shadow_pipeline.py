"""The shadow pipeline: one read-only shadow test of a candidate against the incumbent.

Meant to run on a schedule (a KFP recurring run, see :mod:`sslops.k8s.schedule`): each
run scores the batches under ``data`` (a CSV or a folder of daily CSVs) with both models
and publishes the report (HTML and Markdown for the KFP UI, metrics, the artifact).
Inputs are paths the task can read: on a cluster, files on the workspace PVC (mounted
at ``platform.storage.workspace_path``). Caching is off: the same paths hold new data
on every run.

No ``from __future__ import annotations`` here: KFP reads the annotations at runtime.
"""

from pathlib import Path
from typing import Any

from kfp import compiler, dsl
from kfp.dsl import HTML, Artifact, Markdown, Metrics, Output

from sslops.config import Config
from sslops.k8s.kfp_platform import make_pipeline, place_task
from sslops.k8s.settings import PlatformConfig
from sslops.pipeline.components import IMAGE

SHADOW_PIPELINE_NAME = "sslops-shadow-pipeline"
SHADOW_DESCRIPTION = (
    "Read-only shadow test: a candidate ONNX model scored beside the incumbent on daily "
    "batches; agreement, metric and fairness deltas, drift, business KPIs."
)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def shadow(
    config_json: str,
    candidate: str,
    incumbent: str,
    data: str,
    reference: str,
    label_efficiency: str,
    report: Output[Artifact],
    report_html: Output[HTML],
    report_md: Output[Markdown],
    metrics: Output[Metrics],
):
    """Score the batches with candidate and incumbent (read-only) and write the shadow report."""
    from sslops.pipeline.tasks import shadow_task

    shadow_task(
        config_json, candidate, incumbent, data, reference, label_efficiency,
        report, report_html, report_md, metrics,
    )  # fmt: skip


def build_shadow_pipeline(
    cfg: Config | None = None, name: str = SHADOW_PIPELINE_NAME, config_default: str | None = None
) -> Any:
    """The pipeline; ``cfg`` places the task and becomes ``config_json``'s default."""
    platform = cfg.platform if cfg else PlatformConfig()

    def shadow_pipeline(
        candidate: str,
        incumbent: str,
        data: str,
        reference: str = "",
        label_efficiency: str = "",
        config_json: str = "",
    ):
        """Compare a candidate model with the incumbent on the same rows, read-only.

        Args:
            candidate: The new model: sslops export's model.onnx (paths as the task sees
                them, on the workspace volume).
            incumbent: The model in production: its model.onnx or its PREDICTIONS.csv.
            data: One batch CSV, or a folder of batch CSVs (daily batches, by name).
            reference: The drift reference CSV; empty = the first batch.
            label_efficiency: label_efficiency.json or the evaluate artifact holding it (for
                the labels-saved KPI); optional.
            config_json: The sslops config as JSON; empty = the one the pipeline was compiled
                with.
        """
        task = shadow(
            config_json=config_json, candidate=candidate, incumbent=incumbent, data=data,
            reference=reference, label_efficiency=label_efficiency,
        ).set_display_name("shadow test (read-only)")  # fmt: skip
        place_task(task, "evaluate", platform, workspace=True)
        task.set_caching_options(False)

    if cfg is not None:  # KFP reads the parameter defaults from the signature
        shadow_pipeline.__defaults__ = ("", "", config_default or cfg.to_json())
    return make_pipeline(shadow_pipeline, name, SHADOW_DESCRIPTION, platform)


shadow_pipeline = build_shadow_pipeline()


def compile_shadow_pipeline(
    path: Path, cfg: Config | None = None, name: str = SHADOW_PIPELINE_NAME,
    config_default: str | None = None,
) -> Path:  # fmt: skip
    """Write the KFP IR YAML (upload in the KFP UI, or what ``sslops schedule-shadow`` sends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        build_shadow_pipeline(cfg, name, config_default), str(path), pipeline_name=name
    )
    return path
