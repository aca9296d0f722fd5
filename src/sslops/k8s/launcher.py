"""The launcher: create a TrainJob or PyTorchJob, follow it to the end, fail when it fails.

Runs inside the KFP ``launch_pretrain`` task with the pod's own service account
(in-cluster config; the Helm chart's Role allows exactly this). The prepared data and
the config are staged in the workspace PVC that the training pods also mount; after the
job succeeds, its output is copied back into the task's KFP output artifact, so the
rest of the pipeline sees an ordinary ``pretrain`` artifact.

A run that is stopped from the KFP UI sends SIGTERM to this pod; the job is then deleted
so its GPUs are freed. A passing API server outage (a restart, a 5xx or 429 answer, a reset
watch connection) does not end the task, nor the job: the launcher reads the job again,
backing off, for up to ``API_OUTAGE_SECONDS`` in a row.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslops.errors import SslopsError

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WATCH_SECONDS = 60  # one watch request; the loop re-reads the object between requests
API_OUTAGE_SECONDS = 15 * 60  # how long the API server may stay unreachable before giving up
RETRY_SECONDS = 2.0  # first wait after a failed request; doubled up to MAX_RETRY_SECONDS
MAX_RETRY_SECONDS = 60.0
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class TrainingJobFailed(SslopsError):
    """The training job reached a failed state, was deleted, or ran past its deadline."""


@dataclass(frozen=True)
class JobKind:
    group: str
    version: str
    plural: str
    succeeded: str  # condition type meaning success
    pod_selector: str  # label selector of the job's pods; {name} is the job name


KINDS = {
    "TrainJob": JobKind(
        "trainer.kubeflow.org", "v1alpha1", "trainjobs", "Complete",
        "jobset.sigs.k8s.io/jobset-name={name}",
    ),
    "PyTorchJob": JobKind(
        "kubeflow.org", "v1", "pytorchjobs", "Succeeded", "training.kubeflow.org/job-name={name}"
    ),
}  # fmt: skip


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a passing API server failure worth asking again: a 5xx or 429
    answer, or no answer at all (connection refused or reset, a cut-off watch stream)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUSES
    return isinstance(exc, HTTPError | OSError)


def _described(exc: BaseException) -> str:
    """One short line: ``503 Service Unavailable``, ``ProtocolError: Connection broken...``."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        return f"{status} {getattr(exc, 'reason', '') or ''}".strip()
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


def verdict(kind: JobKind, obj: dict[str, Any]) -> str | None:
    """``"succeeded"``, ``"failed"`` or None (still running), from the job's conditions."""
    for condition in _conditions(obj):
        if condition.get("status") != "True":
            continue
        if condition.get("type") == kind.succeeded:
            return "succeeded"
        if condition.get("type") == "Failed":
            return "failed"
    return None


class JobWatcher:
    """Create one job object and follow its conditions until it ends."""

    def __init__(self, api_client: Any, namespace: str, echo: Callable[[str], None] = print):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.echo = echo
        self._reported: set[tuple[str, str, str]] = set()

    def _args(self, kind: JobKind) -> tuple[str, str, str, str]:
        return kind.group, kind.version, self.namespace, kind.plural

    def _report(self, job: dict[str, Any], obj: dict[str, Any]) -> None:
        for c in _conditions(obj):
            key = (str(c.get("type")), str(c.get("status")), str(c.get("reason", "")))
            if key not in self._reported:
                self._reported.add(key)
                message = f": {c['message']}" if c.get("message") else ""
                self.echo(
                    f"{job['kind']} {job['metadata']['name']}: {key[0]}={key[1]}"
                    f"{f' ({key[2]})' if key[2] else ''}{message}"
                )

    def run(self, job: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
        """Create ``job``, wait for it, return its final state; raise when it fails."""
        kind = KINDS[job["kind"]]
        name = job["metadata"]["name"]
        self.custom.create_namespaced_custom_object(*self._args(kind), body=job)
        self.echo(f"created {job['kind']} {self.namespace}/{name}")
        try:
            final = self._wait(job, kind, time.monotonic() + timeout_seconds)
        except BaseException:
            self.delete(job)
            raise
        if verdict(kind, final) == "failed":
            logs = self.failed_pod_logs(kind, name)
            reason = next((c for c in _conditions(final) if c.get("type") == "Failed"), {})
            raise TrainingJobFailed(
                f"{job['kind']} {self.namespace}/{name} failed: "
                f"{reason.get('reason', '')} {reason.get('message', '')}".rstrip()
                + (f"\n{logs}" if logs else "")
            )
        return final

    def _wait(self, job: dict[str, Any], kind: JobKind, deadline: float) -> dict[str, Any]:
        """Follow the job until it ends; a passing API server outage is waited out."""
        name = job["metadata"]["name"]
        outage_since: float | None = None
        pause = RETRY_SECONDS
        while True:
            try:
                final = self._follow(job, kind, deadline)
            except Exception as exc:
                if not transient(exc):
                    raise
                now = time.monotonic()
                outage_since = now if outage_since is None else outage_since
                problem = _described(exc)
                if now - outage_since >= API_OUTAGE_SECONDS or now >= deadline:
                    raise TrainingJobFailed(
                        f"{job['kind']} {name}: the Kubernetes API server was unreachable for "
                        f"{now - outage_since:.0f} s ({problem})"
                    ) from None
                self.echo(f"{job['kind']} {name}: API server: {problem}; retrying in {pause:g} s")
                time.sleep(min(pause, max(deadline - now, 0.0)))
                pause = min(2 * pause, MAX_RETRY_SECONDS)
                continue
            if final is not None:
                return final
            outage_since, pause = None, RETRY_SECONDS  # the API server answered

    def _follow(self, job: dict[str, Any], kind: JobKind, deadline: float) -> dict[str, Any] | None:
        """One read and one watch request: the job's final state, or None (still running)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        name = job["metadata"]["name"]
        try:
            obj = self.custom.get_namespaced_custom_object(*self._args(kind), name)
        except ApiException as exc:
            if exc.status == 404:
                raise TrainingJobFailed(f"{job['kind']} {name} was deleted") from None
            raise
        self._report(job, obj)
        if verdict(kind, obj):
            return dict(obj)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TrainingJobFailed(f"{job['kind']} {name} did not finish before its deadline")
        try:
            for event in watch.Watch().stream(
                self.custom.list_namespaced_custom_object, *self._args(kind),
                field_selector=f"metadata.name={name}",
                resource_version=obj["metadata"].get("resourceVersion"),
                timeout_seconds=max(1, int(min(WATCH_SECONDS, remaining))),
            ):  # fmt: skip
                current = event["raw_object"]
                if event["type"] == "DELETED":
                    raise TrainingJobFailed(f"{job['kind']} {name} was deleted")
                self._report(job, current)
                if verdict(kind, current):
                    return dict(current)
        except ApiException as exc:
            if exc.status != 410:  # 410 Gone: the resource version expired; re-read
                raise
        return None

    def failed_pod_logs(self, kind: JobKind, name: str, tail: int = 40) -> str:
        """The last lines of every failed container of the job's pods."""
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=kind.pod_selector.format(name=name)
        )
        chunks = []
        for pod in pods.items:
            for status in pod.status.container_statuses or []:
                ended = status.state.terminated or status.last_state.terminated
                if ended is None or ended.exit_code == 0:
                    continue
                text = self.core.read_namespaced_pod_log(
                    pod.metadata.name, self.namespace, container=status.name, tail_lines=tail
                )
                chunks.append(f"--- {pod.metadata.name}/{status.name} (exit {ended.exit_code})")
                chunks.append(text.rstrip())
        return "\n".join(chunks)

    def delete(self, job: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        kind = KINDS[job["kind"]]
        try:
            self.custom.delete_namespaced_custom_object(
                *self._args(kind), job["metadata"]["name"], propagation_policy="Foreground"
            )
            self.echo(f"deleted {job['kind']} {job['metadata']['name']}")
        except ApiException as exc:
            if exc.status != 404:
                raise


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """KFP stops a run with SIGTERM; turn it into SystemExit so cleanup code runs."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def in_cluster() -> tuple[Any, str]:
    """The API client and namespace of the pod this runs in."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        namespace = SA_NAMESPACE.read_text(encoding="utf-8").strip()
    except (config.ConfigException, OSError) as exc:
        raise SslopsError(
            f"the launcher runs inside a Kubernetes pod with a service account ({exc})"
        ) from None
    return client.ApiClient(), namespace


def launch_pretrain_task(
    config_json: str, image: str, gpu_image: str, prepared: Any, pretrained: Any,
    api_client: Any = None, namespace: str | None = None,
) -> None:  # fmt: skip
    """The ``launch_pretrain`` component body: stage, run the job, collect its output."""
    from sslops.config import config_from_json
    from sslops.k8s.specs import JobRequest, build_training_job

    try:
        cfg = config_from_json(config_json)
        if cfg.pretrain.launcher == "local":
            raise SslopsError(
                "this pipeline was compiled to pretrain through a training job, but the config "
                "says pretrain.launcher: local; set trainjob or pytorchjob, or use the "
                "single-pod pipeline"
            )
        if api_client is None or namespace is None:
            api_client, namespace = in_cluster()
        name = f"sslops-pretrain-{uuid.uuid4().hex[:10]}"
        run_dir = Path(cfg.platform.storage.workspace_path) / "sslops" / name
        shutil.copytree(prepared.path, run_dir / "prepared")
        (run_dir / "config.json").write_text(config_json, encoding="utf-8")
        if cfg.pretrain.gpus_per_node:
            image = gpu_image
        job = build_training_job(cfg, JobRequest(name, namespace, image, str(run_dir)))
        try:
            with _sigterm_as_exit():
                JobWatcher(api_client, namespace).run(job, cfg.platform.job_timeout_minutes * 60)
            if not (run_dir / "pretrained" / "meta.json").is_file():
                raise TrainingJobFailed(
                    f"{job['kind']} {name} succeeded but left no pretrain artifact in {run_dir}"
                )
            shutil.copytree(run_dir / "pretrained", pretrained.path)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        summary_path = Path(pretrained.path) / "summary.json"
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        pretrained.metadata.update(
            {
                "objective": summary.get("objective"),
                "loss": summary.get("final_loss"),
                "job": f"{job['kind']}/{name}",
                "nodes": cfg.pretrain.nodes,
                "gpus_per_node": cfg.pretrain.gpus_per_node,
            }
        )
    except SslopsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
