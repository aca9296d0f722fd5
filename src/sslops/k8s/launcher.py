"""The launcher: create a TrainJob or PyTorchJob, follow it to the end, fail when it fails.

Runs inside the KFP ``launch_pretrain`` task with the pod's own service account
(in-cluster config; the Helm chart's Role allows exactly this). The prepared data and
the config are staged in the workspace PVC that the training pods also mount; after the
job succeeds, its output is copied back into the task's KFP output artifact, so the
rest of the pipeline sees an ordinary ``pretrain`` artifact.

The job and its run folder (``<workspace>/sslops/<job>``) are named after the KFP run and
task (:func:`job_name`), so a retry of the task (KFP's retry policy, a restarted pod, a
retried run) finds what the earlier attempt left: it collects the job's artifact if the job
finished, re-attaches to the job if that still runs (leaving its run folder as it is), and
otherwise stages the folder again and starts the job again, which resumes from the latest
intact checkpoint of that folder when its config fingerprint matches (a changed config
starts fresh, saying why). The run folder is removed when the task
succeeds, and kept for the retry when it fails after a checkpoint was written.

SIGTERM reaches this pod for two different reasons, told apart by the pod's own
``DisruptionTarget`` condition (:meth:`JobWatcher.disruption`), which Kubernetes sets before it
preempts, evicts (``kubectl drain``, a spot node's drain) or shuts a node's pods down, and
never when the run is stopped: KFP stops a run by setting its Argo Workflow's
``activeDeadlineSeconds`` to 0, and Argo then signals the pod's containers without
deleting the pod. A disrupted launcher leaves the job running, and its run folder, for the
retry of the task to follow; any other SIGTERM (the run stopped, the pod deleted by hand),
or one whose reason cannot be read, deletes the job so its GPUs are freed (its checkpoints
stay for a retry). The job carries an owner reference to the run's Workflow when the pod
names one, so deleting the run deletes a job no launcher follows any more; its
``activeDeadlineSeconds`` ends it in any case.

A passing API server outage (a restart, a 5xx or 429 answer, a reset
watch connection) does not end the task, nor the job: the launcher reads the job again,
backing off, for up to ``API_OUTAGE_SECONDS`` in a row.

While the job runs, its ranks' heartbeat files on the workspace volume (see
``sslops.pretrain.loop.Heartbeat``) are read between watch requests: when no rank's step
has moved for ``STALL_HEARTBEATS`` heartbeat intervals the task logs ``no progress for N s``
with each rank's last step (a hung rank, a stuck collective), and again after as long.
"""

from __future__ import annotations

import json
import os
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
from sslops.k8s.run_folder import (
    ProgressWatch,
    finished_artifact,
    job_name,
    leave_run_folder,
    resume_or_start_fresh,
    stage_run_folder,
)

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WATCH_SECONDS = 60  # one watch request; the loop re-reads the object between requests
API_OUTAGE_SECONDS = 15 * 60  # how long the API server may stay unreachable before giving up
RETRY_SECONDS = 2.0  # first wait after a failed request; doubled up to MAX_RETRY_SECONDS
MAX_RETRY_SECONDS = 60.0
DELETE_WAIT_SECONDS = 10 * 60  # how long a failed earlier attempt's job may take to go
STALL_HEARTBEATS = 5  # heartbeat intervals without a step before "no progress" is logged
# The kubelet's DisruptionTarget (node shutdown, node-pressure eviction) reaches the API
# server after its SIGTERM may have: a SIGTERM on a pod that is neither marked nor deleted
# looks again for this long, one read a second (well inside the 30 s grace period).
DISRUPTION_WAIT_SECONDS = 5.0
POD_NAME_ENV = "SSLOPS_POD_NAME"  # the pipeline sets it to the pod's metadata.name
WORKFLOW_API_GROUP = "argoproj.io"
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class TrainingJobFailed(SslopsError):
    """The training job reached a failed state, was deleted, or ran past its deadline."""


class Stopped(SystemExit):
    """SIGTERM reached the launcher (exit status 143). ``left_running`` is set when the
    job was left for the retry of the task (the launcher's pod was disrupted)."""

    left_running = False


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

    def __init__(
        self, api_client: Any, namespace: str, echo: Callable[[str], None] = print,
        pod_name: str | None = None,
    ) -> None:  # fmt: skip
        """``pod_name``: the launcher's own pod, read on SIGTERM for why it is stopped and
        at creation for the run's Workflow; None outside a pod."""
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.echo = echo
        self.pod_name = pod_name
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

    def left_running(self, job: dict[str, Any]) -> bool:
        """Whether a job of ``job``'s name, left by an earlier attempt of the task, still runs
        (neither ended nor being deleted): the retry then follows it as it is."""
        from kubernetes.client.exceptions import ApiException

        kind = KINDS[job["kind"]]
        try:
            existing = self.custom.get_namespaced_custom_object(
                *self._args(kind), job["metadata"]["name"]
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return verdict(kind, existing) is None and not existing["metadata"].get("deletionTimestamp")

    def _create(self, job: dict[str, Any], kind: JobKind) -> None:
        """Create ``job``; one of that name (an earlier attempt's, which ended or is going,
        or one created since :meth:`left_running` looked) is followed while it runs, and
        replaced once it ended or is going."""
        from kubernetes.client.exceptions import ApiException

        where = f"{job['kind']} {self.namespace}/{job['metadata']['name']}"
        try:
            self.custom.create_namespaced_custom_object(*self._args(kind), body=job)
            self.echo(f"created {where}")
            return
        except ApiException as exc:
            if exc.status != 409:  # 409 Conflict: the name exists
                raise
        existing = self.custom.get_namespaced_custom_object(
            *self._args(kind), job["metadata"]["name"]
        )
        state = verdict(kind, existing)
        if state is None and not existing["metadata"].get("deletionTimestamp"):
            self.echo(
                f"{where} exists, left running by an earlier attempt of this task: following it"
            )
            return
        self.echo(
            f"{where} exists, {state or 'being deleted'} in an earlier attempt of this task: "
            "replacing it"
        )
        self.delete(job)
        self._wait_gone(job, kind, where)
        self.custom.create_namespaced_custom_object(*self._args(kind), body=job)
        self.echo(f"created {where}")

    def _wait_gone(self, job: dict[str, Any], kind: JobKind, where: str) -> None:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + DELETE_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                self.custom.get_namespaced_custom_object(*self._args(kind), job["metadata"]["name"])
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(RETRY_SECONDS)
        raise TrainingJobFailed(f"{where} was still being deleted after {DELETE_WAIT_SECONDS} s")

    def run(
        self, job: dict[str, Any], timeout_seconds: float, progress: ProgressWatch | None = None,
        retryable: bool = False, attach: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Create ``job``, wait for it, return its final state; raise when it fails.

        ``retryable``: a retry of the task finds the job (it is named after the run and
        task), so a SIGTERM of a disrupted launcher pod leaves it running. ``attach``: the
        job exists, left running by an earlier attempt (:meth:`left_running`): follow it."""
        kind = KINDS[job["kind"]]
        name = job["metadata"]["name"]
        if not attach:
            self._adopt(job)
            self._create(job, kind)
        try:
            final = self._wait(job, kind, time.monotonic() + timeout_seconds, progress)
        except Stopped as stop:
            why = self.disruption() if retryable else None
            if why is None:
                self.delete(job)
                raise
            self.echo(
                f"this pod is being stopped by a disruption ({why}): leaving {job['kind']} "
                f"{self.namespace}/{name} running; a retry of this task follows it"
            )
            stop.left_running = True
            raise
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

    def _wait(
        self, job: dict[str, Any], kind: JobKind, deadline: float,
        progress: ProgressWatch | None = None,
    ) -> dict[str, Any]:  # fmt: skip
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
            if progress is not None:
                progress.check(f"{job['kind']} {name}")

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

    def _own_pod(self) -> Any:
        if not self.pod_name:
            raise SslopsError(f"this pod's name is unknown (no {POD_NAME_ENV} or HOSTNAME)")
        return self.core.read_namespaced_pod(self.pod_name, self.namespace)

    def disruption(self) -> str | None:
        """Why this pod got SIGTERM, when Kubernetes is disrupting it: the reason of its
        ``DisruptionTarget`` condition (``EvictionByEvictionAPI``, ``PreemptionByScheduler``,
        ``DeletionByTaintManager``, ``TerminationByKubelet``, ...); None for any other stop
        (the run stopped, the pod deleted by hand) and when the pod cannot be read, which
        then deletes the job: a job wrongly deleted loses the steps since its last
        checkpoint, one wrongly left runs on GPUs until its deadline."""
        deadline = time.monotonic() + DISRUPTION_WAIT_SECONDS
        while True:
            try:
                pod = self._own_pod()
            except Exception as exc:
                self.echo(
                    f"could not read this pod to tell a disruption from a stopped run "
                    f"({_described(exc)}): deleting the job"
                )
                return None
            for condition in (pod.status and pod.status.conditions) or []:
                if condition.type == "DisruptionTarget" and condition.status == "True":
                    return str(condition.reason or "DisruptionTarget")
            # Marked before it is deleted, so a deleted pod without the mark is not
            # disrupted; the kubelet's mark may trail its SIGTERM: look again.
            left = deadline - time.monotonic()
            if pod.metadata.deletion_timestamp is not None or left <= 0:
                return None
            time.sleep(min(1.0, left))

    def _adopt(self, job: dict[str, Any]) -> None:
        """Give ``job`` an owner reference to the Argo Workflow that owns this pod (the KFP
        run), so that deleting the run deletes the job. No ``blockOwnerDeletion``: that
        would need rights on the Workflow's finalizers."""
        if not self.pod_name:
            return
        try:
            owners = self._own_pod().metadata.owner_references or []
        except Exception as exc:
            self.echo(
                f"no owner reference for the job: could not read this pod ({_described(exc)})"
            )
            return
        for owner in owners:
            if owner.kind == "Workflow" and owner.api_version.startswith(WORKFLOW_API_GROUP + "/"):
                job["metadata"]["ownerReferences"] = [
                    {"apiVersion": owner.api_version, "kind": owner.kind,
                     "name": owner.name, "uid": owner.uid}
                ]  # fmt: skip
                return

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
    """Turn SIGTERM (a stopped run, a disrupted pod) into :class:`Stopped` so cleanup code
    runs; a second SIGTERM meanwhile is ignored (the cleanup is under way)."""

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Stopped(143)

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


def own_pod_name() -> str | None:
    """This pod's name: ``SSLOPS_POD_NAME`` (the downward API, set by the pipeline), else
    ``HOSTNAME`` (the pod's name unless the pod sets a hostname)."""
    return os.environ.get(POD_NAME_ENV) or os.environ.get("HOSTNAME") or None


def launch_pretrain_task(
    config_json: str, image: str, gpu_image: str, prepared: Any, pretrained: Any,
    run_id: str = "", task_name: str = "", api_client: Any = None, namespace: str | None = None,
    pod_name: str | None = None, pod_labels: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """The ``launch_pretrain`` component body: stage, run the job, collect its output.

    ``run_id`` and ``task_name`` (the KFP run's id and this task's name) name the job and
    its run folder, so that a retry of the task resumes what the earlier attempt left.
    ``pod_name`` is this pod's (in a cluster: :func:`own_pod_name`). ``pod_labels`` go on
    the training pods over the config's ``platform.pod_labels``: the pipeline's own (a
    Helm release's name among them), which a run's config cannot drop."""
    from sslops.config import config_from_json
    from sslops.k8s.specs import JobRequest, build_training_job
    from sslops.pretrain.stage import checkpoint_dir_for

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
            pod_name = pod_name or own_pod_name()
        name = job_name(run_id, task_name)
        retryable = name is not None
        if name is None:
            name = f"sslops-pretrain-{uuid.uuid4().hex[:10]}"
            print(f"no KFP run id: job {name} is named at random, and a retry starts over")
        run_dir = Path(cfg.platform.storage.workspace_path) / "sslops" / name
        out = run_dir / "pretrained"
        checkpoints = checkpoint_dir_for(cfg, out)
        if gpus := cfg.pretrain.gpus_per_node:
            image = gpu_image
        job = build_training_job(cfg, JobRequest(name, namespace, image, str(run_dir)), pod_labels)
        collected = left_running = False
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            watcher = JobWatcher(api_client, namespace, pod_name=pod_name)
            if finished_artifact(cfg, out):
                print(f"{out} holds the artifact an earlier attempt's job finished: collecting it")
            else:
                # The job a drained launcher left still works in the run folder: look for it
                # before staging, which would say it resumes and may clear its checkpoints.
                if attach := retryable and watcher.left_running(job):
                    print(
                        f"re-attaching to {job['kind']} {namespace}/{name}, left running by an "
                        "earlier attempt of this task; its run folder is left as it is"
                    )
                else:
                    shutil.rmtree(out, ignore_errors=True)  # a stale or partial one
                    # before staging: a checkpoint of other settings or data is refused
                    # (pretrain.checkpoint_dir) with nothing staged or submitted
                    resume_or_start_fresh(cfg, checkpoints, Path(prepared.path), print)
                    stage_run_folder(config_json, Path(prepared.path), run_dir)
                beat = cfg.pretrain.heartbeat_seconds
                progress = (
                    ProgressWatch(checkpoints, STALL_HEARTBEATS * beat, print) if beat else None
                )
                try:
                    with _sigterm_as_exit():
                        watcher.run(
                            job, cfg.platform.job_timeout_minutes * 60, progress, retryable,
                            attach,
                        )  # fmt: skip
                except Stopped as stop:
                    left_running = stop.left_running
                    raise
                if not (out / "meta.json").is_file():
                    raise TrainingJobFailed(
                        f"{job['kind']} {name} succeeded but left no pretrain artifact in {run_dir}"
                    )
            shutil.copytree(out, pretrained.path)
            collected = True
        finally:
            leave_run_folder(
                run_dir, checkpoints, keep=retryable and not collected, in_use=left_running
            )
        summary_path = Path(pretrained.path) / "summary.json"
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        pretrained.metadata.update(
            {
                "objective": summary.get("objective"),
                "loss": summary.get("final_loss"),
                "job": f"{job['kind']}/{name}",
                "nodes": cfg.pretrain.nodes,
                "gpus_per_node": gpus,
                "resumed_from_step": summary.get("resumed_from_step"),
            }
        )
    except SslopsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
