"""What each KFP component body calls: parse the config, run the stage, log KFP metrics.

KFP artifact objects are used only through ``.path``, ``.metadata``, ``log_metric``,
``log_roc_curve`` and ``log_confusion_matrix`` so this module does not import KFP.
User errors end the task with one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sslops.config import Config, config_from_json
from sslops.console import json_stderr, log_format
from sslops.errors import ConfigError, DataError, SslopsError, describe_os_error
from sslops.pipeline.stage_cache import cached_stage


@contextmanager
def _user_errors(stage: str) -> Iterator[None]:
    """A user error as one line and exit status 2; under ``SSLOPS_LOG_FORMAT=json`` (a
    cluster's ``platform.log_format``) every line the task writes, on stdout or stderr, is a
    JSON object naming ``stage``."""
    try:
        log_format()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    with json_stderr(stage, stdout=True):  # a pod's log: its stdout and its stderr
        try:
            yield
        except SslopsError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        except OSError as exc:  # environment: folder not writable, disk full, ...
            print(f"error: {describe_os_error(exc)}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None


def _run(stage: str, config_json: str, body: Callable[[Config], None]) -> None:
    with _user_errors(stage):
        body(config_from_json(config_json))


def prepare_task(config_json: str, prepared: Any, datacard: Any) -> None:
    from sslops.prepare import prepare

    def body(cfg: Config) -> None:
        out = cached_stage(
            "prepare", config_json, {}, Path(prepared.path),
            lambda: prepare(cfg, Path(prepared.path)),
        )  # fmt: skip
        shutil.copyfile(out / "datacard.md", datacard.path)
        card = json.loads((out / "datacard.json").read_text(encoding="utf-8"))
        prepared.metadata.update({k: v["rows"] for k, v in card["splits"].items()})

    _run("prepare", config_json, body)


def check_pretrain_pod(cfg: Config) -> None:
    """In a pod of the single-pod pipeline, ``config_json`` may not ask for more than the pod
    was compiled with: its GPU count (accelerator limit) and in-pod pretraining are fixed at
    compile time, while the run form lets anyone edit ``pretrain`` (``sslops run``, which runs
    on this machine, is not checked)."""
    from sslops.artifacts import LOCATIONS_ENV

    if not os.environ.get("KUBERNETES_SERVICE_HOST") or os.environ.get(LOCATIONS_ENV):
        return
    pc = cfg.pretrain
    if pc.launcher != "local":
        raise ConfigError(
            f"config_json says pretrain.launcher: {pc.launcher} (nodes {pc.nodes}), but this "
            "pipeline pretrains in its own pod; start the run from sslops-ssl-pipeline-multinode, "
            "or submit the config with `sslops submit`"
        )
    if pc.gpus_per_node:
        import torch

        found = torch.cuda.device_count()
        if found < pc.gpus_per_node:
            raise ConfigError(
                f"config_json says pretrain.gpus_per_node: {pc.gpus_per_node}, but this pod has "
                f"{found} GPU(s): the pipeline's GPU count is fixed when it is compiled; set "
                f"pretrain.gpus_per_node to {found} or less, or compile the pipeline for "
                f"{pc.gpus_per_node} (`sslops submit --set pretrain.gpus_per_node="
                f"{pc.gpus_per_node}`), or use sslops-ssl-pipeline-multinode"
            )


def pretrain_task(config_json: str, prepared: Any, pretrained: Any) -> None:
    from sslops.pretrain import pretrain

    def body(cfg: Config) -> None:
        check_pretrain_pod(cfg)
        out = cached_stage(
            "pretrain", config_json, {"prepared": Path(prepared.path)}, Path(pretrained.path),
            lambda: pretrain(cfg, Path(prepared.path), Path(pretrained.path)),
        )  # fmt: skip
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        pretrained.metadata.update(
            {"objective": summary["objective"], "loss": summary["final_loss"]}
        )

    _run("pretrain", config_json, body)


def finetune_task(config_json: str, prepared: Any, pretrained: Any, finetuned: Any) -> None:
    from sslops.finetune import finetune

    def body(cfg: Config) -> None:
        inputs = {"prepared": Path(prepared.path), "pretrained": Path(pretrained.path)}
        out = cached_stage(
            "finetune", config_json, inputs, Path(finetuned.path),
            lambda: finetune(cfg, Path(prepared.path), Path(pretrained.path), Path(finetuned.path)),
        )  # fmt: skip
        report = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
        finetuned.metadata.update(
            {
                "labels_used": report["labels_used"],
                "selected": report["fairness"]["selected"],
            }
        )

    _run("finetune", config_json, body)


def evaluate_task(
    config_json: str, prepared: Any, finetuned: Any, evaluation: Any, metrics: Any,
    classification: Any, report: Any,
) -> None:  # fmt: skip
    from sslops.evaluate import evaluate

    def body(cfg: Config) -> None:
        inputs = {"prepared": Path(prepared.path), "finetuned": Path(finetuned.path)}
        out = cached_stage(
            "evaluate", config_json, inputs, Path(evaluation.path),
            lambda: evaluate(cfg, Path(prepared.path), Path(finetuned.path), Path(evaluation.path)),
        )  # fmt: skip
        log_evaluation(out, metrics, classification, Path(report.path), cfg.export.model)

    _run("evaluate", config_json, body)


def log_evaluation(
    out: Path, metrics: Any, classification: Any, report: Path, shown: str
) -> None:  # fmt: skip
    """The evaluate artifact ``out`` as KFP Metrics (numbers only: an undefined value, null
    in metrics.json, stays in the report), ClassificationMetrics of the deployed model
    ``shown`` and the Markdown report."""
    payload = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for model, values in payload["models"].items():
        for key in ("accuracy", "roc_auc", "dp_difference", "eo_difference", "policy_gap"):
            if values.get(key) is not None and math.isfinite(values[key]):
                metrics.log_metric(f"{model}_{key}", round(values[key], 6))
    curve_file = out / "label_efficiency.json"
    if curve_file.is_file():  # one metric per model and label fraction: the curve's means
        curve = json.loads(curve_file.read_text(encoding="utf-8"))
        for model, by_fraction in curve["mean"].items():
            for fraction, value in by_fraction.items():
                if value is not None and math.isfinite(value):  # undefined: not for KFP
                    pct = f"{100 * float(fraction):g}".replace(".", "p")
                    metrics.log_metric(f"label_efficiency_{model}_{pct}pct", round(value, 6))
    curve = payload["roc_curves"][shown]
    classification.log_roc_curve(curve["fpr"], curve["tpr"], curve["thresholds"])
    classification.log_confusion_matrix(
        payload.get("classes", ["negative", "positive"]), payload["confusion_matrices"][shown]
    )
    shutil.copyfile(out / "metrics.md", report)


def export_task(config_json: str, prepared: Any, finetuned: Any, onnx_model: Any) -> None:
    from sslops.export import export

    def body(cfg: Config) -> None:
        inputs = {"prepared": Path(prepared.path), "finetuned": Path(finetuned.path)}
        out = cached_stage(
            "export", config_json, inputs, Path(onnx_model.path),
            lambda: export(cfg, Path(prepared.path), Path(finetuned.path), Path(onnx_model.path)),
        )  # fmt: skip
        info = json.loads((out / "export.json").read_text(encoding="utf-8"))
        onnx_model.metadata.update(
            {
                "framework": "onnx",
                "opset": info["opset"],
                "max_abs_diff": info["parity"]["max_abs_diff"],
            }
        )
        if info.get("quantization"):
            onnx_model.metadata["int8_accuracy_change_points"] = info["quantization"][
                "accuracy_change_points"
            ]

    _run("export", config_json, body)


def kfp_run_context(artifact: Any, image: str) -> dict[str, Any]:
    """The KFP run id and the component image, for the audit bundle's run.json.

    KFP writes an output artifact to ``<pipeline root>/<run id>/<task>/...``
    (cluster: ``.../<pipeline name>/<run id>/audit/<execution id>/bundle``; kfp.local:
    ``.../<pipeline name>-<timestamp>/audit/bundle``): the run id is the path part
    before the task's name. ``image`` is the reference the pipeline was compiled or
    installed with (the audit task's own: a constant the Helm chart and the kustomize
    overlays set with the task's image, a digest where one is pinned; not a run parameter).
    Under ``sslops run`` no container runs: ``SSLOPS_IMAGE`` where set, else none.
    """
    from sslops.artifacts import LOCATIONS_ENV, final_location
    from sslops.audit.environment import image_record

    uri = str(getattr(artifact, "uri", "") or getattr(artifact, "path", ""))
    parts = uri.rstrip("/").split("/")
    last = len(parts) - 1 - parts[::-1].index("audit") if "audit" in parts else 0
    run_id = parts[last - 1] if last > 0 else None
    if os.environ.get(LOCATIONS_ENV):  # sslops run: kfp.local runs the tasks as processes here
        local = os.environ.get("SSLOPS_IMAGE")
        ran = image_record(local, "SSLOPS_IMAGE" if local else "none: no container ran")
        return {"executed_by": "sslops run (kfp.local, processes on this machine, no container)",
                "kfp_run_id": run_id, "kfp_artifact_uri": final_location(uri), **ran}  # fmt: skip
    ran = image_record(image, "the pipeline as compiled or installed (the audit task's image)")
    return {"kfp_run_id": run_id, "kfp_artifact_uri": uri, **ran}


def check_on_volume(cfg: Config) -> None:
    """In a pod, ``audit.registry`` must lie on the workspace volume: anything written
    elsewhere is lost with the pod, and the filing would succeed for nothing."""
    registry, storage = cfg.audit.registry, cfg.platform.storage
    if not registry or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return
    volume = Path(storage.workspace_path)
    if not storage.workspace_pvc:
        raise ConfigError(
            f"audit.registry {registry} needs the workspace volume in the pod: set "
            "platform.storage.workspace_pvc (the Helm chart's PVC) and compile again"
        )
    if not Path(registry).is_relative_to(volume):
        raise ConfigError(
            f"audit.registry {registry} is not on the workspace volume (mounted at {volume}, "
            "platform.storage.workspace_path): a registry elsewhere in the pod is lost when it "
            f"ends; give a path under {volume}"
        )


def audit_task(
    config_json: str, prepared: Any, pretrained: Any, finetuned: Any, evaluation: Any,
    onnx_model: Any, bundle: Any, model_card: Any, model_card_md: Any, image: str,
) -> None:  # fmt: skip
    """``image``: the reference of the image the pipeline's tasks run, for run.json."""
    from sslops.audit import BUNDLE_DIR, audit

    def body(cfg: Config) -> None:
        check_on_volume(cfg)
        artifacts = {
            "prepare": Path(prepared.path),
            "pretrain": Path(pretrained.path),
            "finetune": Path(finetuned.path),
            "evaluate": Path(evaluation.path),
            "export": Path(onnx_model.path),
        }
        out = audit(cfg, artifacts, Path(bundle.path), run_context=kfp_run_context(bundle, image))
        shutil.copyfile(out / BUNDLE_DIR / "model_card.html", model_card.path)
        shutil.copyfile(out / BUNDLE_DIR / "model_card.md", model_card_md.path)
        gates = json.loads((out / BUNDLE_DIR / "gates.json").read_text(encoding="utf-8"))
        bundle.metadata.update({"gates": gates["overall"]})

    _run("audit", config_json, body)


def shadow_task(
    config_json: str, candidate: str, incumbent: str, data: str, reference: str,
    label_efficiency: str, report: Any, report_html: Any, report_md: Any, metrics: Any,
) -> None:  # fmt: skip
    """The shadow stage on paths the pod can read (the workspace PVC); empty = not given."""
    from sslops.shadow import shadow

    with _user_errors("shadow"):
        cfg = config_from_json(config_json) if config_json else None
        out = shadow(
            Path(candidate), Path(incumbent), Path(data), Path(report.path), cfg,
            reference=Path(reference) if reference else None,
            label_efficiency=Path(label_efficiency) if label_efficiency else None,
        )  # fmt: skip
        shutil.copyfile(out / "shadow.html", report_html.path)
        shutil.copyfile(out / "shadow.md", report_md.path)
        result = json.loads((out / "shadow.json").read_text(encoding="utf-8"))
        metrics.log_metric("agreement", round(result["agreement"]["overall"], 6))
        metrics.log_metric("drifted_batches", len(result["drift"]["drifted_batches"]))
        overall = result["metrics"].get("overall")
        if overall:
            for key in ("accuracy", "roc_auc", "dp_difference"):
                metrics.log_metric(f"{key}_delta", round(overall[key]["delta"], 6))
        costs = result["kpi"]["decision_costs"]
        if costs:
            metrics.log_metric("cost_per_1000_delta", round(costs["difference"]["per_1000"], 4))
        report.metadata.update({"drifted_batches": result["drift"]["drifted_batches"]})


def predict_task(
    config_json: str, model: str, data: str, out: str, id_column: str, threshold: str,
    registry: str, approver_key: str, predictions: Any, summary: Any, metrics: Any,
    scheduled: str = "",
) -> None:  # fmt: skip
    """The predict stage on paths the pod can read; the ``predictions`` artifact is a folder
    (``predictions.csv``, ``predictions.meta.json``); ``out`` also publishes both there,
    ``{date}`` standing for the UTC date of ``scheduled`` (the run's scheduled time, which
    KFP fills in) or, without one, of the time the task starts (:func:`run_date`). Empty
    strings: not given."""
    from sslops.predict import check_publish, meta_path, predict, publish

    with _user_errors("predict"):
        cfg = config_from_json(config_json) if config_json else None
        cut = _probability(threshold)
        dated = run_date(scheduled) if "{date}" in out else None
        target = Path(out.replace("{date}", dated[0]) if dated else out) if out else None
        if target is not None and target.is_dir():
            target = target / "predictions.csv"
        inputs = [Path(model), Path(data)]
        if target is not None:  # before the rows are scored: a wrong path fails at once
            check_publish(target, inputs)
        folder = Path(predictions.path)
        folder.mkdir(parents=True, exist_ok=True)
        written = folder / "predictions.csv"
        done = predict(
            Path(model),
            Path(data),
            written,
            cfg,
            id_column=id_column or None,
            threshold=cut,
            registry=Path(registry) if registry else None,
            approver_keys=[Path(approver_key)] if approver_key else None,
        )
        if target is not None:
            publish(written, target, inputs)
        record = json.loads(meta_path(written).read_text(encoding="utf-8"))
        metrics.log_metric("rows", done.rows)
        metrics.log_metric("files", done.files)
        if "label_1_rows" in record:  # a table model: the share of positive decisions
            metrics.log_metric(
                "label_1_share", round(record["label_1_rows"] / max(done.rows, 1), 6)
            )
            metrics.log_metric("threshold", record["threshold"])
        predictions.metadata.update({
            "rows": done.rows, "model_sha256": record["model"]["sha256"],
            "summary": done.described, "published": str(target) if target else "",
        })  # fmt: skip
        if dated:
            predictions.metadata.update({"date": dated[0], "date_from": dated[1]})
        Path(summary.path).write_text(_predict_markdown(record, done.described, target, dated))
        print(f"predict: {done.rows:,} rows, {done.described}", flush=True)


# What KFP passes when it has no scheduled time to give: the placeholder itself (kfp.local
# and KFP backends that do not resolve it) or nothing.
_UNRESOLVED = ("", "{{$.pipeline_job_schedule_time_utc}}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def run_date(scheduled: str) -> tuple[str, str]:
    """The UTC date ``{date}`` stands for, and where it came from: the run's scheduled time
    (``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``, which KFP resolves to a recurring
    run's scheduled time, or a one-off run's creation time), so a run that starts past
    midnight UTC, or a retry the next day, still writes its own day's file; where KFP gave
    none, the time this task starts."""
    if scheduled.strip() in _UNRESOLVED:
        return _utc_now().date().isoformat(), "the task's start (no scheduled time given)"
    try:
        when = datetime.fromisoformat(scheduled.strip())
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise DataError(
            f"scheduled time {scheduled!r}: expected an ISO 8601 time with its offset (what "
            "KFP's pipeline_job_schedule_time_utc gives, e.g. 2026-12-01T02:00:00Z), or empty "
            "for the time the task starts"
        )
    day = when.astimezone(UTC).date().isoformat()
    return day, f"the run's scheduled time ({scheduled.strip()})"


def _predict_markdown(
    record: dict[str, Any], described: str, published: Path | None,
    dated: tuple[str, str] | None = None,
) -> str:  # fmt: skip
    """The run at a glance in the KFP UI: what was decided, by which model, from which files."""
    model = record["model"]
    lines = [
        "# Batch scoring", "",
        f"**{record['rows']:,} rows**: {described}.", "",
        "| | |", "|---|---|",
        f"| model | `{model['path']}` |",
        f"| model sha256 | `{model['sha256']}` |",
    ]  # fmt: skip
    if "approval" in model:
        approval = model["approval"]
        lines.append(f"| approved | bundle `{approval['bundle_manifest_sha256'][:12]}` "
                     f"({approval['model']}) by {approval['approved_by']}, "
                     f"{approval['approved']}, key `{approval['key_fingerprint']}`"
                     f"{' (a trusted approver key)' if approval['key_trusted'] else ''} |")  # fmt: skip
    if "threshold" in record:
        lines.append(f"| threshold | {record['threshold']:g} ({record['threshold_from']}) |")
    lines.append(
        f"| published | `{published}` |" if published else "| published | (artifact only) |"
    )
    if dated:
        lines.append(f"| {{date}} | {dated[0]}, from {dated[1]} |")
    lines += ["", "| input | rows | sha256 |", "|---|---:|---|"]
    for item in record["data"][:20]:  # an image folder can hold thousands of files
        rows = item.get("rows")
        count = "" if rows is None else f"{rows:,}"
        lines.append(f"| `{item['path']}` | {count} | `{item['sha256'][:16]}…` |")
    if len(record["data"]) > 20:
        lines.append(f"| … and {len(record['data']) - 20:,} more (predictions.meta.json) | | |")
    return "\n".join(lines) + "\n"


def _probability(text: str) -> float | None:
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise DataError(f"threshold {text!r}: expected a probability between 0 and 1, or empty "
                        "for the model's own") from None  # fmt: skip
