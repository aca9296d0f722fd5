"""Each cached stage's key covers the config it reads, and only that (found by the cachescope
review: the key had the whole config, so a rerun after a failed audit gate, with only the
gate changed, ran all five stages again).

A key missing from a stage's scope hands back a result made with another setting, so the
scope is checked against what each stage reads as it runs (every config field read, every
``model_dump`` of a part of the config), not only against dvc.yaml.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from sslops.artifacts import write_artifact
from sslops.config import Config
from sslops.pipeline.stage_cache import ENV, STAGE_PARAMS, cached_stage, scoped, stage_key
from tests.conftest import ROOT

SRC = ROOT / "src" / "sslops"
# Where a stage dumps the whole config, and why that is no read of a key outside its scope.
WHOLE_CONFIG_DUMPS = {
    # the config the stage ran with, recorded in its meta.json (the audit compares only the
    # keys each stage reads: test_a_gate_only_rerun_reuses_every_stage_and_the_bundle_is_true)
    ("meta.json", "write_artifact"),
    # the data.* settings against the prepared artifact's (prepare reads all of data.*, and
    # that artifact's meta.json is in the key)
    ("prepare/dataset.py", "check_same_data"),
    # pretrain's checkpoint fingerprint: seed, modality and pretrain.* (checkpoint.fingerprint)
    ("pretrain/loop.py", "_train"),
}


def _covered(read: str, params: tuple[str, ...]) -> bool:
    return any(read == p or read.startswith(p + ".") for p in params)


class _Reads:
    """Every config key read while it is on: a field whose value is no part of the config
    (a setting, not a section), or a part dumped whole."""

    def __init__(self, cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: set[str] = set()
        self.whole: set[tuple[str, str]] = set()
        paths: dict[type, str] = {}

        def walk(model: BaseModel, path: str) -> None:
            assert type(model) not in paths, f"{type(model).__name__} at two places"
            paths[type(model)] = path
            for name in type(model).model_fields:
                value = model.__dict__.get(name)
                if isinstance(value, BaseModel):
                    walk(value, f"{path}.{name}" if path else name)

        walk(cfg, "")
        reads = self

        def getattribute(self: BaseModel, name: str) -> Any:
            value = object.__getattribute__(self, name)
            if name in type(self).model_fields and not isinstance(value, BaseModel):
                base = paths[type(self)]
                reads.keys.add(f"{base}.{name}" if base else name)
            return value

        def model_dump(self: BaseModel, *args: Any, **kwargs: Any) -> dict[str, Any]:
            base = paths[type(self)]
            if base:
                reads.keys.add(base)
            else:
                reads.whole.add(_caller())
            return BaseModel.model_dump(self, *args, **kwargs)

        for cls in paths:
            monkeypatch.setattr(cls, "__getattribute__", getattribute, raising=False)
            monkeypatch.setattr(cls, "model_dump", model_dump, raising=False)


def _caller() -> tuple[str, str]:
    """The sslops function (outside config.py) that asked for the dump; ``("meta.json",
    "write_artifact")`` for the config argument of a ``write_artifact(...)`` call."""
    frame = sys._getframe(2)
    while frame is not None:
        file = Path(frame.f_code.co_filename)
        if file.is_relative_to(SRC) and file.name != "config.py":
            if _recorded_in_meta(file, frame.f_lineno):
                return "meta.json", "write_artifact"
            return file.relative_to(SRC).as_posix(), frame.f_code.co_name
        frame = frame.f_back  # type: ignore[assignment]
    return "?", "?"


def _recorded_in_meta(file: Path, line: int) -> bool:
    """Whether ``line`` of ``file`` is in the config argument (the third) of a call of
    ``write_artifact``, which records it in the artifact's meta.json."""
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and len(node.args) >= 3:
            name = node.func.id if isinstance(node.func, ast.Name) else ""
            config = node.args[2]
            if name == "write_artifact" and config.lineno <= line <= (config.end_lineno or 0):
                return True
    return False


def test_dvc_yaml_declares_the_keys_the_stage_cache_keys_on() -> None:
    """One list: `dvc repro` and `sslops run`'s stage cache rerun a stage on the same keys
    (tests/test_dvc.py checks dvc.yaml's lists against the attribute reads in each stage's
    own modules)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for stage, params in STAGE_PARAMS.items():
        assert stages[stage]["params"] == list(params), stage
    assert set(STAGE_PARAMS) == set(stages) - {"audit"}  # the audit is never cached


TINY = ["pretrain.threads=1", "pretrain.knn_every=0", "evaluate.bootstrap=10",
        "finetune.fairness.penalties=[0.0,2.0]", "pretrain.epochs=1"]  # fmt: skip


def _series(tmp_path: Path) -> Config:
    from sslops.config import load_config

    return load_config(ROOT / "configs" / "gunpoint.yaml",
                       [*TINY, "finetune.fairness.reductions=[0.05]"])  # fmt: skip


def _images(tmp_path: Path) -> Config:
    from sslops.config import load_config

    with gzip.open(SRC / "datasets" / "mnist" / "mnist_5k.csv.gz", "rt") as fh:
        rows = fh.read().splitlines()[::16][:300]  # sorted by label: all ten digits
    (tmp_path / "digits.csv").write_text("\n".join(rows) + "\n")
    return load_config(
        ROOT / "configs" / "mnist.yaml",
        [*TINY, f"data.train={tmp_path / 'digits.csv'}", "prepare.image_size=[16,16]",
         "pretrain.batch_size=64", "finetune.label_fraction=0.3",
         "evaluate.label_efficiency.fractions=[0.3,1.0]"],
    )  # fmt: skip


@pytest.mark.parametrize(
    "modality",
    ["tabular", pytest.param("series", marks=pytest.mark.slow),
     pytest.param("images", marks=pytest.mark.slow)],
)  # fmt: skip
def test_each_stage_reads_only_the_config_its_key_covers(
    modality: str, small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The five stages on small data, every config read recorded: each read is in the
    stage's scope. Fails on a read added outside it (checked: a read of audit.gates.min_auc
    added to evaluate's stage function fails here). tests/test_dvc.py reads every stage's own
    modules for `cfg.<section>.<key>`, every branch; this follows the calls into the shared
    modules (sslops.data, sslops.models ...) on the path each modality takes."""
    from sslops.evaluate import evaluate
    from sslops.export import export
    from sslops.finetune import finetune
    from sslops.prepare import prepare
    from sslops.pretrain import pretrain

    cfg = {"tabular": lambda _: small_config, "series": _series, "images": _images}[modality](
        tmp_path
    )
    a: dict[str, Path] = {}
    runs: dict[str, Callable[[], Path]] = {
        "prepare": lambda: prepare(cfg, tmp_path / "prepare"),
        "pretrain": lambda: pretrain(cfg, a["prepare"], tmp_path / "pretrain"),
        "finetune": lambda: finetune(cfg, a["prepare"], a["pretrain"], tmp_path / "finetune"),
        "evaluate": lambda: evaluate(cfg, a["prepare"], a["finetune"], tmp_path / "evaluate"),
        "export": lambda: export(cfg, a["prepare"], a["finetune"], tmp_path / "export"),
    }
    problems = []
    for stage, run in runs.items():
        with monkeypatch.context() as patch:
            reads = _Reads(cfg, patch)
            a[stage] = run()
        assert reads.keys, f"{stage}: no read recorded (the probe does not work)"
        outside = sorted(k for k in reads.keys if not _covered(k, STAGE_PARAMS[stage]))
        if outside:
            problems.append(f"{stage} reads {outside}, not in its key (STAGE_PARAMS)")
        unexplained = sorted(reads.whole - WHOLE_CONFIG_DUMPS)
        if unexplained:
            problems.append(f"{stage} dumps the whole config in {unexplained}")
    assert not problems, problems


def test_the_probe_sees_reads_through_sections_and_dumps(
    small_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positive control of the probe above: the reads a stage could hide a key in."""
    reads = _Reads(small_config, monkeypatch)
    section = small_config.audit
    assert section.gates.min_auc is not None
    small_config.evaluate.model_dump()
    small_config.to_json()
    assert reads.keys == {"audit.gates.min_auc", "evaluate"}
    assert reads.whole == {("?", "?")}  # to_json, asked here: outside sslops
    assert not _covered("audit.gates.min_auc", STAGE_PARAMS["evaluate"])


def _config(small_config: Config, **changes: Any) -> str:
    raw = small_config.model_dump(mode="json")
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value
    return json.dumps(raw, sort_keys=True)


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        ({"audit__gates__min_auc": 0.99}, set()),
        ({"evaluate__bootstrap": 7}, {"evaluate"}),
        ({"evaluate__min_group_rows": 7}, {"prepare", "finetune", "evaluate"}),  # by three
        ({"data__sensitive": "race"}, {"prepare", "pretrain", "finetune", "export"}),
        ({"finetune__full": True}, {"finetune", "evaluate"}),
        ({"seed": 5}, set(STAGE_PARAMS)),
        ({"platform__log_format": "json"}, set()),
    ],
    ids=["gate", "evaluate-only", "three-stages", "four-stages", "full", "seed", "platform"],
)
def test_a_change_misses_exactly_the_stages_reading_it(
    small_config: Config, change: dict[str, Any], missed: set[str]
) -> None:
    """The key of each stage on its own (the input artifacts, which carry an upstream
    stage's rerun downstream, held fixed)."""
    before, after = _config(small_config), _config(small_config, **change)
    moved = {s for s in STAGE_PARAMS if stage_key(s, before, {}) != stage_key(s, after, {})}
    assert moved == missed


def test_scoped_names_each_param_and_leaves_out_what_the_config_lacks() -> None:
    config = {"seed": 1, "data": {"sensitive": "sex", "train": "a.csv"}, "audit": {"x": 1}}
    assert scoped("pretrain", config) == {"seed": 1, "data.sensitive": "sex"}
    assert scoped("audit", config) == config  # a stage not cached: the whole config


def _producer(calls: list[str], stage: str) -> Callable[[Path], Callable[[], Path]]:
    def run_into(out: Path) -> Callable[[], Path]:
        def run() -> Path:
            calls.append(stage)
            with write_artifact(out, stage, {}) as tmp:  # each run's its own content
                (tmp / "payload.txt").write_text(f"{stage} {len(calls)}")
            return out

        return run

    return run_into


def test_a_miss_says_what_differs_without_a_secret(
    small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A cache miss printed nothing: a rerun that ran every stage again said not why."""
    monkeypatch.setenv(ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("SSLOPS_PII_KEY", "first-secret-key-0123456789")
    calls: list[str] = []
    prepare, evaluate = _producer(calls, "prepare"), _producer(calls, "evaluate")
    config = _config(small_config)
    prepared = cached_stage("prepare", config, {}, tmp_path / "p1", prepare(tmp_path / "p1"))
    cached_stage("evaluate", config, {"prepared": prepared}, tmp_path / "e1",
                 evaluate(tmp_path / "e1"))  # fmt: skip
    assert capsys.readouterr().err == ""  # nothing cached yet: nothing to explain

    # the key rotated and evaluate.min_group_rows changed: prepare misses, naming both
    monkeypatch.setenv("SSLOPS_PII_KEY", "rotated-secret-key-9876543210")
    config = _config(small_config, evaluate__min_group_rows=3, evaluate__bootstrap=9)
    again = cached_stage("prepare", config, {}, tmp_path / "p2", prepare(tmp_path / "p2"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("not reusing prepare from an earlier run, changed: ")
    assert "config evaluate.min_group_rows;" in err and "bootstrap" not in err
    assert "hashing key ($SSLOPS_PII_KEY)" in err
    assert "secret" not in err
    # evaluate: its config and its input artifact (prepare ran again)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    cached_stage("evaluate", config, {"prepared": again}, tmp_path / "e2",
                 evaluate(tmp_path / "e2"))  # fmt: skip
    err = capsys.readouterr().err
    assert "changed: config evaluate.bootstrap, evaluate.min_group_rows;" in err, err
    assert "input artifact prepared (a stage before it ran again)" in err
    assert "thread variables: OMP_NUM_THREADS" in err
    assert calls == ["prepare", "evaluate", "prepare", "evaluate"]
    # a rerun of the same: reused, no reason
    cached_stage("evaluate", config, {"prepared": again}, tmp_path / "e3",
                 evaluate(tmp_path / "e3"))  # fmt: skip
    assert capsys.readouterr().err.startswith("reused evaluate")
    assert "first-secret" not in (tmp_path / "cache" / "prepare.key.json").read_text()


def test_the_miss_line_is_json_under_log_format_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sslops run` passes the task's line on to its console: there, one JSON object."""
    from sslops.console import JsonLines
    from sslops.pipeline.local import _ConsoleFilter

    console = io.StringIO()
    monkeypatch.setattr(sys, "stderr", JsonLines(console, run="run"))
    log = io.StringIO()
    shown = _ConsoleFilter(log)
    line = "not reusing evaluate from an earlier run, changed: config evaluate.bootstrap"
    shown.write(f"{line}\n")
    (record,) = [json.loads(text) for text in console.getvalue().splitlines()]
    assert record["message"] == line and record["level"] == "info"


def test_the_bundle_files_a_stage_config_only_where_a_key_it_reads_differs(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """The stages ran with min_auc 0.6 and bootstrap 20, the audit with 0.5 and 21 (as a
    rerun that reused them after a failed gate does): configs/evaluate.json only, since
    only evaluate reads the bootstrap count, and no stage ran with a gate. Before, each of
    the five configs/<stage>.json claimed its stage had run with another audit setting."""
    from sslops.audit import BUNDLE_DIR, audit

    gates = small_config.audit.gates.model_copy(update={"min_auc": 0.5})
    cfg = small_config.model_copy(update={
        "audit": small_config.audit.model_copy(update={"gates": gates}),
        "evaluate": small_config.evaluate.model_copy(update={"bootstrap": 21}),
    })  # fmt: skip
    artifacts = {s: stage_artifacts[s] for s in STAGE_PARAMS}
    bundle = audit(cfg, artifacts, tmp_path / "audit") / BUNDLE_DIR
    assert sorted(p.name for p in (bundle / "configs").iterdir()) == ["evaluate.json"]
    filed = json.loads((bundle / "configs" / "evaluate.json").read_text())
    assert filed["evaluate"]["bootstrap"] == 20  # what evaluate ran with
    assert json.loads((bundle / "config.json").read_text())["audit"]["gates"]["min_auc"] == 0.5


@pytest.mark.reliability
def test_a_gate_only_rerun_reuses_every_stage_and_the_bundle_is_true(
    small_data: dict[str, Path], tmp_path: Path
) -> None:
    """`sslops run` fails its min_auc gate; the rerun with the gate lowered and evaluate's
    bootstrap count changed (under SSLOPS_LOG_FORMAT=json) reruns evaluate alone, saying
    why, and its bundle verifies, reproduces and files no stage config of the failed run."""
    import os
    import subprocess

    from sslops.audit.bundle import generate_keypair
    from tests.conftest import BIN, FAST_OVERRIDES, small_config_dict

    keys = {who: (tmp_path / f"{who}.pem", tmp_path / f"{who}.pub.pem")
            for who in ("issuer", "verifier")}  # fmt: skip
    for private, public in keys.values():
        generate_keypair(private, public)
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config_dict(small_data)))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = tmp_path / "run"
    overrides = [*FAST_OVERRIDES, f"audit.signing.key_file={keys['issuer'][0]}"]

    def run(*more: str, **extra: str) -> subprocess.CompletedProcess[str]:
        command = ["sslops", "run", "--config", str(config), "--out", str(out)]
        for override in [*overrides, *more]:
            command += ["--set", override]
        return subprocess.run(command, capture_output=True, text=True, env={**env, **extra},
                              timeout=1200)  # fmt: skip

    failed = run("audit.gates.min_auc=0.999")
    assert failed.returncode == 3, failed.stderr[-3000:]
    done = run("audit.gates.min_auc=0.5", "evaluate.bootstrap=21", SSLOPS_LOG_FORMAT="json")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    said = {(line["stage"], line["message"]) for line in lines}
    for stage in ("prepare", "pretrain", "finetune", "export"):
        assert (stage, f"reused {stage}: finished by an earlier, interrupted run") in said
    assert ("evaluate", "not reusing evaluate from an earlier run, changed: config "
            "evaluate.bootstrap") in said, sorted(said)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert {s for s, t in summary["stages"].items() if not t["reused"]} == {"evaluate", "audit"}

    bundle = out / "audit" / "bundle"
    assert not (bundle / "configs").exists(), sorted((bundle / "configs").iterdir())
    resolved = json.loads((bundle / "config.json").read_text())
    assert resolved["audit"]["gates"]["min_auc"] == 0.5 and resolved["evaluate"]["bootstrap"] == 21
    verify = subprocess.run(
        ["sslops", "audit", "verify", str(bundle), "--public-key", str(keys["issuer"][1])],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    reproduce = subprocess.run(
        ["sslops", "audit", "reproduce", str(bundle), "--data", str(out / "prepare"),
         "--public-key", str(keys["issuer"][1]), "--key-file", str(keys["verifier"][0]),
         "--out", str(tmp_path / "attestation"), "--verifier", "cachescope"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert reproduce.returncode == 0, reproduce.stdout + reproduce.stderr
