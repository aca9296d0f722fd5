"""The batch-scoring pipeline: the `predict` component run through kfp.local (as a cluster
runs it, in its own process), its published copy, and the compiled YAML."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from sslops.cli import main
from sslops.config import load_config
from sslops.k8s.validation import validate_object
from sslops.prepare.dataset import PreparedData
from tests.conftest import crd_schemas
from tests.test_k8s_submit import _uploaded_spec
from tests.test_shadow import CONFIG, FakeKfpWithSchedules, assert_committed

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path) -> Any:
    """A module of the repository loaded by its path (pipelines/, components/)."""
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def local_kfp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """kfp.local set up for this module's tests, its global configuration put back afterwards.
    A workspace folder of the tests' own: kfp.local removes the one init makes in /tmp after a
    whole pipeline only, and a component called alone left a kfp-workspace-* there each time."""
    from kfp import local
    from kfp.local.config import LocalExecutionConfig

    before = LocalExecutionConfig.instance
    root = tmp_path_factory.mktemp("kfp-root")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root), workspace_root=str(tmp_path_factory.mktemp("kfp-workspace")),
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:  # the tasks' `mktemp -d` folders go there too
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("kfp-tasks")))
        yield root
    LocalExecutionConfig.instance = before


def test_predict_component_scores_and_publishes_on_the_workspace(
    stage_artifacts: dict[str, Path], local_kfp: Path, tmp_path: Path
) -> None:
    from sslops.pipeline.predict_pipeline import predict

    frame = PreparedData(stage_artifacts["prepare"]).test.frame.copy()
    frame.insert(0, "id", [f"r{i:05d}" for i in range(len(frame))])
    batches = tmp_path / "workspace" / "batches"
    batches.mkdir(parents=True)
    frame.iloc[:300].to_csv(batches / "2026-11-29.csv", index=False)
    frame.iloc[300:].to_csv(batches / "2026-11-30.csv", index=False)
    model = stage_artifacts["export"] / "model.onnx"
    out = tmp_path / "workspace" / "predictions" / "{date}.csv"
    # the task fills in the UTC date it runs on: this day or, past midnight, the next
    day = datetime.now(UTC).date()
    task = predict(
        config_json="", model=str(model), data=str(batches), out=str(out), id_column="id",
        threshold="", registry="", approver_key="",
    )  # fmt: skip
    artifact = Path(task.outputs["predictions"].path)
    written = pd.read_csv(artifact / "predictions.csv", dtype={"row_id": str})
    assert written["row_id"].tolist() == frame["id"].tolist()
    (published,) = [
        out.with_name(f"{d.isoformat()}.csv")
        for d in sorted({day, datetime.now(UTC).date()})
        if out.with_name(f"{d.isoformat()}.csv").is_file()
    ]
    assert published.read_bytes() == (artifact / "predictions.csv").read_bytes()
    record = json.loads(published.with_name(f"{published.stem}.meta.json").read_text())
    assert record["predictions"] == published.name and record["rows"] == len(frame)
    assert [d["rows"] for d in record["data"]] == [300, len(frame) - 300]
    metrics = task.outputs["metrics"].metadata
    assert metrics["rows"] == len(frame) and metrics["files"] == 2
    assert metrics["label_1_share"] == pytest.approx(written["label"].mean(), abs=1e-6)
    assert task.outputs["predictions"].metadata["published"] == str(published)
    summary = Path(task.outputs["summary"].path).read_text()  # shown in the KFP UI
    assert f"**{len(frame):,} rows**" in summary and record["model"]["sha256"] in summary
    assert "| threshold | 0.5 (the model's decision_threshold metadata) |" in summary

    # A threshold of one's own, and only with a model whose bundle is approved.
    registry = _approved_registry(stage_artifacts["audit"], tmp_path)
    again = tmp_path / "workspace" / "predictions" / "manual.csv"
    task = predict(
        config_json="", model=str(model), data=str(batches / "2026-11-30.csv"), out=str(again),
        id_column="", threshold="0.2", registry=str(registry),
        approver_key=str(tmp_path / "approver.pub.pem"),
    )  # fmt: skip
    relabeled = pd.read_csv(again)
    assert relabeled["row_id"].iloc[0] == "2026-11-30:0"
    assert (relabeled["label"] == (relabeled["score"] >= 0.2)).all()
    approval = json.loads(again.with_name("manual.meta.json").read_text())["model"]["approval"]
    assert approval["approved_by"] == "J. Doe, model risk"
    summary = Path(task.outputs["summary"].path).read_text()
    assert f"| approved | bundle `{approval['bundle_manifest_sha256'][:12]}` " in summary
    assert "(a trusted approver key) |" in summary and approval["key_trusted"]


def _approved_registry(audit_dir: Path, tmp_path: Path, approve: bool = True) -> Path:
    from sslops.audit import generate_keypair
    from sslops.audit.bundle import load_private_key
    from sslops.audit.registry import decide, file_bundle

    registry = tmp_path / "workspace" / "audit-registry"
    entry = file_bundle(audit_dir, registry, model="income")
    if approve:
        generate_keypair(tmp_path / "approver.pem", tmp_path / "approver.pub.pem")
        key = load_private_key(tmp_path / "approver.pem", "", True, "--key-file", "")
        decide(registry, entry["manifest_sha256"], "approved", key, by="J. Doe, model risk")
    return registry


@pytest.mark.parametrize(
    ("out", "threshold", "registry", "message"),
    [
        ("{batches}/predictions.csv", "", "", "lies in the data folder"),
        ("{work}/p.csv", "high", "", "threshold 'high': expected a probability"),
        ("{work}/p.parquet", "", "", "expected a file name ending in .csv"),
        ("{work}/p.csv", "", "pending", "is not approved in the audit registry"),
        ("{work}/p.csv", "", "another key", "which is not one of the approver keys given"),
    ],
)
def test_predict_component_refuses_bad_input_and_publishes_nothing(
    stage_artifacts: dict[str, Path], local_kfp: Path, tmp_path: Path, out: str,
    threshold: str, registry: str, message: str, capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from sslops.pipeline.predict_pipeline import predict

    batches = tmp_path / "batches"
    batches.mkdir()
    PreparedData(stage_artifacts["prepare"]).test.frame.iloc[:50].to_csv(
        batches / "day.csv", index=False
    )
    approver_key = ""
    if registry:  # filed and not (yet) approved, or approved with a key not trusted here
        approved = registry == "another key"
        registry = str(_approved_registry(stage_artifacts["audit"], tmp_path, approve=approved))
        if approved:
            from sslops.audit import generate_keypair

            approver_key = str(tmp_path / "trusted.pub.pem")
            generate_keypair(tmp_path / "trusted.pem", Path(approver_key))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    target = out.format(batches=batches, work=tmp_path)
    with pytest.raises(RuntimeError):
        predict(
            config_json="", model=str(stage_artifacts["export"] / "model.onnx"),
            data=str(batches), out=target, id_column="", threshold=threshold, registry=registry,
            approver_key=approver_key,
        )  # fmt: skip
    assert message in capfd.readouterr().out  # kfp.local streams the task's stderr

    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == before


def test_committed_predict_pipeline_matches_a_fresh_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSLOPS_IMAGE_REGISTRY", raising=False)
    script = _load(ROOT / "pipelines" / "predict_pipeline.py")
    assert_committed(
        script.compile_predict(tmp_path, tmp_path / "chart"), "predict_pipeline", script
    )
    ir, platform = yaml.safe_load_all((script.COMPILED / "predict_pipeline.yaml").read_text())
    task = ir["root"]["dag"]["tasks"]["predict"]
    assert not task.get("cachingOptions", {}).get("enableCache")  # new rows, same paths
    assert ir["root"]["inputDefinitions"]["parameters"]["threshold"]["defaultValue"] == ""
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-predict"]
    assert mounts["pvcMount"][0]["mountPath"] == "/workspace"
    crds = crd_schemas()  # skips, naming ../shared, without it
    native = [
        d
        for d in yaml.safe_load_all((script.COMPILED / "predict_pipeline.k8s.yaml").read_text())
        if d
    ]
    assert [d["kind"] for d in native] == ["Pipeline", "PipelineVersion"]
    for obj in native:
        assert validate_object(obj, crds) == "crd"


def test_the_compiled_task_dates_its_file_by_the_scheduled_time_kfp_fills_in() -> None:
    """A task input constant that is KFP's placeholder and nothing else (the backend's driver
    resolves only such a constant), not a parameter the run form shows."""
    from kfp import dsl

    ir = next(
        yaml.safe_load_all((ROOT / "pipelines" / "compiled" / "predict_pipeline.yaml").read_text())
    )
    task = ir["root"]["dag"]["tasks"]["predict"]["inputs"]["parameters"]
    assert task["scheduled"] == {
        "runtimeValue": {"constant": dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER}
    }
    assert "scheduled" not in ir["root"]["inputDefinitions"]["parameters"]


def _predict_task(
    stage_artifacts: dict[str, Path], tmp_path: Path, out: Path, scheduled: str
) -> dict[str, Any]:
    """predict_task as the pod runs it (without kfp.local, so the clock can be set)."""
    from types import SimpleNamespace

    from sslops.pipeline.tasks import predict_task

    batches = tmp_path / "batches"
    batches.mkdir(exist_ok=True)
    PreparedData(stage_artifacts["prepare"]).test.frame.iloc[:40].to_csv(
        batches / "day.csv", index=False
    )
    predictions = SimpleNamespace(path=str(tmp_path / "artifact"), metadata={})
    summary = SimpleNamespace(path=str(tmp_path / "summary.md"))
    metrics = SimpleNamespace(log_metric=lambda name, value: None)
    predict_task(
        "", str(stage_artifacts["export"] / "model.onnx"), str(batches), str(out), "", "", "",
        "", predictions, summary, metrics, scheduled,
    )  # fmt: skip
    return predictions.metadata


def test_a_run_that_starts_past_midnight_writes_the_scheduled_day_s_file(
    stage_artifacts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scheduled 23:59 UTC on 30 November, started (waiting for a node, or a retry) on
    1 December: the old task wrote 2026-12-01.csv, taking the next day's name."""
    started = datetime(2026, 12, 1, 0, 7, tzinfo=UTC)
    monkeypatch.setattr("sslops.pipeline.tasks._utc_now", lambda: started)
    out = tmp_path / "predictions" / "{date}.csv"
    meta = _predict_task(stage_artifacts, tmp_path, out, "2026-11-30T23:59:00Z")
    assert sorted(p.name for p in out.parent.glob("*.csv")) == ["2026-11-30.csv"]
    assert meta["date"] == "2026-11-30"
    assert meta["date_from"] == "the run's scheduled time (2026-11-30T23:59:00Z)"
    assert (
        "| {date} | 2026-11-30, from the run's scheduled time"
        in (tmp_path / "summary.md").read_text()
    )
    # no scheduled time (kfp.local, a KFP that leaves the placeholder as is): the start's day
    for unresolved in ("", "{{$.pipeline_job_schedule_time_utc}}"):
        meta = _predict_task(stage_artifacts, tmp_path, out, unresolved)
        assert meta["date"] == "2026-12-01" and "the task's start" in meta["date_from"]


@pytest.mark.parametrize(
    ("scheduled", "day"),
    [
        ("2026-11-30T23:59:00Z", "2026-11-30"),  # KFP's backend: RFC 3339, seconds
        ("2026-11-30T23:59:00.123456Z", "2026-11-30"),  # newer kfp.local: microseconds
        ("2026-12-01T01:30:00+02:00", "2026-11-30"),  # an offset: its UTC date
    ],
)
def test_run_date_is_the_utc_date_of_the_scheduled_time(scheduled: str, day: str) -> None:
    from sslops.pipeline.tasks import run_date

    assert run_date(scheduled)[0] == day


@pytest.mark.parametrize("scheduled", ["yesterday", "2026-11-30T23:59:00"])
def test_a_scheduled_time_that_is_not_one_is_refused_before_anything_is_written(
    stage_artifacts: dict[str, Path], tmp_path: Path, scheduled: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "predictions" / "{date}.csv"
    with pytest.raises(SystemExit) as stopped:
        _predict_task(stage_artifacts, tmp_path, out, scheduled)
    assert stopped.value.code == 2
    assert f"scheduled time {scheduled!r}: expected an ISO 8601 time with its offset" in (
        capsys.readouterr().err
    )
    assert not out.parent.exists() and not (tmp_path / "artifact").exists()


def test_component_file_exposes_the_predict_component() -> None:
    module = _load(ROOT / "components" / "predict" / "component.py")
    assert module.component.name == "predict"


@pytest.fixture
def kfp_api() -> Iterator[FakeKfpWithSchedules]:
    server = FakeKfpWithSchedules()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_schedule_predict_creates_a_nightly_recurring_run(
    kfp_api: FakeKfpWithSchedules, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["schedule-predict", "--config", str(CONFIG), "--host", kfp_api.host,
            "--cron", "0 0 2 * * *", "--model", "/workspace/model.onnx",
            "--data", "/workspace/incoming", "--out", "/workspace/predictions/{date}.csv",
            "--id-column", "id"]  # fmt: skip
    assert main(args) == 0
    assert "recurring run rr1 (0 0 2 * * *)" in capsys.readouterr().out
    assert kfp_api.pipelines == {"sslops-predict-pipeline": "p1"}
    spec = _uploaded_spec(kfp_api.uploads[0][2])
    assert list(spec["deploymentSpec"]["executors"]) == ["exec-predict"]
    job = kfp_api.recurring[0]
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert job["display_name"] == "sslops-predict-pipeline-daily" and job["no_catchup"] is True
    params = job["runtime_config"]["parameters"]
    assert params["out"] == "/workspace/predictions/{date}.csv" and params["threshold"] == ""
    assert params["id_column"] == "id" and params["model"] == "/workspace/model.onnx"
    assert json.loads(params["config_json"]) == json.loads(load_config(CONFIG).to_json())
    bad = {
        "a recurring run would replace one file every run": ["--out", "/workspace/p.csv"],
        "--threshold '2': expected a probability": ["--threshold", "2"],
    }
    for message, extra in bad.items():
        code = main([*args[:-4], *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert len(kfp_api.recurring) == 1  # nothing more was created
