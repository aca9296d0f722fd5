"""The training-job launcher against a stand-in Kubernetes API server (no cluster here).

The real kubernetes client talks HTTP to a small server that stores custom objects, streams
watch events, and lists pods and logs. For the end-to-end case the server plays the Trainer
controller: it runs the TrainJob's own command (torchrun with the PET_* rendezvous variables
the torch runtime sets) on the files the launcher staged, then reports the outcome.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from sslops.config import validate_config
from sslops.k8s.launcher import JobWatcher, TrainingJobFailed, launch_pretrain_task
from sslops.k8s.run_folder import job_name
from tests.conftest import BIN, crd_schemas


class _QuietServer(ThreadingHTTPServer):
    """A client that goes away mid-watch (a launcher SIGTERMed or stopped while it waits)
    is what these tests do on purpose: no traceback in the test log for it; any other
    server error is still printed."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


NAMESPACE = "team-a"


class FakeApiServer:
    """Custom objects, a watch stream per object, pods and their logs; thread-safe."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.pods: list[dict[str, Any]] = []
        self.logs: dict[str, str] = {}
        self.gone_once = False  # answer the first watch with 410 Gone
        self.unavailable = 0  # answer this many reads of an object with 503 (an API server restart)
        self.drop_watches = 0  # close this many watch streams mid-response (a connection reset)
        self.on_create = lambda obj: None
        self.own_pods: dict[str, dict[str, Any]] = {}  # single pods by name (the launcher's)
        self.pod_reads = 0
        self.on_pod_read = lambda name: None
        self.on_watch = lambda name: None  # a watch request on the object of that name
        self.changed = threading.Condition()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set_conditions(self, name: str, *conditions: tuple[str, str, str]) -> None:
        with self.changed:
            obj = self.objects.get(name)
            if obj is None:  # deleted meanwhile
                return
            obj.setdefault("status", {})["conditions"] = [
                {"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions
            ]
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
            self.changed.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # watch events go out as chunks, as the API server's do

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, event: dict[str, Any]) -> None:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def do_POST(self) -> None:
                obj = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                obj["metadata"]["resourceVersion"] = "1"
                with api.changed:
                    if obj["metadata"]["name"] in api.objects:
                        conflict = {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
                        return self._send(409, conflict)
                    api.objects[obj["metadata"]["name"]] = obj
                self._send(201, obj)
                api.on_create(obj)

            def do_DELETE(self) -> None:
                name = urlparse(self.path).path.rsplit("/", 1)[1]
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with api.changed:
                    api.deleted.append(name)
                    obj = api.objects.pop(name, None)
                    api.changed.notify_all()
                self._send(200 if obj else 404, {"kind": "Status", "status": "Success"})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                parts = url.path.strip("/").split("/")
                if parts[:2] == ["api", "v1"] and parts[-1] == "log":
                    return self._send(200, api.logs[parts[-2]])
                if parts[:2] == ["api", "v1"] and parts[-2] == "pods":  # one pod, by name
                    api.pod_reads += 1
                    api.on_pod_read(parts[-1])
                    if parts[-1] not in api.own_pods:
                        return self._send(404, {"kind": "Status", "code": 404})
                    return self._send(200, api.own_pods[parts[-1]])
                if parts[:2] == ["api", "v1"]:
                    pods = {"kind": "PodList", "apiVersion": "v1", "items": api.pods}
                    return self._send(200, pods)
                if query.get("watch", "").lower() == "true" and api.drop_watches:
                    api.drop_watches -= 1
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b'ff\r\n{"type": "MOD')  # cut off inside a chunk
                    self.close_connection = True
                    return None
                if query.get("watch", "").lower() == "true":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self._watch(query)
                    self.wfile.write(b"0\r\n\r\n")
                    return None
                if api.unavailable and parts[-1] in api.objects:
                    api.unavailable -= 1
                    return self._send(503, {"kind": "Status", "code": 503, "reason": "Unavailable"})
                if parts[-1] not in api.objects:
                    return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                return self._send(200, api.objects[parts[-1]])

            def _watch(self, query: dict[str, str]) -> None:
                name = query["fieldSelector"].removeprefix("metadata.name=")
                api.on_watch(name)
                if api.gone_once:
                    api.gone_once = False
                    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"}
                    return self._chunk({"type": "ERROR", "object": status})
                seen = query.get("resourceVersion")
                deadline = time.monotonic() + float(query.get("timeoutSeconds", 5))
                with api.changed:
                    while time.monotonic() < deadline:
                        obj = api.objects.get(name)
                        if obj is None:
                            gone = {"metadata": {"name": name}}
                            return self._chunk({"type": "DELETED", "object": gone})
                        if obj["metadata"]["resourceVersion"] != seen:
                            seen = obj["metadata"]["resourceVersion"]
                            self._chunk({"type": "MODIFIED", "object": obj})
                        api.changed.wait(timeout=0.2)
                return None

        return Handler


@pytest.fixture
def api_server():
    server = FakeApiServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def api_client(api_server: FakeApiServer):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = api_server.host
    with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture(scope="module")
def prepared_dir(small_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sslops.prepare import prepare

    return prepare(small_config, tmp_path_factory.mktemp("launcher") / "prepare")


def _job_config(small_config, workspace: Path, launcher: str = "trainjob", **pretrain: Any) -> Any:
    raw = small_config.model_dump(mode="json")
    raw["pretrain"] |= {"launcher": launcher, "nodes": 1, "gpus_per_node": 0, **pretrain}
    raw["platform"]["storage"] |= {"workspace_pvc": "ws", "workspace_path": str(workspace)}
    return validate_config(raw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_trainjob_runs_its_own_command_and_the_output_comes_back(
    api_server: FakeApiServer, api_client, small_config, prepared_dir, tmp_path: Path, capsys
) -> None:
    cfg = _job_config(small_config, tmp_path / "workspace")
    ran: dict[str, Any] = {}

    def trainer_controller(job: dict[str, Any]) -> None:
        def run() -> None:
            name = job["metadata"]["name"]
            api_server.set_conditions(name, ("Created", "JobSetCreated", "JobSet created"))
            trainer = job["spec"]["trainer"]
            env = {
                **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                "PET_NNODES": str(trainer["numNodes"]),
                "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
                "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(_free_port()),
            }  # fmt: skip
            done = subprocess.run(
                trainer["command"] + trainer["args"], env=env, capture_output=True, text=True
            )
            ran.update(returncode=done.returncode, stderr=done.stderr[-3000:])
            if done.returncode == 0:
                api_server.set_conditions(name, ("Complete", "JobSetCompleted", "finished"))
            else:
                api_server.set_conditions(name, ("Failed", "JobSetFailed", "trainer failed"))

        threading.Thread(target=run, daemon=True).start()

    api_server.on_create = trainer_controller
    prepared = SimpleNamespace(path=str(prepared_dir))
    pretrained = SimpleNamespace(path=str(tmp_path / "pretrained"), metadata={})
    launch_pretrain_task(
        cfg.to_json(), "reg/sslops:1", "reg/sslops:1-cuda", prepared, pretrained,
        api_client=api_client, namespace=NAMESPACE,
    )  # fmt: skip
    assert ran["returncode"] == 0, ran["stderr"]
    out = Path(pretrained.path)
    assert (out / "meta.json").is_file() and (out / "encoder.safetensors").is_file()
    assert pretrained.metadata["job"].startswith("TrainJob/sslops-pretrain-")
    assert not list((tmp_path / "workspace" / "sslops").iterdir())  # the run folder is removed
    (job,) = api_server.objects.values()
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["spec"]["trainer"]["image"] == "reg/sslops:1"  # no GPUs: the CPU image
    printed = capsys.readouterr().out
    assert "no KFP run id: job sslops-pretrain-" in printed  # called without one
    assert "Created=True (JobSetCreated): JobSet created" in printed
    assert "Complete=True (JobSetCompleted): finished" in printed
    from sslops.k8s.validation import validate_object

    job = {k: v for k, v in job.items() if k != "status"}
    job["metadata"] = {k: v for k, v in job["metadata"].items() if k != "resourceVersion"}
    assert validate_object(job, crd_schemas()) == "crd"  # skips, naming ../shared, without it


def test_failed_pytorchjob_fails_the_task_with_the_pod_log(
    api_server: FakeApiServer, api_client, small_config, prepared_dir, tmp_path: Path, capsys
) -> None:
    cfg = _job_config(small_config, tmp_path / "workspace", launcher="pytorchjob")

    def operator(job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        api_server.pods = [
            {
                "metadata": {"name": f"{name}-master-0"},
                "status": {
                    "containerStatuses": [
                        {
                            "name": "pytorch", "image": "x", "imageID": "", "ready": False,
                            "restartCount": 3,
                            "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
                            "lastState": {},
                        }
                    ]
                },
            }
        ]  # fmt: skip
        api_server.logs[f"{name}-master-0"] = (
            "Traceback (most recent call last):\nOutOfMemoryError\n"
        )
        api_server.set_conditions(
            name,
            ("Created", "PyTorchJobCreated", ""),
            ("Failed", "PyTorchJobFailed", "backoff limit reached"),
        )

    api_server.on_create = operator
    prepared = SimpleNamespace(path=str(prepared_dir))
    pretrained = SimpleNamespace(path=str(tmp_path / "pretrained"), metadata={})
    with pytest.raises(SystemExit) as stopped:
        launch_pretrain_task(
            cfg.to_json(), "i", "i-cuda", prepared, pretrained,
            api_client=api_client, namespace=NAMESPACE,
        )  # fmt: skip
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "error: PyTorchJob team-a/sslops-pretrain-" in err
    assert "failed: PyTorchJobFailed backoff limit reached" in err
    assert "(exit 1)" in err and "OutOfMemoryError" in err
    assert not Path(pretrained.path).exists()
    assert not list((tmp_path / "workspace" / "sslops").iterdir())


def _trainjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"runtimeRef": {"name": "torch-distributed"}},
    }


def test_a_job_past_its_deadline_is_deleted(api_server: FakeApiServer, api_client) -> None:
    watcher = JobWatcher(api_client, NAMESPACE, echo=lambda line: None)
    with pytest.raises(TrainingJobFailed, match="did not finish before its deadline"):
        watcher.run(_trainjob("sslops-pretrain-slow"), timeout_seconds=1.5)
    assert api_server.deleted == ["sslops-pretrain-slow"]


def _completes_after(api_server: FakeApiServer, seconds: float) -> Callable[[dict[str, Any]], None]:
    """An ``on_create`` hook: the created job reports Complete ``seconds`` later."""

    def complete(job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        threading.Timer(seconds, api_server.set_conditions, (name, ("Complete", "", ""))).start()

    return complete


def test_an_expired_watch_is_resumed_from_a_fresh_read(
    api_server: FakeApiServer, api_client
) -> None:
    api_server.gone_once = True

    api_server.on_create = _completes_after(api_server, 0.5)
    lines: list[str] = []
    final = JobWatcher(api_client, NAMESPACE, echo=lines.append).run(
        _trainjob("sslops-pretrain-ok"), timeout_seconds=20
    )
    assert final["status"]["conditions"][0]["type"] == "Complete"
    assert lines[-1] == "TrainJob sslops-pretrain-ok: Complete=True"
    assert api_server.deleted == []


def test_a_passing_api_server_outage_does_not_delete_a_running_job(
    api_server: FakeApiServer, api_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multi-node job runs for hours; an API server restart or a reset watch connection
    meanwhile used to end the task, and the task deleted the job (its GPUs' work lost)."""
    from sslops.k8s import launcher

    monkeypatch.setattr(launcher, "RETRY_SECONDS", 0.05)
    api_server.unavailable = 3
    api_server.drop_watches = 2

    api_server.on_create = _completes_after(api_server, 1.5)
    lines: list[str] = []
    final = JobWatcher(api_client, NAMESPACE, echo=lines.append).run(
        _trainjob("sslops-pretrain-flaky"), timeout_seconds=30
    )
    assert final["status"]["conditions"][0]["type"] == "Complete"
    assert api_server.deleted == []
    assert (api_server.unavailable, api_server.drop_watches) == (0, 0)
    retried = [line for line in lines if "retrying" in line]
    assert len(retried) == 5, lines
    assert retried[0] == (
        "TrainJob sslops-pretrain-flaky: API server: 503 Service Unavailable; retrying in 0.05 s"
    )
    assert any("ProtocolError" in line for line in retried), retried


def test_an_api_server_outage_longer_than_the_limit_fails_the_task(
    api_server: FakeApiServer, api_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sslops.k8s import launcher

    monkeypatch.setattr(launcher, "RETRY_SECONDS", 0.05)
    monkeypatch.setattr(launcher, "API_OUTAGE_SECONDS", 0.5)
    api_server.unavailable = 10**6
    watcher = JobWatcher(api_client, NAMESPACE, echo=lambda line: None)
    expected = r"API server was unreachable for .* s \(503 Service Unavailable\)$"
    with pytest.raises(TrainingJobFailed, match=expected):
        watcher.run(_trainjob("sslops-pretrain-cut-off"), timeout_seconds=30)
    assert api_server.deleted == ["sslops-pretrain-cut-off"]  # its GPUs are freed


def test_a_job_deleted_by_someone_else_fails_the_task(
    api_server: FakeApiServer, api_client
) -> None:
    def delete_soon(job: dict[str, Any]) -> None:
        def remove() -> None:
            with api_server.changed:
                api_server.objects.pop(job["metadata"]["name"])
                api_server.changed.notify_all()

        threading.Timer(0.5, remove).start()

    api_server.on_create = delete_soon
    watcher = JobWatcher(api_client, NAMESPACE, echo=lambda line: None)
    with pytest.raises(TrainingJobFailed, match="sslops-pretrain-gone was deleted"):
        watcher.run(_trainjob("sslops-pretrain-gone"), timeout_seconds=20)


def test_local_launcher_config_is_refused_with_a_hint(small_config, capsys) -> None:
    nothing = SimpleNamespace(path="/nonexistent", metadata={})
    with pytest.raises(SystemExit):
        launch_pretrain_task(small_config.to_json(), "i", "i-cuda", nothing, nothing)
    assert "says pretrain.launcher: local" in capsys.readouterr().err


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
def test_the_pipelines_pod_labels_reach_the_training_pods_whatever_the_config_says(
    api_server: FakeApiServer, api_client, small_config, prepared_dir, tmp_path: Path,
    launcher: str,
) -> None:  # fmt: skip
    """Found by the tenant2 review: the training pods took their labels from the run's
    config_json alone, so a config pasted into the run form that names another release
    (the default names sslops) took them out of their release's NetworkPolicies. The
    launcher's pod_labels (the chart's release label) go over the config's."""
    cfg = _job_config(small_config, tmp_path / "workspace", launcher=launcher)
    assert cfg.platform.pod_labels["app.kubernetes.io/instance"] == "sslops"
    created: list[dict[str, Any]] = []

    def fails_at_once(job: dict[str, Any]) -> None:
        created.append(job)
        name = job["metadata"]["name"]
        reason = "JobSetFailed" if launcher == "trainjob" else "PyTorchJobFailed"
        threading.Timer(0.2, api_server.set_conditions, (name, ("Failed", reason, "x"))).start()

    api_server.on_create = fails_at_once
    prepared = SimpleNamespace(path=str(prepared_dir))
    pretrained = SimpleNamespace(path=str(tmp_path / "pretrained"), metadata={})
    with pytest.raises(SystemExit):
        launch_pretrain_task(
            cfg.to_json(), "i", "i-cuda", prepared, pretrained, api_client=api_client,
            namespace=NAMESPACE, pod_labels={"app.kubernetes.io/instance": "fraud"},
        )  # fmt: skip
    [job] = created
    if launcher == "trainjob":
        runtime = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
        pods = [runtime["replicatedJobs"][0]["template"]["spec"]["template"]]
    else:
        pods = [r["template"] for r in job["spec"]["pytorchReplicaSpecs"].values()]
    assert pods and all(pod["metadata"]["labels"] == {
        "app.kubernetes.io/part-of": "sslops",
        "app.kubernetes.io/instance": "fraud",
        "app.kubernetes.io/name": "sslops",
        "app.kubernetes.io/component": "pretrain",
    } for pod in pods)  # fmt: skip


KILL_RANK = Path(__file__).parent / "reliability" / "kill_rank.py"


def _trainer(api_server: FakeApiServer, ran: list[dict[str, Any]], **env: str) -> Callable:
    """An ``on_create`` hook playing the Trainer controller: it runs the TrainJob's command
    (with ``env``; kill_rank.py instead of ``-m sslops.pretrain`` when it asks for a kill)."""

    def controller(job: dict[str, Any]) -> None:
        def run() -> None:
            name, trainer = job["metadata"]["name"], job["spec"]["trainer"]
            args = list(trainer["args"])
            if "SSLOPS_TEST_KILL_AT" in env:
                at = args.index("-m")
                args[at : at + 2] = [str(KILL_RANK)]
            pet = {
                "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                "PET_NNODES": "1", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0",
                "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(_free_port()),
            }  # fmt: skip
            done = subprocess.run(
                trainer["command"] + args, env={**os.environ, **pet, **env},
                capture_output=True, text=True,
            )  # fmt: skip
            ran.append({"name": name, "returncode": done.returncode, "stderr": done.stderr})
            outcome = ("Complete", "JobSetCompleted", "") if done.returncode == 0 else (
                "Failed", "JobSetFailed", "trainer failed")  # fmt: skip
            api_server.set_conditions(name, outcome)

        threading.Thread(target=run, daemon=True).start()

    return controller


def test_a_retried_task_resumes_its_job_from_the_checkpoint_the_failed_attempt_left(
    api_server: FakeApiServer, api_client, small_config, prepared_dir, tmp_path: Path, capsys
) -> None:
    """Before: every attempt of launch_pretrain created a job of a random name in a new
    folder and removed the folder when the job failed, so a retry started at step 0."""
    workspace = tmp_path / "workspace"
    cfg = _job_config(small_config, workspace, checkpoint_every=2, threads=1)
    cfg.platform.max_restarts = 0  # no restart inside the job: the attempt fails
    ran: list[dict[str, Any]] = []
    prepared = SimpleNamespace(path=str(prepared_dir))
    pretrained = SimpleNamespace(path=str(tmp_path / "pretrained"), metadata={})
    ids = {"run_id": "0b6f7a52-run", "task_name": "launch-pretrain"}
    api_server.on_create = _trainer(
        api_server, ran, SSLOPS_TEST_KILL_RANK="0", SSLOPS_TEST_KILL_AT="5",
        SSLOPS_TEST_KILLS="1", SSLOPS_TEST_KILL_LOG=str(tmp_path / "kills.log"),
    )  # fmt: skip
    with pytest.raises(SystemExit):  # a node lost at step 5: SIGKILL, no SIGTERM checkpoint
        launch_pretrain_task(cfg.to_json(), "i", "i-cuda", prepared, pretrained, **ids,
                             api_client=api_client, namespace=NAMESPACE)  # fmt: skip
    assert ran[0]["returncode"] != 0
    (name,) = api_server.objects
    checkpoints = workspace / "sslops" / name / "pretrained.checkpoints"
    assert (checkpoints / "step-00000004").is_dir()
    assert f"kept {workspace / 'sslops' / name} with its checkpoints" in capsys.readouterr().err

    api_server.on_create = _trainer(api_server, ran)  # the retry: the same run and task
    launch_pretrain_task(cfg.to_json(), "i", "i-cuda", prepared, pretrained, **ids,
                         api_client=api_client, namespace=NAMESPACE)  # fmt: skip
    assert ran[1] == {**ran[1], "name": name, "returncode": 0}, ran[1]["stderr"][-2000:]
    printed = capsys.readouterr().out
    assert f"TrainJob {NAMESPACE}/{name} exists, failed in an earlier attempt" in printed
    assert f"resuming from {checkpoints / 'step-00000004'} (step 4)" in printed
    assert pretrained.metadata["resumed_from_step"] == 4
    assert (
        json.loads((Path(pretrained.path) / "summary.json").read_text())["resumed_from_step"] == 4
    )
    assert api_server.deleted == [name]  # the failed job, replaced
    assert not (workspace / "sslops" / name).exists()  # removed once the task succeeded


def test_a_checkpoint_of_other_settings_is_not_resumed_and_the_log_says_why(
    small_config, prepared_dir, tmp_path: Path
) -> None:
    from sslops.errors import SslopsError
    from sslops.k8s.run_folder import resume_or_start_fresh
    from sslops.pretrain import run_pretrain

    cfg = small_config.model_copy(
        update={"pretrain": small_config.pretrain.model_copy(update={"checkpoint_every": 2})}
    )
    out = tmp_path / "run" / "pretrained"
    run_pretrain(cfg, prepared_dir, out, stop_after=3)
    checkpoints = tmp_path / "run" / "pretrained.checkpoints"
    lines: list[str] = []
    resume_or_start_fresh(cfg, checkpoints, prepared_dir, lines.append)
    assert lines == [f"resuming from {checkpoints / 'step-00000002'} (step 2), left by an "
                     "earlier attempt"]  # fmt: skip
    changed = cfg.model_copy(
        update={"pretrain": cfg.pretrain.model_copy(update={"learning_rate": 0.01})}
    )
    named = changed.model_copy(
        update={
            "pretrain": changed.pretrain.model_copy(update={"checkpoint_dir": str(checkpoints)})
        }
    )
    with pytest.raises(SslopsError, match=r"was written with other pretrain settings .*; remove"):
        resume_or_start_fresh(named, checkpoints, prepared_dir, lines.append)  # its own: kept
    assert checkpoints.is_dir()
    resume_or_start_fresh(changed, checkpoints, prepared_dir, lines.append)
    assert lines[-1].startswith(f"starting fresh at step 0: {checkpoints / 'step-00000002'} was "
                                "written with other pretrain settings (config fingerprint ")  # fmt: skip
    assert lines[-1].endswith(f"; removed {checkpoints}") and not checkpoints.exists()


@pytest.fixture(scope="module")
def other_prepared_dir(small_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepare artifact of the same settings on other rows (two thirds of the training
    file): a checkpoint of one must not be resumed on the other."""
    import pandas as pd

    from sslops.prepare import prepare

    root = tmp_path_factory.mktemp("launcher-other")
    rows = pd.read_csv(small_config.data.train, dtype=str, keep_default_na=False)
    rows.iloc[: len(rows) * 2 // 3].to_csv(root / "train.csv", index=False)
    data = small_config.data.model_copy(update={"train": str(root / "train.csv")})
    return prepare(small_config.model_copy(update={"data": data}), root / "prepare")


def test_a_checkpoint_of_other_training_data_is_not_resumed_and_the_log_says_why(
    small_config, prepared_dir, other_prepared_dir, tmp_path: Path
) -> None:
    """Before: the launcher compared the config fingerprint only, said "resuming from" a
    checkpoint of other rows, and the pod then refused it (found by the leftover3 review)."""
    from sslops.k8s.run_folder import resume_or_start_fresh
    from sslops.pretrain import run_pretrain

    cfg = small_config.model_copy(
        update={"pretrain": small_config.pretrain.model_copy(update={"checkpoint_every": 2})}
    )
    run_pretrain(cfg, other_prepared_dir, tmp_path / "run" / "pretrained", stop_after=3)
    checkpoints = tmp_path / "run" / "pretrained.checkpoints"
    lines: list[str] = []
    resume_or_start_fresh(cfg, checkpoints, other_prepared_dir, lines.append)
    assert lines[-1].startswith(f"resuming from {checkpoints / 'step-00000002'}")
    resume_or_start_fresh(cfg, checkpoints, prepared_dir, lines.append)
    assert lines[-1].startswith(
        f"starting fresh at step 0: {checkpoints / 'step-00000002'} was trained on other "
        "training data (sha256 "
    ), lines
    assert "the checkpoint is for other data" in lines[-1] and not checkpoints.exists()


def test_a_named_checkpoint_dir_of_other_data_is_refused_before_staging_or_submitting(
    api_server: FakeApiServer, api_client, small_config, prepared_dir, other_prepared_dir,
    tmp_path: Path, capsys,
) -> None:  # fmt: skip
    from sslops.pretrain import run_pretrain

    shared = tmp_path / "workspace" / "shared.checkpoints"
    cfg = _job_config(small_config, tmp_path / "workspace", checkpoint_every=2,
                      checkpoint_dir=str(shared))  # fmt: skip
    run_pretrain(cfg, other_prepared_dir, tmp_path / "other" / "pretrained", stop_after=3)
    staged: list[bool] = []

    def fails_at_once(job: dict[str, Any]) -> None:  # the pod would refuse the checkpoint
        name = job["metadata"]["name"]
        staged.append((tmp_path / "workspace" / "sslops" / name / "prepared").is_dir())
        threading.Timer(
            0.2, api_server.set_conditions, (name, ("Failed", "JobSetFailed", "refused"))
        ).start()

    api_server.on_create = fails_at_once
    prepared = SimpleNamespace(path=str(prepared_dir))
    pretrained = SimpleNamespace(path=str(tmp_path / "pretrained"), metadata={})
    with pytest.raises(SystemExit):
        launch_pretrain_task(cfg.to_json(), "i", "i-cuda", prepared, pretrained,
                             api_client=api_client, namespace=NAMESPACE)  # fmt: skip
    printed = capsys.readouterr()
    assert "resuming from" not in printed.out
    assert f"error: pretrain.checkpoint_dir {shared}: {shared / 'step-00000002'} was trained " \
           "on other training data (sha256 " in printed.err  # fmt: skip
    assert "the checkpoint is for other data; remove that folder or set another " \
           "pretrain.checkpoint_dir" in printed.err  # fmt: skip
    assert api_server.objects == {} and staged == []  # nothing submitted
    assert (shared / "step-00000002").is_dir()  # the config's own folder is kept


def test_the_job_is_named_after_the_kfp_run_and_task() -> None:
    from sslops.k8s.run_folder import job_name
    from sslops.k8s.validation import check_dns_label

    first = job_name("0b6f7a52-run", "launch-pretrain")
    assert first is not None and check_dns_label(first, "name") == first
    assert job_name("0b6f7a52-run", "launch-pretrain") == first  # a retry: the same job
    assert job_name("another-run", "launch-pretrain") != first
    assert job_name("", "launch-pretrain") is None
    assert job_name("{{$.pipeline_job_uuid}}", "launch-pretrain") is None  # not filled in


def test_a_job_an_earlier_attempt_left_running_is_followed_not_replaced(
    api_server: FakeApiServer, api_client
) -> None:
    job = _trainjob("sslops-pretrain-left")
    api_server.objects[job["metadata"]["name"]] = {**job, "metadata": {**job["metadata"],
                                                                       "resourceVersion": "1"}}  # fmt: skip
    threading.Timer(
        0.5, api_server.set_conditions, (job["metadata"]["name"], ("Complete", "", ""))
    ).start()
    lines: list[str] = []
    final = JobWatcher(api_client, NAMESPACE, echo=lines.append).run(job, timeout_seconds=20)
    assert final["status"]["conditions"][0]["type"] == "Complete"
    assert lines[0] == (f"TrainJob {NAMESPACE}/sslops-pretrain-left exists, left running by an "
                        "earlier attempt of this task: following it")  # fmt: skip
    assert api_server.deleted == []


@pytest.mark.parametrize("resume", [True, False], ids=["resume", "no-resume"])
def test_a_retry_re_attaches_to_the_running_job_without_restaging_its_folder(
    api_server: FakeApiServer, api_client, small_config, prepared_dir, tmp_path: Path, capsys,
    resume: bool,
) -> None:  # fmt: skip
    """The retry after a drained launcher: its job still runs in the run folder. Before, the
    retry staged the folder first, logging "resuming from ... (step 2)" (untrue: nothing
    resumed, the running job was followed), and with pretrain.resume false it removed the
    running job's checkpoints from under it; only then did it find the job."""
    from sslops.pretrain import run_pretrain

    workspace = tmp_path / "workspace"
    cfg = _job_config(small_config, workspace, checkpoint_every=2, threads=1, resume=resume)
    ids = {"run_id": "run-8", "task_name": "launch-pretrain"}
    name = job_name(ids["run_id"], ids["task_name"])
    assert name is not None
    run_dir = workspace / "sslops" / name
    checkpoints = run_dir / "pretrained.checkpoints"
    run_pretrain(cfg, prepared_dir, run_dir / "pretrained", stop_after=3)  # the job, so far
    (run_dir / "config.json").write_text(cfg.to_json())
    api_server.objects[name] = {**_trainjob(name), "metadata": {
        "name": name, "namespace": NAMESPACE, "resourceVersion": "1"}}  # fmt: skip
    seen: list[list[str]] = []

    def job_finishes(watched: str) -> None:  # once followed, the job runs on to its end
        def finish() -> None:
            seen.append(sorted(p.name for p in checkpoints.glob("step-*")))
            run_pretrain(cfg, prepared_dir, run_dir / "pretrained")
            api_server.set_conditions(watched, ("Complete", "JobSetCompleted", ""))

        if not seen:
            seen.append([])
            threading.Thread(target=finish, daemon=True).start()

    api_server.on_watch = job_finishes
    api_server.on_create = lambda job: pytest.fail("the retry created a job")
    pretrained = SimpleNamespace(path=str(tmp_path / "pretrained"), metadata={})
    launch_pretrain_task(cfg.to_json(), "i", "i-cuda", SimpleNamespace(path=str(prepared_dir)),
                         pretrained, **ids, api_client=api_client, namespace=NAMESPACE)  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (f"re-attaching to TrainJob {NAMESPACE}/{name}, left running by an "
                          "earlier attempt of this task; its run folder is left as it is")  # fmt: skip
    assert not [line for line in printed if "resuming from" in line or "step 0" in line]
    assert seen[1] == ["step-00000002"]  # the running job's checkpoint, still there
    assert pretrained.metadata["resumed_from_step"] == (2 if resume else None)
    assert api_server.deleted == [] and not run_dir.exists()  # collected, then removed


def test_the_restart_budget_lets_the_job_survive_a_killed_rank(
    api_server: FakeApiServer, api_client, small_config, prepared_dir, tmp_path: Path, capsys
) -> None:
    """platform.max_restarts reaches torchrun: the rank SIGKILLed at step 5 is restarted in
    place, resumes from step 4, and the task succeeds on its first attempt."""
    workspace = tmp_path / "workspace"
    cfg = _job_config(small_config, workspace, checkpoint_every=2, threads=1)
    cfg.platform.max_restarts = 1
    kills = tmp_path / "kills.log"
    ran: list[dict[str, Any]] = []
    api_server.on_create = _trainer(
        api_server, ran, SSLOPS_TEST_KILL_RANK="0", SSLOPS_TEST_KILL_AT="5",
        SSLOPS_TEST_KILLS="1", SSLOPS_TEST_KILL_LOG=str(kills),
    )  # fmt: skip
    pretrained = SimpleNamespace(path=str(tmp_path / "pretrained"), metadata={})
    launch_pretrain_task(
        cfg.to_json(), "i", "i-cuda", SimpleNamespace(path=str(prepared_dir)), pretrained,
        run_id="run-2", task_name="launch-pretrain", api_client=api_client, namespace=NAMESPACE,
    )  # fmt: skip
    assert [r["returncode"] for r in ran] == [0], ran[-1]["stderr"][-2000:]
    assert kills.read_text().splitlines() == ["rank 0 attempt 0", "rank 0 attempt 1"]
    assert pretrained.metadata["resumed_from_step"] == 4


def test_a_job_whose_ranks_stop_stepping_is_reported_as_stalled(
    api_server: FakeApiServer, api_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung rank (or a collective that never returns) left the job Running, silently, until
    its deadline. The ranks' heartbeat files on the workspace volume show the steps."""
    from sslops.k8s import launcher
    from sslops.k8s.run_folder import ProgressWatch
    from tests.test_resume import SteppingClock

    monkeypatch.setattr(launcher, "WATCH_SECONDS", 1)
    for rank, step in ((0, 7), (1, 6)):
        record = {"rank": rank, "step": step, "total": 30}
        (tmp_path / f"heartbeat-rank-{rank:05d}.json").write_text(json.dumps(record))
    name = "sslops-pretrain-hung"
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if "no progress" in line:  # reported: the job may end (the test then stops)
            api_server.set_conditions(name, ("Complete", "", ""))

    progress = ProgressWatch(tmp_path, 300, echo, clock=SteppingClock(200.0))
    JobWatcher(api_client, NAMESPACE, echo=lambda line: None).run(
        _trainjob(name), timeout_seconds=60, progress=progress
    )
    assert lines == [f"TrainJob {name}: no progress for 400 s (last heartbeats: rank 0 at step 7, "
                     "rank 1 at step 6)"]  # fmt: skip


def test_steps_that_move_are_not_a_stall(tmp_path: Path) -> None:
    from sslops.k8s.run_folder import ProgressWatch
    from tests.test_resume import SteppingClock

    lines: list[str] = []
    progress = ProgressWatch(tmp_path, 300, lines.append, clock=SteppingClock(200.0))
    progress.check("TrainJob x")  # no heartbeat file yet: the pods are starting
    for step in range(1, 6):
        (tmp_path / "heartbeat-rank-00000.json").write_text(json.dumps({"rank": 0, "step": step}))
        progress.check("TrainJob x")
    assert lines == []
    progress.check("TrainJob x")
    progress.check("TrainJob x")
    assert lines == ["TrainJob x: no progress for 400 s (last heartbeats: rank 0 at step 5)"]


LAUNCHER_POD = "ssl-pipeline-x7k2q-system-container-impl-1748390411"
WORKFLOW_REF = {
    "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "ssl-pipeline-x7k2q",
    "uid": "5f0c8e4e-0c1b-4d7e-9f0e-1a2b3c4d5e6f", "controller": True, "blockOwnerDeletion": True,
}  # fmt: skip


def _launcher_pod(*conditions: tuple[str, str, str], deleted: bool = False) -> dict[str, Any]:
    """The launcher's own pod as Argo creates it (owned by the run's Workflow), with
    ``(type, status, reason)`` conditions and a deletionTimestamp when ``deleted``."""
    metadata: dict[str, Any] = {
        "name": LAUNCHER_POD, "namespace": NAMESPACE, "ownerReferences": [WORKFLOW_REF],
    }  # fmt: skip
    if deleted:
        metadata["deletionTimestamp"] = "2026-12-02T02:30:00Z"
    status = [{"type": t, "status": s, "reason": r} for t, s, r in conditions]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "status": {"phase": "Running", "conditions": status}}  # fmt: skip


def _sigterm_once_created(api_server: FakeApiServer) -> None:
    """SIGTERM to this process (as the kubelet or Argo sends it) soon after the job is
    created, when the launcher's handler is in place."""
    import signal

    def created(job: dict[str, Any]) -> None:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()

    api_server.on_create = created


def _stopped_launch(
    api_server: FakeApiServer, api_client, cfg: Any, prepared_dir: Path, tmp_path: Path
) -> tuple[int | str | None, str]:
    """launch_pretrain_task of a job that never ends, SIGTERMed once created: its exit
    status and the job's name."""
    from sslops.k8s.launcher import Stopped

    pretrained = SimpleNamespace(path=str(tmp_path / "pretrained"), metadata={})
    _sigterm_once_created(api_server)
    with pytest.raises(Stopped) as stopped:
        launch_pretrain_task(
            cfg.to_json(), "i", "i-cuda", SimpleNamespace(path=str(prepared_dir)), pretrained,
            run_id="run-7", task_name="launch-pretrain", api_client=api_client,
            namespace=NAMESPACE, pod_name=LAUNCHER_POD,
        )  # fmt: skip
    (name,) = api_server.objects or api_server.deleted
    return stopped.value.code, name


def test_a_drained_launcher_pod_leaves_its_job_running_for_the_retry(
    api_server: FakeApiServer, api_client, small_config, prepared_dir, tmp_path: Path, capsys
) -> None:
    """Before: any SIGTERM deleted the job, so a node drain or spot reclaim of the launcher's
    node killed hours of multi-node training that the retry could have followed. Kubernetes
    marks a pod it evicts with DisruptionTarget before the SIGTERM; a stopped KFP run never
    does (Argo signals the containers, the pod is not even deleted)."""
    workspace = tmp_path / "workspace"
    cfg = _job_config(small_config, workspace)
    api_server.own_pods[LAUNCHER_POD] = _launcher_pod(
        ("Ready", "True", ""), ("DisruptionTarget", "True", "EvictionByEvictionAPI"), deleted=True
    )
    code, name = _stopped_launch(api_server, api_client, cfg, prepared_dir, tmp_path)
    assert code == 143 and api_server.deleted == [] and name in api_server.objects
    run_dir = workspace / "sslops" / name
    assert (run_dir / "config.json").is_file() and (
        run_dir / "prepared"
    ).is_dir()  # no checkpoint yet
    out, err = capsys.readouterr()
    assert (f"this pod is being stopped by a disruption (EvictionByEvictionAPI): leaving TrainJob "
            f"{NAMESPACE}/{name} running; a retry of this task follows it") in out  # fmt: skip
    assert f"kept {run_dir}: the job left running works in it" in err
    # deleting the run (its Workflow) deletes the job no launcher follows any more
    owner = {k: v for k, v in WORKFLOW_REF.items() if k not in ("controller", "blockOwnerDeletion")}
    assert api_server.objects[name]["metadata"]["ownerReferences"] == [owner]


def test_a_stopped_run_still_deletes_its_job(
    api_server: FakeApiServer, api_client, small_config, prepared_dir, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """KFP stops a run by setting its Workflow's activeDeadlineSeconds to 0; Argo then
    SIGTERMs the containers of the pod, which is neither deleted nor marked: the job goes,
    and its GPUs with it. The pod is read again meanwhile (a kubelet's mark may trail its
    SIGTERM); a stale mark the control plane cleared (status False) is no disruption."""
    from sslops.k8s import launcher

    monkeypatch.setattr(launcher, "DISRUPTION_WAIT_SECONDS", 1.5)
    workspace = tmp_path / "workspace"
    api_server.own_pods[LAUNCHER_POD] = _launcher_pod(
        ("Ready", "True", ""), ("DisruptionTarget", "False", "PreemptionByScheduler")
    )
    code, name = _stopped_launch(
        api_server, api_client, _job_config(small_config, workspace), prepared_dir, tmp_path
    )
    assert code == 143 and api_server.deleted == [name] and not api_server.objects
    assert api_server.pod_reads >= 3  # the owner read, then the SIGTERM's first and later reads
    assert not (workspace / "sslops" / name).exists()  # no checkpoint: nothing to keep


@pytest.mark.parametrize(
    ("pod", "deleted"),
    [
        # kubectl delete pod by hand: deleted, never marked: no waiting for a mark
        (_launcher_pod(deleted=True), True),
        # the pod cannot be read (no RBAC, API server down): the job goes (the cost of a
        # wrong guess is the steps since the last checkpoint, not GPU hours)
        (None, True),
        # graceful node shutdown: the kubelet's mark arrives after its SIGTERM
        ("late", False),
    ],
    ids=["deleted-by-hand", "unreadable", "kubelet-mark-late"],
)
def test_what_the_launcher_does_with_the_job_on_sigterm(
    api_server: FakeApiServer, api_client, pod: Any, deleted: bool
) -> None:
    from sslops.k8s import launcher

    name = "sslops-pretrain-sigterm"
    if pod == "late":
        api_server.own_pods[LAUNCHER_POD] = _launcher_pod(("Ready", "True", ""))

        def mark(pod_name: str) -> None:  # the SIGTERM's second read sees the kubelet's mark
            if api_server.pod_reads == 3:
                api_server.own_pods[pod_name] = _launcher_pod(
                    ("DisruptionTarget", "True", "TerminationByKubelet")
                )

        api_server.on_pod_read = mark
    elif pod is not None:
        api_server.own_pods[LAUNCHER_POD] = pod
    lines: list[str] = []
    watcher = JobWatcher(api_client, NAMESPACE, echo=lines.append, pod_name=LAUNCHER_POD)
    _sigterm_once_created(api_server)
    with pytest.raises(launcher.Stopped) as stopped, launcher._sigterm_as_exit():
        watcher.run(_trainjob(name), timeout_seconds=30, retryable=True)
    assert api_server.deleted == ([name] if deleted else [])
    assert stopped.value.left_running is not deleted
    if pod is None:
        assert any(line.startswith("could not read this pod") for line in lines), lines
    if pod == "late":
        assert "(TerminationByKubelet)" in lines[-1] and api_server.pod_reads == 3


def test_a_job_no_retry_can_find_is_deleted_even_when_the_pod_is_drained(
    api_server: FakeApiServer, api_client
) -> None:
    """Without a KFP run id the job's name is random: left running, nothing would follow it."""
    from sslops.k8s import launcher

    api_server.own_pods[LAUNCHER_POD] = _launcher_pod(
        ("DisruptionTarget", "True", "PreemptionByScheduler"), deleted=True
    )
    watcher = JobWatcher(api_client, NAMESPACE, echo=lambda line: None, pod_name=LAUNCHER_POD)
    _sigterm_once_created(api_server)
    with pytest.raises(launcher.Stopped), launcher._sigterm_as_exit():
        watcher.run(_trainjob("sslops-pretrain-random"), timeout_seconds=30)
    assert api_server.deleted == ["sslops-pretrain-random"]
