"""``sslops submit``: compile the pipeline for a config, upload it as a new pipeline version
on a KFP endpoint, and start a run of that version (``kfp.Client``).

The pipeline's name says how it pretrains (``sslops-ssl-pipeline`` or
``...-multinode``). The first submission creates the pipeline (its first version); each
later one adds a version named after the package version and the compiled YAML's
sha256, so every run points at exactly the spec it ran.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sslops import __version__
from sslops.config import Config
from sslops.errors import ConfigError, SslopsError
from sslops.k8s.commands import PORT_FORWARD
from sslops.k8s.validation import check_dns_label


class SubmitError(SslopsError):
    """The KFP endpoint refused or could not be reached."""


def default_run_name(pipeline: str) -> str:
    """``<pipeline>-<UTC time>Z``: the same name whichever zone the submitter's machine is in
    (a cluster and its other records keep UTC)."""
    return f"{pipeline}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}Z"


@dataclass(frozen=True)
class Submitted:
    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    run_id: str
    url: str


def pipeline_name_for(cfg: Config) -> str:
    from sslops.pipeline.ssl_pipeline import PIPELINE_NAME

    return PIPELINE_NAME if cfg.pretrain.launcher == "local" else f"{PIPELINE_NAME}-multinode"


def check_host(host: str) -> str:
    """``--host`` as kfp.Client should get it: an http(s) URL. kfp itself takes an empty host
    as "ask the kube config" and prefixes anything else with https:// (with a warning)."""
    example = "e.g. http://localhost:8080"
    if not host.strip():
        raise ConfigError(f"--host is empty; expected the KFP API URL, {example}")
    try:
        parts = urlsplit(host)
        usable = bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number, an unclosed [IPv6 bracket
        usable = False
    if not usable or not host.startswith(("http://", "https://")) or host != "".join(host.split()):
        raise ConfigError(f"--host {host!r}: expected an http:// or https:// URL, {example}")
    return host


def check_target(host: str, namespace: str | None) -> None:
    """``--host`` and ``--namespace`` checked before kfp is asked (submit, schedule-shadow)."""
    check_host(host)
    if namespace is not None:
        check_dns_label(namespace, "--namespace")


@contextlib.contextmanager
def _kfp_quiet() -> Iterator[None]:
    """No log records and no warnings while kfp works: kfp.Client logs every failed health
    check with a traceback (``logging.exception`` on the root logger, which also installs a
    stderr handler when there is none) and warns about its own API; a failure is reported
    as one :class:`SubmitError` line instead."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()  # root has a handler: logging.exception adds none
    was_disabled = root.manager.disable
    root.addHandler(placeholder)
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(was_disabled)
        root.removeHandler(placeholder)


def _client(host: str, namespace: str | None) -> Any:
    import kfp

    kwargs = {"namespace": namespace} if namespace else {}
    return kfp.Client(host=host, **kwargs)  # inside kfp_errors: its warnings are silenced


def _latest_version_id(client: Any, pipeline_id: str) -> str:
    listed = client.list_pipeline_versions(pipeline_id, sort_by="created_at desc", page_size=1)
    versions = listed.pipeline_versions or []
    if not versions:
        raise SubmitError(f"pipeline {pipeline_id} was uploaded but lists no version")
    return str(versions[0].pipeline_version_id)


@contextlib.contextmanager
def kfp_errors(host: str) -> Iterator[None]:
    """KFP API and connection failures as one-line :class:`SubmitError`; kfp's own log
    records and warnings are silenced meanwhile (:func:`_kfp_quiet`)."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        with _kfp_quiet():
            yield
    except ApiException as exc:
        raise SubmitError(
            f"KFP at {host} answered {exc.status} {exc.reason}: {str(exc.body)[:300]}"
        ) from None
    except (HTTPError, OSError, TimeoutError) as exc:
        raise SubmitError(
            f"cannot reach KFP at {host}: {str(exc).rstrip('.')}; is KFP's API served there? From a laptop: "
            f"{PORT_FORWARD}, then --host http://localhost:8080 (docs/deploy.md, step 9)"
        ) from None


def upload_version(
    client: Any, package: Path, name: str, version_name: str, description: str,
    namespace: str | None,
) -> tuple[str, str, str]:  # fmt: skip
    """Upload ``package`` as a new version of pipeline ``name``: (pipeline, version id, name)."""
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:  # the first upload creates the pipeline and its first version
        created = client.upload_pipeline(
            str(package), pipeline_name=name, description=description, namespace=namespace
        )
        pipeline_id = created.pipeline_id
        return str(pipeline_id), _latest_version_id(client, pipeline_id), name
    version = client.upload_pipeline_version(
        str(package), version_name, pipeline_id=pipeline_id, description=description
    )
    return str(pipeline_id), str(version.pipeline_version_id), version_name


def submit(
    cfg: Config,
    host: str,
    experiment: str = "sslops",
    *,
    namespace: str | None = None,
    service_account: str | None = None,
    run_name: str | None = None,
) -> Submitted:
    """Compile for ``cfg``, upload a new version, start a run with ``cfg`` as ``config_json``."""
    from sslops.pipeline.ssl_pipeline import DESCRIPTION, compile_pipeline

    check_target(host, namespace)
    name = pipeline_name_for(cfg)
    with tempfile.TemporaryDirectory(prefix="sslops-submit-") as tmp:
        package = compile_pipeline(Path(tmp) / f"{name}.yaml", cfg, name)
        digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
        version_name = f"{name}-{__version__}-{digest}"
        with kfp_errors(host):
            client = _client(host, namespace)
            pipeline_id, version_id, version_name = upload_version(
                client, package, name, version_name, DESCRIPTION, namespace
            )
            exp = client.create_experiment(experiment, namespace=namespace)
            run = client.run_pipeline(
                experiment_id=exp.experiment_id,
                job_name=run_name or default_run_name(name),
                params={"config_json": cfg.to_json()},
                pipeline_id=pipeline_id,
                version_id=version_id,
                pipeline_root=cfg.platform.storage.pipeline_root,
                service_account=service_account,
            )
    return Submitted(
        pipeline_id=str(pipeline_id),
        version_id=version_id,
        version_name=version_name,
        experiment_id=str(exp.experiment_id),
        run_id=str(run.run_id),
        url=f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
    )
