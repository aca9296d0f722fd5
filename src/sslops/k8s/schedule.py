"""``sslops schedule-shadow``: the shadow pipeline as a KFP recurring run (``kfp.Client``).

Compiles the shadow pipeline for a config, uploads it as a new version of
``sslops-shadow-pipeline`` (as ``sslops submit`` does for the main pipeline) and creates
a recurring run of that version on a cron schedule. The paths are read by the task in
its pod (the workspace PVC); the same ``data`` folder is read again on every run, so
whatever lands there by the scheduled time is tested.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sslops import __version__
from sslops.config import Config
from sslops.errors import ConfigError
from sslops.k8s.submit import _client, kfp_errors, upload_version


@dataclass(frozen=True)
class Scheduled:
    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    recurring_run_id: str
    cron: str
    url: str


def check_cron(cron: str) -> str:
    """KFP (robfig/cron) takes 6 fields, seconds first: ``0 0 6 * * *`` is 06:00 daily."""
    fields = cron.split()
    if len(fields) != 6:
        raise ConfigError(
            f"--cron {cron!r}: expected 6 space-separated fields (second minute hour "
            "day-of-month month day-of-week), e.g. '0 0 6 * * *' for 06:00 every day"
        )
    return " ".join(fields)


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

    cron = check_cron(cron)
    pipeline = SHADOW_PIPELINE_NAME
    with tempfile.TemporaryDirectory(prefix="sslops-schedule-") as tmp:
        package = compile_shadow_pipeline(Path(tmp) / f"{pipeline}.yaml", cfg, pipeline)
        digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
        with kfp_errors(host):
            client = _client(host, namespace)
            pipeline_id, version_id, version_name = upload_version(
                client, package, pipeline, f"{pipeline}-{__version__}-{digest}",
                SHADOW_DESCRIPTION, namespace,
            )  # fmt: skip
            exp = client.create_experiment(experiment, namespace=namespace)
            job = client.create_recurring_run(
                experiment_id=exp.experiment_id,
                job_name=name or f"{pipeline}-daily",
                description="Read-only shadow test of a candidate against the incumbent.",
                cron_expression=cron,
                max_concurrency=1,
                no_catchup=True,  # a missed day is not replayed: its batch is tested next run
                params={
                    "candidate": candidate,
                    "incumbent": incumbent,
                    "data": data,
                    "reference": reference,
                    "label_efficiency": label_efficiency,
                    "config_json": cfg.to_json(),
                },
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
