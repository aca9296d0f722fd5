"""`sslops submit` through the real kfp.Client against a stand-in KFP API (v2beta1 REST):
the first submission creates the pipeline, later ones add versions, each starts a run."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from sslops import __version__ as VERSION
from sslops.cli import main
from sslops.config import load_config
from sslops.k8s.submit import submit
from tests.conftest import ROOT


class FakeKfp:
    """The endpoints kfp.Client uses to upload, version, find an experiment and start a run."""

    def __init__(self) -> None:
        self.pipelines: dict[str, str] = {}  # display name -> id
        self.versions: dict[str, list[str]] = {}  # pipeline id -> version ids
        self.uploads: list[tuple[str, dict[str, str], bytes]] = []
        self.runs: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        kfp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path.endswith("/healthz"):
                    return self._send({"multi_user": False})
                if url.path == "/apis/v2beta1/pipelines":
                    wanted = json.loads(query["filter"])["predicates"][0]["stringValue"]
                    found = [
                        {"pipeline_id": pid, "display_name": name}
                        for name, pid in kfp.pipelines.items()
                        if name == wanted
                    ]
                    return self._send({"pipelines": found} if found else {})
                if url.path.endswith("/versions"):
                    pipeline_id = url.path.split("/")[-2]
                    newest_first = reversed(kfp.versions[pipeline_id])
                    return self._send(
                        {"pipeline_versions": [{"pipeline_version_id": v} for v in newest_first]}
                    )
                if url.path == "/apis/v2beta1/experiments":
                    return self._send({})  # no experiment yet: the client creates one
                raise AssertionError(f"unexpected GET {self.path}")

            def do_POST(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if url.path == "/apis/v2beta1/pipelines/upload":
                    pipeline_id = f"p{len(kfp.pipelines) + 1}"
                    kfp.pipelines[query["name"]] = pipeline_id
                    kfp.versions[pipeline_id] = [f"{pipeline_id}-v1"]
                    kfp.uploads.append(("pipeline", query, body))
                    return self._send({"pipeline_id": pipeline_id, "display_name": query["name"]})
                if url.path == "/apis/v2beta1/pipelines/upload_version":
                    versions = kfp.versions[query["pipelineid"]]
                    versions.append(f"{query['pipelineid']}-v{len(versions) + 1}")
                    kfp.uploads.append(("version", query, body))
                    return self._send(
                        {"pipeline_id": query["pipelineid"], "pipeline_version_id": versions[-1]}
                    )
                if url.path == "/apis/v2beta1/experiments":
                    return self._send({"experiment_id": "e1", **json.loads(body)})
                if url.path == "/apis/v2beta1/runs":
                    kfp.runs.append(json.loads(body))
                    return self._send({"run_id": f"r{len(kfp.runs)}"})
                raise AssertionError(f"unexpected POST {self.path}")

        return Handler


@pytest.fixture
def kfp_api():
    server = FakeKfp()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _uploaded_spec(body: bytes) -> dict[str, Any]:
    start = body.index(b"# PIPELINE DEFINITION")
    end = body.index(b"\r\n--", start)
    return next(yaml.safe_load_all(body[start:end].decode()))


def test_first_submit_creates_the_pipeline_later_ones_add_versions(kfp_api: FakeKfp) -> None:
    cfg = load_config(ROOT / "configs" / "adult.yaml", ["pretrain.gpus_per_node=2"])
    first = submit(cfg, kfp_api.host, "fairness-study")
    second = submit(cfg, kfp_api.host, "fairness-study", run_name="again")
    assert kfp_api.pipelines == {"sslops-ssl-pipeline": "p1"}
    assert [kind for kind, _, _ in kfp_api.uploads] == ["pipeline", "version"]
    assert (first.version_id, second.version_id) == ("p1-v1", "p1-v2")
    assert second.version_name.startswith(f"sslops-ssl-pipeline-{VERSION}-")
    spec = _uploaded_spec(kfp_api.uploads[1][2])
    accelerator = spec["deploymentSpec"]["executors"]["exec-pretrain"]["container"]["resources"]
    assert accelerator["accelerator"]["resourceCount"] == "2"  # the config's GPUs, compiled in
    run = kfp_api.runs[1]
    assert run["display_name"] == "again"
    assert run["pipeline_version_reference"] == {
        "pipeline_id": "p1",
        "pipeline_version_id": "p1-v2",
    }
    assert json.loads(run["runtime_config"]["parameters"]["config_json"]) == json.loads(
        cfg.to_json()
    )
    assert second.url == f"{kfp_api.host}/#/runs/details/r2"


def test_multinode_config_goes_to_its_own_pipeline(kfp_api: FakeKfp) -> None:
    cfg = load_config(
        ROOT / "configs" / "adult.yaml",
        ["pretrain.launcher=pytorchjob", "pretrain.nodes=4", "platform.storage.workspace_pvc=ws"],
    )
    done = submit(cfg, kfp_api.host)
    assert kfp_api.pipelines == {"sslops-ssl-pipeline-multinode": "p1"}
    spec = _uploaded_spec(kfp_api.uploads[0][2])
    assert "exec-launch-pretrain" in spec["deploymentSpec"]["executors"]
    assert done.run_id == "r1"


def test_cli_submit_prints_the_run_and_names_an_unreachable_host(kfp_api: FakeKfp, capsys) -> None:
    config = str(ROOT / "configs" / "adult.yaml")
    assert main(["submit", "--config", config, "--host", kfp_api.host, "--experiment", "x"]) == 0
    assert f"run r1: {kfp_api.host}/#/runs/details/r1" in capsys.readouterr().out
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    assert main(["submit", "--config", config, "--host", closed]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach KFP at {closed}")
    # what a newcomer forgot: the port-forward that serves KFP's API on a laptop (newcomer review)
    assert err.endswith(
        "; is KFP's API served there? From a laptop: kubectl -n kubeflow port-forward "
        "svc/ml-pipeline-ui 8080:80, then --host http://localhost:8080 (docs/deploy.md, step 9)\n"
    )


def test_submit_needs_a_host(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["submit", "--config", str(Path(ROOT / "configs" / "adult.yaml"))])
    assert "--host" in capsys.readouterr().err


def test_cli_compile_takes_the_config_as_config_json_default(tmp_path: Path, capsys) -> None:
    """`sslops compile --config`: what the KFP UI shows as the run's default and where the
    tasks go; without a config the parameter is required. Nothing lands in the repository."""
    config = str(ROOT / "configs" / "adult.yaml")
    out = tmp_path / "mine.yaml"
    assert main(["compile", "--config", config, "--set", "pretrain.gpus_per_node=1",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr()
    assert printed.out == f"compiled {out}\n"  # the result; what to do with it on stderr
    assert printed.err == (
        "next: upload it in the KFP UI (Pipelines > Upload pipeline) and create a run from it; "
        "or compile, upload and start a run in one step with sslops submit "
        "(docs/deploy.md, step 9)\n"
    )
    spec = next(yaml.safe_load_all(out.read_text()))
    parameter = spec["root"]["inputDefinitions"]["parameters"]["config_json"]
    default = json.loads(parameter["defaultValue"])
    assert default == load_config(config, ["pretrain.gpus_per_node=1"]).model_dump(mode="json")
    assert "nvidia.com/gpu" in out.read_text()
    assert main(["compile", "--out", str(tmp_path / "bare.yaml")]) == 0
    bare = next(yaml.safe_load_all((tmp_path / "bare.yaml").read_text()))
    assert "defaultValue" not in bare["root"]["inputDefinitions"]["parameters"]["config_json"]
    assert main(["compile", "--config", config, "--set", "seed=-1", "--out", str(out)]) == 2


def test_render_outside_the_repository_says_where_to_run(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["render", "--target", "helm"]) == 2
    assert "or pass --chart DIR" in capsys.readouterr().err
    assert main(["render", "--target", "kustomize", "--overlay", "aws"]) == 2
    assert "run from the sslops repository root or pass a directory" in capsys.readouterr().err
    monkeypatch.chdir(ROOT)
    assert main(["render", "--target", "kustomize", "--overlay", "eu"]) == 2
    assert "--overlay takes aws, azure, gcp, onprem or a directory" in capsys.readouterr().err


SCHEDULE = ["schedule-shadow", "--cron", "0 0 6 * * *", "--candidate", "/w/m.onnx",
            "--incumbent", "/w/i.onnx", "--data", "/w/b"]  # fmt: skip


@pytest.mark.parametrize("command", [["submit"], SCHEDULE])
@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("127.0.0.1:9", "--host '127.0.0.1:9': expected an http:// or https:// URL"),
        ("ftp://x", "--host 'ftp://x': expected an http:// or https:// URL"),
        ("http://", "--host 'http://': expected an http:// or https:// URL"),
        ("", "--host is empty; expected the KFP API URL"),
    ],
)
def test_a_host_that_is_not_an_http_url_is_refused_before_kfp_is_asked(
    command: list[str], host: str, message: str, monkeypatch, capsys
) -> None:
    """kfp.Client would warn and prefix https:// (or, for '', read the kube config and print
    to stdout): the host is refused before a client is made, in one line."""
    import kfp

    def no_client(**kwargs: Any) -> None:
        raise AssertionError("kfp.Client was created for a bad host")

    monkeypatch.setattr(kfp, "Client", no_client)
    config = str(ROOT / "configs" / "adult.yaml")
    assert main([*command, "--config", config, "--host", host]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {message}, e.g. http://localhost:8080\n")


@pytest.mark.parametrize("command", [["submit"], SCHEDULE])
@pytest.mark.parametrize("namespace", ["Team A", "team_a", "-team", "x" * 64])
def test_a_namespace_that_is_no_dns_label_is_refused_before_kfp_is_asked(
    command: list[str], namespace: str, monkeypatch, capsys
) -> None:
    """KFP would send it on and answer with an API error after the upload; refused first."""
    import kfp

    def no_client(**kwargs: Any) -> None:
        raise AssertionError("kfp.Client was created for a bad namespace")

    monkeypatch.setattr(kfp, "Client", no_client)
    config = str(ROOT / "configs" / "adult.yaml")
    argv = [*command, "--config", config, "--host", "http://localhost:8080"]
    assert main([*argv, f"--namespace={namespace}"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error: --namespace {namespace!r}: expected a DNS-1123 label (lowercase letters, "
        "digits and '-', at most 63 characters)\n"
    )


def test_check_host_takes_http_and_https_urls_only() -> None:
    from sslops.errors import ConfigError
    from sslops.k8s.submit import check_host

    for good in ("http://localhost:8080", "https://kfp.example.com/pipeline", "http://[::1]:80"):
        assert check_host(good) == good
    for bad in ("localhost:8080", "HTTP://x", "http://x:port", "http://x y", " ", "http://[::1"):
        with pytest.raises(ConfigError, match="--host"):
            check_host(bad)


@pytest.mark.parametrize("command", [["submit"], SCHEDULE])
def test_kfp_logs_and_warnings_do_not_reach_stderr_only_the_error(
    command: list[str], monkeypatch, capsys
) -> None:
    """An unreachable or wrong endpoint: kfp.Client logs each failed health check with a
    traceback (logging.exception, which adds a stderr handler to a bare root logger) and then
    raises. Only the one error line is shown; logging is as it was afterwards."""
    import logging
    import warnings

    import kfp

    def failing_client(**kwargs: Any) -> None:
        for attempt in range(1, 6):
            try:
                raise RuntimeError("(404) Reason: Not Found")
            except RuntimeError:
                logging.exception(f"Failed to get healthz info attempt {attempt} of 5.")
        logging.getLogger("kfp").warning("a kfp warning")
        warnings.warn("The host does not contain the http protocol", UserWarning, stacklevel=1)
        raise TimeoutError("Failed getting healthz endpoint after 5 attempts.")

    monkeypatch.setattr(kfp, "Client", failing_client)
    monkeypatch.setattr(logging.root, "handlers", [])  # as in the CLI: no handler configured
    host = "http://10.255.255.1:8080"
    config = str(ROOT / "configs" / "adult.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*command, "--config", config, "--host", host]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(
        f"error: cannot reach KFP at {host}: Failed getting healthz endpoint after 5 attempts; "
        "is KFP's API served there?"
    )
    assert err.count("\n") == 1
    assert out == "" and not caught
    assert logging.root.handlers == [] and logging.root.manager.disable == logging.NOTSET


@pytest.mark.parametrize(
    "cron",
    ["0 0 6 * * *", "0 30 5 * * 1-5", "*/15 0-30/10 8,12,18 ? jan-MAR/2 SUN,sat",
     "5/15 * * 1-31 12 MON-FRI", "  0 0 6 * * *  "],
)  # fmt: skip
def test_cron_fields_robfig_takes_are_accepted(cron: str) -> None:
    from sslops.k8s.schedule import check_cron

    assert check_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 0 25 * * *", "field 3 (hours) '25' is out of range 0-23"),
        ("a b c d e f", "field 1 (seconds) 'a' is not valid: expected 0-59, *, ?, a list"),
        ("60 * * * * *", "field 1 (seconds) '60' is out of range 0-59"),
        ("0 0-61 * * * *", "field 2 (minutes) '61' is out of range 0-59"),
        ("0 0 0 0 * *", "field 4 (day of month) '0' is out of range 1-31"),
        ("0 0 0 * 13 *", "field 5 (month) '13' is out of range 1-12 or JAN-DEC"),
        ("0 0 0 * FOO *", "field 5 (month) 'FOO' is not valid: expected 1-12 or JAN-DEC"),
        ("0 0 0 * * 7", "field 6 (day of week) '7' is out of range 0-6 or SUN-SAT"),
        ("0 0 9-5 * * *", "field 3 (hours) '9-5': the range starts after it ends"),
        ("*/0 * * * * *", "field 1 (seconds) '*/0': the step after '/' must be a number"),
        ("1,,2 * * * * *", "field 1 (seconds) '1,,2' is not valid"),
        ("-1 * * * * *", "field 1 (seconds) '-1' is not valid"),
        ("0 0 6 * *", "expected 6 space-separated fields"),
        ("@daily", "expected 6 space-separated fields"),
    ],
)
def test_a_cron_field_out_of_range_or_not_cron_is_named(cron: str, message: str) -> None:
    from sslops.errors import ConfigError
    from sslops.k8s.schedule import check_cron

    with pytest.raises(ConfigError) as raised:
        check_cron(cron)
    assert str(raised.value).startswith(f"--cron {cron!r}: ")
    assert message in str(raised.value)


def test_cli_schedule_shadow_names_the_cron_field_before_kfp_is_asked(monkeypatch, capsys):
    import kfp

    monkeypatch.setattr(kfp, "Client", None)  # never reached
    args = [*SCHEDULE, "--config", str(ROOT / "configs" / "adult.yaml"),
            "--host", "http://localhost:9"]  # fmt: skip
    args[args.index("0 0 6 * * *")] = "0 0 25 * * *"
    assert main(args) == 2
    assert capsys.readouterr() == (
        "",
        "error: --cron '0 0 25 * * *': field 3 (hours) '25' is out of range 0-23\n",
    )


TRAINJOB = ["--config", str(ROOT / "configs" / "adult.yaml"), "--set", "pretrain.launcher=trainjob",
            "--set", "platform.storage.workspace_pvc=ws"]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["kustomize", "--overlay", "aws", "--values", "x.yaml"], "--values applies to --target helm only"),
        (["trainjob", *TRAINJOB, "--values", "x.yaml"], "--values applies to --target helm only"),
        (["kustomize", "--chart", "helm/sslops"], "--chart applies to --target helm only"),
        (["trainjob", *TRAINJOB, "--release", "r"], "--release applies to --target helm only"),
        (["helm", "--overlay", "aws"], "--overlay applies to --target kustomize only"),
        (["trainjob", *TRAINJOB, "--overlay", "aws"], "--overlay applies to --target kustomize only"),
        (["kustomize", "--namespace", "team-a"], "--namespace applies to --target helm and trainjob only"),
        (["helm", *TRAINJOB[:2]], "--config applies to --target trainjob only"),
        (["kustomize", "--set", "seed=1"], "--set applies to --target trainjob only"),
    ],
)  # fmt: skip
def test_render_refuses_a_flag_its_target_does_not_read(argv: list[str], message: str, capsys):
    assert main(["render", "--target", *argv]) == 2
    assert capsys.readouterr() == ("", f"error: {message}\n")


def test_render_defaults_apply_when_the_flags_are_not_given(monkeypatch, capsys) -> None:
    from sslops.k8s import render

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(render, "render_helm", lambda *a: calls.append(a) or "")
    monkeypatch.setattr(render, "render_kustomize", lambda *a: calls.append(a) or "")
    monkeypatch.chdir(ROOT)
    assert main(["render", "--target", "helm"]) == 0
    assert main(["render", "--target", "kustomize"]) == 0
    assert calls == [
        (Path("helm/sslops"), [], "sslops", "kubeflow"),
        (Path("manifests/overlays/onprem"), Path("manifests/overlays")),
    ]


def test_the_default_run_name_is_in_utc_whatever_the_submitter_s_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from sslops.k8s.submit import default_run_name

    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: another day than UTC's
    time.tzset()
    try:
        before = time.gmtime()
        name = default_run_name("sslops-pipeline")
        after = time.gmtime()
    finally:
        monkeypatch.undo()
        time.tzset()
    stamps = {time.strftime("%Y%m%d-%H%M%S", t) for t in (before, after)}
    assert name.removeprefix("sslops-pipeline-").removesuffix("Z") in stamps and name[-1] == "Z"
