"""``sslops schedule-shadow`` / ``schedule-predict``: a one-task pipeline as a KFP recurring run.

Compiles the shadow pipeline (or the batch-scoring pipeline) for a config, uploads it as
a new version of ``sslops-shadow-pipeline`` (``sslops-predict-pipeline``), as ``sslops
submit`` does for the main pipeline, and creates a recurring run of that version on a
cron schedule. The paths are read by the task in its pod (the workspace PVC); the same
``data`` folder is read again on every run, so whatever lands there by the scheduled time
is tested (scored).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sslops import __version__
from sslops.config import Config
from sslops.errors import ConfigError
from sslops.k8s.submit import _client, check_target, kfp_errors, upload_version


@dataclass(frozen=True)
class Scheduled:
    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    recurring_run_id: str
    cron: str
    url: str


_MONTHS = dict(zip(("JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                    "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), range(1, 13), strict=True))  # fmt: skip
_DAYS = {day: i for i, day in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
# name, lowest, highest, names taken for numbers, as robfig/cron (which KFP uses) reads them
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("seconds", 0, 59, {}),
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)


def _cron_field_values(cron: str, index: int, text: str) -> set[int]:
    """The values one field matches, as robfig/cron reads it (``a/n``: from a to the
    highest); a wrong value is named."""
    name, low, high, names = _CRON_FIELDS[index]
    where = f"--cron {cron!r}: field {index + 1} ({name})"
    span = f"{low}-{high}"
    if names:
        span += f" or {next(iter(names))}-{list(names)[-1]}"  # JAN-DEC, SUN-SAT
    expected = f"expected {span}, *, ?, a list a,b, a range a-b or a step */n or a-b/n"

    def value(token: str, part: str) -> int:
        number = names.get(token.upper()) if names else None
        if number is None:
            if not (token.isascii() and token.isdigit()):
                raise ConfigError(f"{where} {part!r} is not valid: {expected}")
            number = int(token)
        if not low <= number <= high:
            raise ConfigError(f"{where} {token!r} is out of range {span}")
        return number

    values: set[int] = set()
    for part in text.split(","):
        span_text, slash, step = part.partition("/")
        if not span_text or (slash and not step):
            raise ConfigError(f"{where} {part or text!r} is not valid: {expected}")
        if slash and (not (step.isascii() and step.isdigit()) or int(step) == 0):
            raise ConfigError(f"{where} {part!r}: the step after '/' must be a number, 1 or more")
        if span_text in {"*", "?"}:
            first, last = low, high
        else:
            start, dash, end = span_text.partition("-")
            if dash and (not start or not end):
                raise ConfigError(f"{where} {part!r} is not valid: {expected}")
            first = value(start, part)
            last = value(end, part) if dash else (high if slash else first)
            if last < first:
                raise ConfigError(f"{where} {part!r}: the range starts after it ends")
        values.update(range(first, last + 1, int(step) if slash else 1))
    return values


def check_cron(cron: str) -> str:
    """KFP (robfig/cron) takes 6 fields, seconds first: ``0 0 6 * * *`` is 06:00 daily.

    Each field is ``*``, ``?``, a number or (month, day of week) a name, a range ``a-b``, a
    step ``*/n``, ``a/n`` or ``a-b/n``, or a comma-separated list of those; checked here so
    that a wrong value is named before anything is compiled or uploaded."""
    fields = cron.split()
    if len(fields) != 6:
        raise ConfigError(
            f"--cron {cron!r}: expected 6 space-separated fields (second minute hour "
            "day-of-month month day-of-week), e.g. '0 0 6 * * *' for 06:00 every day"
        )
    for index, text in enumerate(fields):
        _cron_field_values(cron, index, text)
    return " ".join(fields)


def runs_per_day(cron: str) -> int:
    """How many times a (checked) cron fires on a day it fires at all: seconds x minutes x
    hours matched."""
    count = 1
    for index, text in enumerate(cron.split()[:3]):
        count *= len(_cron_field_values(cron, index, text))
    return count


def schedule_shadow(
    cfg: Config, host: str, cron: str, *, candidate: str, incumbent: str, data: str,
    reference: str = "", label_efficiency: str = "", experiment: str = "sslops-shadow",
    name: str | None = None, namespace: str | None = None, service_account: str | None = None,
) -> Scheduled:  # fmt: skip
    """Upload the shadow pipeline for ``cfg`` and create an enabled recurring run of it."""
    from sslops.pipeline.shadow_pipeline import (
        SHADOW_DESCRIPTION,
        SHADOW_PIPELINE_NAME,
        compile_shadow_pipeline,
    )

    params = {"candidate": candidate, "incumbent": incumbent, "data": data,
              "reference": reference, "label_efficiency": label_efficiency}  # fmt: skip
    return _schedule(
        cfg, host, cron, SHADOW_PIPELINE_NAME, SHADOW_DESCRIPTION, compile_shadow_pipeline,
        params, "Read-only shadow test of a candidate against the incumbent.",
        experiment=experiment, name=name, namespace=namespace, service_account=service_account,
    )  # fmt: skip


def schedule_predict(
    cfg: Config, host: str, cron: str, *, model: str, data: str, out: str = "",
    id_column: str = "", threshold: str = "", registry: str = "", approver_key: str = "",
    experiment: str = "sslops-predict",
    name: str | None = None, namespace: str | None = None, service_account: str | None = None,
) -> Scheduled:  # fmt: skip
    """Upload the batch-scoring pipeline for ``cfg`` and create an enabled recurring run:
    the rows under ``data`` scored with ``model`` on every run, published to ``out``
    (``{date}``: the UTC date the run was scheduled for, so each day keeps its own file)."""
    from sslops.pipeline.predict_pipeline import (
        PREDICT_DESCRIPTION,
        PREDICT_PIPELINE_NAME,
        compile_predict_pipeline,
    )

    if out and "{date}" not in out:
        raise ConfigError(
            f"--out {out!r}: a recurring run would replace one file every run; expected a "
            "path with {date} (the run's scheduled UTC date), e.g. "
            "/workspace/predictions/{date}.csv"
        )
    cron = check_cron(cron)
    if out and runs_per_day(cron) > 1:  # {date} names one file a day: the next run replaces it
        raise ConfigError(
            f"--cron {cron!r} fires {runs_per_day(cron)} times a day, but --out {out!r} names "
            "one file per UTC day ({date}): each run would replace the predictions the one "
            "before published; schedule it once a day (e.g. '0 0 2 * * *') or leave out --out "
            "(every run keeps its own predictions artifact)"
        )
    if approver_key and not registry:
        raise ConfigError("--approver-key checks an approval in an audit registry: give --registry")
    if threshold and not (_is_probability(threshold)):
        raise ConfigError(f"--threshold {threshold!r}: expected a probability between 0 and 1")
    params = {"model": model, "data": data, "out": out, "id_column": id_column,
              "threshold": threshold, "registry": registry,
              "approver_key": approver_key}  # fmt: skip
    return _schedule(
        cfg, host, cron, PREDICT_PIPELINE_NAME, PREDICT_DESCRIPTION, compile_predict_pipeline,
        params, "Batch scoring of new rows with an exported sslops model.",
        experiment=experiment, name=name, namespace=namespace, service_account=service_account,
    )  # fmt: skip


def _is_probability(text: str) -> bool:
    try:
        return 0 < float(text) < 1
    except ValueError:
        return False


def _schedule(
    cfg: Config, host: str, cron: str, pipeline: str, description: str,
    compile_ir: Callable[..., Path], params: dict[str, str], run_description: str, *,
    experiment: str, name: str | None, namespace: str | None, service_account: str | None,
) -> Scheduled:  # fmt: skip
    """Compile ``pipeline`` for ``cfg``, upload it as a new version and create a recurring
    run of that version with ``params`` (and the config as ``config_json``)."""
    cron = check_cron(cron)
    check_target(host, namespace)
    with tempfile.TemporaryDirectory(prefix="sslops-schedule-") as tmp:
        package = compile_ir(Path(tmp) / f"{pipeline}.yaml", cfg, pipeline)
        digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
        with kfp_errors(host):
            client = _client(host, namespace)
            pipeline_id, version_id, version_name = upload_version(
                client, package, pipeline, f"{pipeline}-{__version__}-{digest}",
                description, namespace,
            )  # fmt: skip
            exp = client.create_experiment(experiment, namespace=namespace)
            job = client.create_recurring_run(
                experiment_id=exp.experiment_id,
                job_name=name or f"{pipeline}-daily",
                description=run_description,
                cron_expression=cron,
                max_concurrency=1,
                no_catchup=True,  # a missed day is not replayed: its rows are read next run
                params={**params, "config_json": cfg.to_json()},
                pipeline_id=pipeline_id,
                version_id=version_id,
                pipeline_root=cfg.platform.storage.pipeline_root,
                service_account=service_account,
            )
    return Scheduled(
        pipeline_id=pipeline_id,
        version_id=version_id,
        version_name=version_name,
        experiment_id=str(exp.experiment_id),
        recurring_run_id=str(job.recurring_run_id),
        cron=cron,
        url=f"{host.rstrip('/')}/#/recurringrun/details/{job.recurring_run_id}",
    )
