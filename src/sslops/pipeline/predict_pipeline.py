"""The predict pipeline: batch scoring of new rows with an exported model.

One task, the stage :func:`sslops.predict.predict` (what ``sslops predict`` runs): the
rows under ``data`` (a CSV or a folder of CSVs; for image and series models a
``.npy``/``.npz`` file or a folder of images) are scored with ``model`` (``sslops
export``'s ``model.onnx``) and written as the ``predictions`` artifact (``predictions.csv``
and its provenance record ``predictions.meta.json``). With ``out`` (a path on the
workspace PVC, ``{date}`` standing for the UTC date the run was scheduled for) the two
files are also published there, so the shadow pipeline can read them as tomorrow's
incumbent log. The scheduled time reaches the task as KFP's
``PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``, which a KFP backend resolves (a recurring
run's scheduled time, a one-off run's creation time); kfp 2.17's ``kfp.local`` does not
(it fails on it), so run the ``predict`` component alone there, where ``{date}`` is the
day the task starts.
With ``registry`` (an audit registry on the PVC) the task scores only with a model whose
bundle is approved there (``sslops audit approve``). Caching is off: the same paths hold
new rows on every run. Run it once from the KFP UI,
or nightly with ``sslops schedule-predict``.

No ``from __future__ import annotations`` here: KFP reads the annotations at runtime.
"""

from pathlib import Path
from typing import Any

from kfp import compiler, dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from sslops.config import Config
from sslops.k8s.kfp_platform import make_pipeline, place_task
from sslops.k8s.settings import PlatformConfig
from sslops.pipeline.components import IMAGE

PREDICT_PIPELINE_NAME = "sslops-predict-pipeline"
PREDICT_DESCRIPTION = (
    "Batch scoring: new rows scored with an exported sslops model (ONNX); predictions.csv "
    "with each row's score and decision, and the record of which model made them."
)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def predict(
    config_json: str,
    model: str,
    data: str,
    out: str,
    id_column: str,
    threshold: str,
    registry: str,
    approver_key: str,
    predictions: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    scheduled: str = "",
):
    """Score every row of ``data`` with ``model``: predictions.csv and its provenance record.

    ``scheduled`` (the pipeline passes KFP's scheduled-time placeholder) dates ``{date}`` in
    ``out``; empty or unresolved: the time the task starts."""
    from sslops.pipeline.tasks import predict_task

    predict_task(config_json, model, data, out, id_column, threshold, registry, approver_key,
                 predictions, summary, metrics, scheduled)  # fmt: skip


def build_predict_pipeline(
    cfg: Config | None = None, name: str = PREDICT_PIPELINE_NAME, config_default: str | None = None
) -> Any:
    """The pipeline; ``cfg`` places the task and becomes ``config_json``'s default."""
    platform = cfg.platform if cfg else PlatformConfig()

    def predict_pipeline(
        model: str,
        data: str,
        out: str = "",
        id_column: str = "",
        threshold: str = "",
        registry: str = "",
        approver_key: str = "",
        config_json: str = "",
    ):
        """Score new rows with an exported model (paths as the task sees them: /workspace/...).

        Args:
            model: sslops export's model.onnx (or its int8 copy).
            data: The rows to score: one CSV, or a folder of CSVs (by name); image and
                series models: .npy/.npz, images also a folder of images.
            out: Also publish the predictions CSV here; {date} = the run's scheduled UTC date.
            id_column: The column whose values name the rows (empty: shadow.id_column).
            threshold: The decision threshold in (0, 1); empty = the model's own.
            registry: Score only if the model's bundle is approved in this audit registry.
            approver_key: With registry: a PEM public key the approval must be signed with.
            config_json: The sslops config as JSON; empty = the one the pipeline was compiled
                with.
        """
        task = predict(
            config_json=config_json, model=model, data=data, out=out, id_column=id_column,
            threshold=threshold, registry=registry, approver_key=approver_key,
            # a constant KFP fills in (a recurring run's scheduled time), not a run parameter
            scheduled=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
        ).set_display_name("score new rows")  # fmt: skip
        place_task(task, "evaluate", platform, workspace=True)
        task.set_caching_options(False)

    if cfg is not None:  # KFP reads the parameter defaults from the signature
        predict_pipeline.__defaults__ = ("", "", "", "", "", config_default or cfg.to_json())
    return make_pipeline(predict_pipeline, name, PREDICT_DESCRIPTION, platform)


predict_pipeline = build_predict_pipeline()


def compile_predict_pipeline(
    path: Path, cfg: Config | None = None, name: str = PREDICT_PIPELINE_NAME,
    config_default: str | None = None,
) -> Path:  # fmt: skip
    """Write the KFP IR YAML (upload in the KFP UI, or what ``sslops schedule-predict`` sends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        build_predict_pipeline(cfg, name, config_default), str(path), pipeline_name=name
    )
    return path
