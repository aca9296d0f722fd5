"""The KFP pipeline: compiled YAML matches the source; `sslops run` executes it via kfp.local."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from sslops import __version__ as VERSION
from sslops.audit.registry import list_registry
from sslops.data.datacard import few_class_note
from sslops.finetune.pareto import MECHANISMS
from tests.conftest import FAST_OVERRIDES, ROOT


def test_committed_pipeline_yaml_matches_a_fresh_compile(tmp_path: Path, monkeypatch) -> None:
    """IR YAML, Kubernetes-native manifests and the Helm chart's copies: all of `make compile`."""
    monkeypatch.delenv("SSLOPS_IMAGE_REGISTRY", raising=False)
    spec = importlib.util.spec_from_file_location(
        "compile_script", ROOT / "pipelines" / "ssl_pipeline.py"
    )
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fresh = script.compile_all(tmp_path / "compiled", tmp_path / "chart")
    assert len(fresh) == 7
    for path in fresh:
        where = script.CHART_FILES if path.parent.name == "chart" else script.COMPILED
        committed = where / path.name
        assert committed.is_file(), f"{committed} is missing: run `make compile` and commit it"
        assert path.read_text() == committed.read_text(), (
            f"{committed} is stale: run `make compile` and commit it"
        )


def test_a_compiled_pipeline_version_is_named_by_its_spec_and_documents_its_parameters() -> None:
    from sslops.pipeline.ssl_pipeline import spec_digest

    for stem in ("ssl_pipeline", "ssl_pipeline_multinode", "shadow_pipeline", "predict_pipeline"):
        path = ROOT / "pipelines" / "compiled" / f"{stem}.k8s.yaml"
        version = next(
            d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "PipelineVersion"
        )
        assert (
            version["metadata"]["name"]
            == f"{version['spec']['displayName']}-{spec_digest(version['spec'])}"
        )
        annotations = version["metadata"]["annotations"]  # kept when a new version replaces it
        assert annotations["argocd.argoproj.io/sync-options"] == "Prune=false"
        # The KFP UI's run form: every parameter described, on one line.
        parameters = version["spec"]["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
        for name, parameter in parameters.items():
            assert parameter["description"].strip(), f"{stem}: {name} has no description"
            assert "\n" not in parameter["description"]


def test_compiled_pipeline_uses_the_sslops_image_and_installs_nothing() -> None:
    compiled = (ROOT / "pipelines" / "compiled" / "ssl_pipeline.yaml").read_text()
    spec = next(yaml.safe_load_all(compiled))  # the second document is the platform spec
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 6
    for name, executor in executors.items():
        container = executor["container"]
        # In-pod GPU pretraining runs on the CUDA variant of the same image.
        tag = f"{VERSION}-cuda" if name == "exec-pretrain" else VERSION
        assert container["image"].endswith(f"/sslops:{tag}")
        assert "pip install" not in " ".join(container["command"])


@pytest.mark.parametrize(
    ("overrides", "gpus", "message"),
    [
        (["pretrain.gpus_per_node=4"], 1,
         "pretrain.gpus_per_node: 4, but this pod has 1 GPU(s): the pipeline's GPU count is "
         "fixed when it is compiled"),
        (["pretrain.gpus_per_node=1"], 0, "pretrain.gpus_per_node: 1, but this pod has 0 GPU(s)"),
        (["pretrain.launcher=trainjob", "pretrain.nodes=2", "platform.storage.workspace_pvc=ws"],
         0, "pretrain.launcher: trainjob (nodes 2), but this pipeline pretrains in its own pod"),
    ],
)  # fmt: skip
def test_in_pod_pretraining_refuses_a_config_the_pod_was_not_compiled_for(
    overrides: list[str], gpus: int, message: str, monkeypatch, capsys
) -> None:
    """The run form lets pretrain.gpus_per_node be edited, but the single-pod pipeline's
    accelerator limit is compiled in: 4 torchrun ranks started on 1 GPU (invalid device
    ordinal), and launcher trainjob with 2 nodes pretrained silently in one pod."""
    from sslops.config import load_config
    from sslops.pipeline.tasks import check_pretrain_pod, pretrain_task

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("SSLOPS_FINAL_LOCATIONS", raising=False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: gpus)
    cfg = load_config(ROOT / "configs" / "adult.yaml", overrides)
    nothing = SimpleNamespace(path="/nonexistent", metadata={})
    with pytest.raises(SystemExit) as stopped:
        pretrain_task(cfg.to_json(), nothing, nothing)
    assert stopped.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
    # what the pod was compiled for passes; `sslops run` (kfp.local, this machine) is not checked
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    check_pretrain_pod(load_config(ROOT / "configs" / "adult.yaml", ["pretrain.gpus_per_node=1"]))
    monkeypatch.setenv("SSLOPS_FINAL_LOCATIONS", "{}")
    check_pretrain_pod(cfg)


def test_image_registry_is_one_setting(monkeypatch) -> None:
    from sslops.pipeline.image import base_image

    monkeypatch.setenv("SSLOPS_IMAGE_REGISTRY", "registry.internal:5000/mirror/")
    assert base_image() == f"registry.internal:5000/mirror/sslops:{VERSION}"


def _renamed_adult(small_data: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The Adult sample with other column names and label values: nothing Adult-specific in
    code; a third of the training rows carry no label (the data SSL is for)."""
    renames = {"income": "high_earner", "sex": "gender", "race": "ethnicity", "age": "years"}
    paths = {}
    for split, path in small_data.items():
        frame = pd.read_csv(path, dtype=str, keep_default_na=False).rename(columns=renames)
        frame["high_earner"] = frame["high_earner"].map({">50K": "yes", "<=50K": "no"})
        if split == "train":
            frame.loc[frame.index % 3 == 2, "high_earner"] = ""
        frame.insert(0, "customer_id", [f"C{split[0]}{i:06d}" for i in range(len(frame))])
        frame["ticket"] = [f"TK{split[0]}{i:06d}" for i in range(len(frame))]  # not declared
        paths[split] = tmp_path / f"other_{split}.csv"
        frame.to_csv(paths[split], index=False)
    return paths


def test_a_failed_run_s_log_is_kept_beside_the_output_until_a_run_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each failed run left a /tmp/sslops-run-*.log (about 90 piled up): the log is kept for
    the user to read, named in the error, once per output folder, until a run succeeds."""
    from sslops.config import load_config
    from sslops.pipeline import local

    cfg = load_config(ROOT / "configs" / "adult.yaml", [])
    out = tmp_path / "run"

    def failing(config_json: str) -> None:
        print("error: data.positive 'maybe' does not occur", flush=True)
        raise RuntimeError("Task 'prepare' finished with status FAILURE")

    with pytest.raises(local.PipelineFailed) as info, monkeypatch.context() as patch:
        patch.setattr("sslops.pipeline.ssl_pipeline.ssl_pipeline", failing)
        patch.setattr("kfp.local.init", lambda **_: None)
        local.run_local(cfg, out)
    log = tmp_path / ".run.failed.log"
    assert str(info.value) == f"data.positive 'maybe' does not occur (full log: {log})"
    assert "does not occur" in log.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.failed.log"]
    monkeypatch.setattr(local, "_run_staged", lambda cfg, out: {})
    local.run_local(cfg, out)
    assert not log.exists()


def test_a_run_gives_back_the_programs_kfp_local_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sslops.run (and the sharded prepare) called kfp.local.init for its tasks and left it
    so: a program's own kfp.local set-up was replaced, and a component it ran locally after
    the run wrote under the run's staging folder, which the run had moved away (found by the
    order review)."""
    import tempfile

    from kfp import local as kfp
    from kfp.local.config import LocalExecutionConfig

    from sslops.config import load_config
    from sslops.pipeline import local

    roots: list[str] = []

    def pipeline_ran(pipeline: object, cfg: object, log: Path, kept: Path) -> dict[str, object]:
        roots.append(LocalExecutionConfig.instance.pipeline_root)  # what the tasks used
        (log.parent / "kfp").mkdir()
        return {}

    monkeypatch.setattr(local, "_run_pipeline", pipeline_ran)
    monkeypatch.setattr(local, "_collect", lambda root, staging: None)
    monkeypatch.setattr(local, "build_summary", lambda run_dir: {})
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # kfp's workspace folder
    monkeypatch.setattr(LocalExecutionConfig, "instance", None)  # the real one comes back after
    cfg = load_config(ROOT / "configs" / "adult.yaml", [])
    for program in ("none", "its-own"):
        if program == "its-own":
            kfp.init(runner=kfp.SubprocessRunner(use_venv=False),
                     pipeline_root=str(tmp_path / program), workspace_root=str(tmp_path))  # fmt: skip
        before = LocalExecutionConfig.instance
        local.run_local(cfg, tmp_path / program / "run")
        assert roots[-1].startswith(str(tmp_path / program / ".run.partial-"))
        assert LocalExecutionConfig.instance is before, program


def test_the_run_summary_names_the_values_a_one_vs_rest_label_trains_as_negative(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sslops.cli import _print_summary

    scores = dict.fromkeys(("accuracy", "roc_auc", "dp_difference", "eo_difference"), 0.5)
    summary = {
        "sensitive": "sex", "ssl": scores, "mitigated": scores, "baseline": scores,
        "onnx": {"path": "model.onnx", "max_abs_diff": 1e-6}, "audit": {"path": "bundle"},
        "label_note": "label 'income' has 3 values: positive '>50K' (501); negative '<=50K' "
                      "(1,376), '[unknown]' (196) — a value meaning 'not labeled yet' should "
                      "be empty instead",
    }  # fmt: skip
    _print_summary(summary, tmp_path)
    printed = " ".join(capsys.readouterr().out.split())
    assert f"Label: {summary['label_note']} (prepare/datacard.md)" in printed
    _print_summary({**summary, "label_note": None}, tmp_path)
    assert "Label:" not in capsys.readouterr().out
    few = few_class_note("income", {"validation": {"positive": 7, "negative": 213}})
    assert few and "validation 7 positive / 213 negative" in few
    _print_summary({**summary, "few_class_note": few}, tmp_path)
    assert f"Splits: {few} (prepare/datacard.md)" in " ".join(capsys.readouterr().out.split())
    notes = ["153 of 153 images converted to one grey channel", "12 series cropped at the end"]
    _print_summary({**summary, "data_notes": notes}, tmp_path)
    printed = " ".join(capsys.readouterr().out.split())
    assert all(f"Data: {note} (prepare/datacard.md)" in printed for note in notes)


def test_sslops_run_on_another_csv_through_kfp_local(
    small_data: dict[str, Path], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    other = _renamed_adult(small_data, tmp_path)
    out = tmp_path / "run"
    args = [
        "sslops", "run", "--config", str(ROOT / "configs" / "adult.yaml"), "--out", str(out),
        "--set", f"data.train={other['train']}", "--set", f"data.test={other['test']}",
        "--set", "data.label=high_earner", "--set", "data.positive=yes",
        "--set", "data.sensitive=[gender, ethnicity]", "--set", "data.identifiers=[customer_id]",
        "--set", "audit.registry=registry",  # relative to the caller's folder, as kept
    ]  # fmt: skip
    for override in FAST_OVERRIDES:
        if not override.startswith("evaluate.label_efficiency"):
            args += ["--set", override]
    for override in ("fractions=[0.2,1.0]", "draws=1", "full_fine_tune=false"):
        args += ["--set", f"evaluate.label_efficiency.{override}"]
    (tmp_path / ".run.failed.log").write_text("an earlier failed run's log")
    (tmp_path / "tmp").mkdir()
    env = {**cli_env, "TMPDIR": str(tmp_path / "tmp")}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600,
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "tmp").iterdir()) == []  # kfp.local's per-task folders went too
    assert not (tmp_path / ".run.failed.log").exists()  # removed by the run that succeeded
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["summary_format"], summary["sslops_version"]) == (1, VERSION)
    assert summary["label_note"] is None  # yes / no: nothing to note
    assert summary["few_class_note"] is None  # every split has >= 10 rows of each class
    # The bundle was filed in the registry, under the demo config's model name.
    sha = hashlib.sha256((out / "audit" / "bundle" / "manifest.json").read_bytes()).hexdigest()
    filed = tmp_path / "registry" / "bundles" / f"{sha}.zip"
    assert summary["audit"]["filed"] == str(filed) and f"Filed as:     {filed}" in result.stdout
    assert [r["manifest_sha256"] for r in list_registry(tmp_path / "registry", "adult-income")] == [
        sha
    ]
    # The rows without a label were pretrained on, and only they were not fine-tuned on.
    card = json.loads((out / "prepare" / "datacard.json").read_text())
    assert card["rows_without_label_kept"] > 900
    unlabeled = pd.read_parquet(out / "prepare" / "unlabeled.parquet")
    train = pd.read_parquet(out / "prepare" / "train.parquet")
    assert len(unlabeled) == card["rows_without_label_kept"] and train["high_earner"].notna().all()
    pretrained = json.loads((out / "pretrain" / "summary.json").read_text())
    assert pretrained["rows"] == len(train) + len(unlabeled)
    finetuned = json.loads((out / "finetune" / "finetune.json").read_text())
    assert finetuned["train_rows"] == len(train)
    # ... and they also hold out rows for the demographic-parity estimate (the 10% validation
    # split of a partly labeled file is small), beside the labeled rows label_fraction leaves
    assert finetuned["unlabeled_rows"] == len(unlabeled)
    without_label = len(train) - finetuned["labels_used"] + len(unlabeled)
    dp_rows = finetuned["fairness"]["gap_rows"]["demographic_parity"]
    assert f"+ {round(0.5 * without_label)} unlabeled training rows held out" in dp_rows
    # The console shows the long stages' progress lines from their logs, and not the logs.
    console = [line.strip() for line in result.stderr.splitlines()]
    for start in (
        "pretrain (scarf, 1 process) 1/", "finetune (candidates) 1/3 ssl (ensemble, ",
        "finetune (candidates) 2/3 ", "finetune (candidates) 3/3 ",
        "evaluate (label efficiency) 1/2 20% of the labels (",
        "evaluate (label efficiency) 2/2 100% of the labels (",
    ):  # fmt: skip
        assert any(line.startswith(start) for line in console), (start, console)
    assert not any("KFP Executor" in line for line in console)
    # Each task's wall time, as the console's task line shows it (found by the observe review:
    # meta.json's started/ended span the artifact's writing only, 0 s for a 2-minute finetune).
    stages = summary["stages"]
    assert sorted(stages) == sorted(("prepare", "pretrain", "finetune", "evaluate", "export",
                                     "audit"))  # fmt: skip
    for task, timing in stages.items():
        assert timing["reused"] is False and timing["seconds"] > 0
        assert f"[ok] {task}  {timing['seconds']:.1f} s" in console
    assert "\x1b[" not in (out / "run.log").read_text()  # kfp.local's colour codes left out
    # the label-efficiency curve: a table in the report, one KFP metric per model and fraction
    assert "| ssl_ensemble | SSL |" in (out / "evaluate" / "metrics.md").read_text()
    logged = (out / "run.log").read_text()
    for model in ("ssl_ensemble", "binned_evidence_lr", "logistic_regression"):
        assert f"label_efficiency_{model}_20pct" in logged
    for model in ("ssl", "mitigated", "baseline"):
        for key in ("accuracy", "roc_auc", "dp_difference", "eo_difference"):
            assert 0.0 <= summary[model][key] <= 1.0
        assert summary[model]["accuracy"] > 0.7  # well above chance on Adult
    assert summary["sensitive"] == "gender"
    assert summary["onnx"]["max_abs_diff"] <= 1e-4
    assert Path(summary["onnx"]["path"]).is_file()
    bundle = Path(summary["audit"]["path"])
    assert {"model_card.md", "model_card.html", "manifest.json", "model.onnx"} <= {
        p.name for p in bundle.iterdir()
    }
    # The identifier column never leaves prepare: no prepared table has it, no file has its values.
    planted = [f"Ct{i:06d}".encode() for i in range(0, 3000, 97)]
    for path in out.rglob("*"):
        if path.suffix == ".parquet":
            assert "customer_id" not in pd.read_parquet(path).columns, path
        elif path.is_file():
            content = path.read_bytes()
            assert not any(value in content for value in planted), path
    # The undeclared identifier is named in the summary, on screen and on the model card, and
    # none of its values is stored outside the prepared tables (each occurs once: folded).
    assert summary["identifier_like_columns"] == ["ticket"]
    assert "'ticket' is distinct" in " ".join(result.stdout.split())
    assert "'ticket' (" in (bundle / "model_card.md").read_text()
    tickets = [f"TKt{i:06d}".encode() for i in range(0, 3000, 97)]
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".parquet":
            assert not any(value in path.read_bytes() for value in tickets), path
    assert "fairness-mitigated" in result.stdout
    selected = summary["fairness"]["selected"]
    assert selected in result.stdout
    finetuned = json.loads((out / "finetune" / "finetune.json").read_text())
    assert selected == finetuned["fairness"]["selected"]
    # the deployed mechanism in words, the same in the summary and on the model card
    described = summary["fairness"]["selected_description"]
    assert described == MECHANISMS[summary["fairness"]["selected_mechanism"]]
    assert described in (bundle / "model_card.md").read_text()
    measured_on = summary["fairness"]["gap_measured_on"]
    assert measured_on == finetuned["fairness"]["gap_rows"][summary["fairness"]["constraint"]]
    caveats = summary["fairness"]["selection_caveats"]
    assert caveats == finetuned["fairness"].get("selection_caveats", [])
    assert "measured" in " ".join(result.stdout.split())
    # how many rows the test table stands on, and the deployed model's intervals
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    low, high = metrics["models"]["mitigated"]["intervals"]["accuracy"]
    assert (f"Test split: {metrics['rows']:,} rows; fairness-mitigated, 95% bootstrap "
            f"intervals: accuracy [{low:.3f}, {high:.3f}]") in " ".join(result.stdout.split())  # fmt: skip
    assert not list(tmp_path.glob(".run.partial-*"))
    # Lineage names the folders the artifacts are in after the run, not the deleted staging
    # ones: each stage's inputs, and the bundle's own location in its run.json.
    for stage, inputs in (("finetune", ("prepare", "pretrain")), ("audit", ("evaluate", "export"))):
        recorded = json.loads((out / stage / "meta.json").read_text())["inputs"]
        for folder in inputs:
            assert str(out / folder) in [r["path"] for r in recorded.values()], (stage, recorded)
    run = json.loads((bundle / "run.json").read_text())
    assert run["kfp_artifact_uri"] == str(out / "audit")
    assert run["image"] is None and "no container" in run["executed_by"]  # ran as processes here
    for path in out.rglob("*"):
        if path.is_file() and path.name != "run.log" and path.suffix in {".json", ".md", ".html"}:
            assert b".partial-" not in path.read_bytes(), path
    # the console's last line is a command that scores new rows with the deployed model
    hint = next(line for line in result.stdout.splitlines() if line.startswith("Score rows:"))
    named = {"NEW.csv": str(other["test"]), "predictions.csv": str(tmp_path / "scored.csv")}
    argv = [named.get(a, a) for a in hint.removeprefix("Score rows:").split()]
    scored = subprocess.run(argv, capture_output=True, text=True, env=cli_env, timeout=120)
    assert scored.returncode == 0, scored.stderr
    rows = pd.read_csv(tmp_path / "scored.csv")
    assert len(rows) == len(pd.read_csv(other["test"])) and rows["score"].between(0, 1).all()


@pytest.mark.slow
def test_adult_demo_config_end_to_end(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`make demo`'s run at full size: the mitigated model meets the DP policy on test."""
    out = tmp_path / "demo"
    result = subprocess.run(
        ["sslops", "run", "--config", str(ROOT / "configs" / "adult.yaml"), "--out", str(out)],
        capture_output=True, text=True, env=cli_env, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mitigated"]["dp_difference"] < summary["ssl"]["dp_difference"] / 2
    assert summary["ssl"]["roc_auc"] > 0.85


def test_component_readmes_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "component_readmes.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_each_component_file_exposes_its_component() -> None:
    import importlib.util

    for stage in ("prepare", "pretrain", "finetune", "evaluate", "export", "audit"):
        path = ROOT / "components" / stage / "component.py"
        spec = importlib.util.spec_from_file_location(f"component_{stage}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.component.name == stage
