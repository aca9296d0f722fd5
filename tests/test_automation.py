"""The CLI run unattended (CI jobs, cron, Kubernetes): signals, exit statuses, what goes to
stdout and what to stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sslops.config import Config

# Stands in for a stage: inside write_artifact (a temporary folder beside OUT holds a file),
# with a child shell that has a child of its own (as sslops run's kfp.local tasks are
# `sh -ec ... python`), the process gets SIGTERM, as a CI runner or the kubelet sends it.
_TERMINATED_STAGE = """
import os, signal, subprocess, sys, time
from pathlib import Path
import sslops.api
from sslops.artifacts import write_artifact
from sslops.cli import main

def stage(command, cfg, out, inputs):
    with write_artifact(out, command, {}) as tmp:
        (tmp / "half.txt").write_text("half written")
        shell = subprocess.Popen(["sh", "-c", "sleep 600 & echo $! > grandchild.pid; wait"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not Path("grandchild.pid").is_file() or not Path("grandchild.pid").read_text():
            time.sleep(0.05)
        Path("child.pid").write_text(str(shell.pid))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(600)

sslops.api.run_stage = stage
sys.exit(main(sys.argv[1:]))
"""

# The least a table's config needs (no file is read before the stage starts).
_TABLE = ["--set", "data.train=x.csv", "--set", "data.label=y", "--set", "data.positive=1",
          "--set", "data.sensitive=[s]"]  # fmt: skip


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that does not reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pid: int) -> bool:
    """Whether ``pid`` ended (checked for up to a minute; a SIGTERM ends a sleep at once)."""
    for _ in range(600):
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
def test_sigterm_keeps_nothing_partial_stops_children_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "prepare"
    done = subprocess.run(
        [sys.executable, "-c", _TERMINATED_STAGE, "prepare", *_TABLE, "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    child = int((tmp_path / "child.pid").read_text())
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    try:
        assert done.returncode == 143, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            "terminated (SIGTERM); no partial output was kept"
        )
        assert done.stdout == ""
        assert sorted(p.name for p in out.parent.iterdir()) == []  # no .prepare.partial-*
        assert _wait_gone(child) and _wait_gone(grandchild), "orphaned child processes"
    finally:
        for pid in (child, grandchild):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
def test_sigint_to_the_process_alone_stops_its_children_and_exits_130(tmp_path: Path) -> None:
    """SIGINT to the process alone (`kill -INT PID`, a supervisor; Ctrl-C in a terminal
    reaches the whole process group) unwinds the same way, with status 130. Its children
    (`sslops run`'s kfp.local tasks) were once left running."""
    script = _TERMINATED_STAGE.replace("signal.SIGTERM", "signal.SIGINT")
    done = subprocess.run(
        [sys.executable, "-c", script, "prepare", *_TABLE, "--out", str(tmp_path / "prepare")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        # a process started in the background of a shell inherits SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    children = [int((tmp_path / name).read_text()) for name in ("child.pid", "grandchild.pid")]
    try:
        assert done.returncode == 130, done.stderr
        assert done.stderr.strip().splitlines()[-1] == "interrupted; no partial output was kept"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prepare")] == []
        assert all(_wait_gone(pid) for pid in children), "orphaned child processes"
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigint_stays_ignored_where_it_was(tmp_path: Path) -> None:
    """A shell's background job inherits SIGINT ignored (`sslops run ... &` in a script):
    sslops leaves it so, and puts its own handler back after the command."""
    from sslops.sigterm import sigterm_as_interrupt

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupted_run_says_where_its_finished_stages_are(
    small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`sslops run` stopped after a stage finished: one line, status 130, naming the folder
    that keeps the finished stages for a rerun; nothing at --out, no staging folder."""
    from sslops.cli import main
    from sslops.pipeline import local

    out = tmp_path / "run"

    def interrupted(cfg: Any, out: Path) -> dict[str, Any]:
        (out.parent / f".{out.name}.stages" / "prepare-0123").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "_run_staged", interrupted)
    config = tmp_path / "small.yaml"
    config.write_text(small_config.to_json())  # JSON is YAML
    code = main(["run", "--config", str(config), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    stages = tmp_path / ".run.stages"
    assert code == 130 and err[-1] == (
        f"interrupted; no partial output was kept; the stages that finished are kept in "
        f"{stages}, so a rerun into {out} resumes after them (delete that folder to start over)"
    ), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.stages", "small.yaml"]


def test_sigterm_handler_is_restored_after_the_command() -> None:
    from sslops.cli import main

    before = signal.getsignal(signal.SIGTERM)
    assert main(["config", *_TABLE, "--json"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_descendants_lists_children_and_their_children(tmp_path: Path) -> None:
    from sslops.sigterm import descendants

    if not Path("/proc/self/stat").is_file():
        assert descendants(os.getpid()) == []
        return
    shell = subprocess.Popen(["sh", "-c", f"sleep 600 & echo $! > {tmp_path}/gc; wait"])
    try:
        while not (tmp_path / "gc").is_file() or not (tmp_path / "gc").read_text():
            time.sleep(0.05)
        grandchild = int((tmp_path / "gc").read_text())
        assert {shell.pid, grandchild} <= set(descendants(os.getpid()))
        assert grandchild in descendants(shell.pid)
    finally:
        for pid in descendants(shell.pid):
            os.kill(pid, signal.SIGKILL)
        shell.kill()
        shell.wait()


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sslops", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"}, timeout=300,
    )  # fmt: skip


def test_main_help_documents_the_exit_statuses() -> None:
    text = _cli("--help").stdout
    block = text[text.index("exit status") :]
    for code in ("0 ", "1 ", "2 ", "3 ", "130 ", "143 "):
        assert f"\n  {code}" in block, code


def test_a_failed_gate_exits_3_not_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CI job tells "the model is not fit to ship" from "the job is misconfigured"."""
    import sslops.api
    from sslops.cli import main
    from sslops.errors import GateError

    def stage(command: str, *args: object) -> None:
        raise GateError("policy gate failed for model 'ssl': min_auc: roc_auc 0.80 < 0.99")

    monkeypatch.setattr(sslops.api, "run_stage", stage)
    inputs = [f"--{name}=x" for name in ("prepared", "pretrained", "finetuned", "evaluation",
                                         "exported")]  # fmt: skip
    assert main(["audit", *_TABLE, *inputs, "--out", "nowhere"]) == 3
    assert capsys.readouterr().err.startswith("error: policy gate failed for model 'ssl'")
    assert main(["audit", *_TABLE, "--set", "seed=-1", *inputs, "--out", "nowhere"]) == 2


@pytest.mark.parametrize(
    ("line", "gate"),
    [("error: policy gate failed for model 'ssl': min_auc", True),
     ("error: column 'sex' is missing from data.train", False)],
)  # fmt: skip
def test_sslops_run_tells_a_failed_gate_from_a_failed_task(
    tmp_path: Path, line: str, gate: bool
) -> None:
    """The audit task's error line, read from kfp.local's output, sets the exception type
    (and so the exit status) of the whole run."""
    from sslops.config import Config
    from sslops.errors import GateError
    from sslops.pipeline.local import PipelineFailed, _run_pipeline

    def pipeline(config_json: str) -> None:
        print(line)
        raise RuntimeError("Task 'audit' finished with status FAILURE")

    cfg = Config.model_validate({"data": {"train": "x.csv", "label": "y", "positive": 1,
                                          "sensitive": ["s"]}})  # fmt: skip
    with pytest.raises(PipelineFailed) as failed:
        _run_pipeline(pipeline, cfg, tmp_path / "run.log", tmp_path / "kept.log")
    assert isinstance(failed.value, GateError) is gate
    assert str(failed.value).startswith(line.removeprefix("error: "))


def _signed_bundle(tmp_path: Path) -> Path:
    """A small bundle sealed and signed as the audit stage does (two files)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from sslops.audit.bundle import generate_keypair, sign_manifest, write_manifest

    generate_keypair(tmp_path / "issuer.pem", tmp_path / "issuer.pub.pem")
    key = load_pem_private_key((tmp_path / "issuer.pem").read_bytes(), None)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model_card.md").write_text("# card\n")
    (bundle / "gates.json").write_text('{"overall": "passed"}\n')
    write_manifest(bundle, key)  # type: ignore[arg-type]
    sign_manifest(bundle, key)  # type: ignore[arg-type]
    return bundle


def test_audit_verify_json_is_the_only_stdout_with_the_same_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from sslops.cli import main

    bundle = _signed_bundle(tmp_path)
    public = ["--public-key", str(tmp_path / "issuer.pub.pem")]

    assert main(["audit", "verify", str(bundle), *public, "--json"]) == 0
    done = capsys.readouterr()
    report = json.loads(done.out)
    assert report["verified"] is True and report["trust"] == "public-key"
    assert report["signed"] is True and report["files"] == 2 and report["problems"] == []
    assert report["key_fingerprint"] and done.err == ""

    assert main(["audit", "verify", str(bundle), "--json"]) == 2  # no trusted key given
    done = capsys.readouterr()
    assert json.loads(done.out)["verified"] is False
    assert json.loads(done.out)["trust"] == "none"
    assert "not checked against a trusted key" in done.err

    (bundle / "model_card.md").write_text("# edited\n")
    assert main(["audit", "verify", str(bundle), *public, "--json"]) == 1
    done = capsys.readouterr()
    report = json.loads(done.out)
    assert report["verified"] is False
    assert any("model_card.md" in problem for problem in report["problems"])
    assert done.err.startswith("error: ") and "failed verification" in done.err


@pytest.mark.parametrize("force_color", [None, "1"], ids=["plain", "FORCE_COLOR"])
def test_run_summary_lines_stay_whole_in_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch, force_color: str | None
) -> None:
    """What sslops run ends with, written to a pipe (a CI log): each line whole, so that
    `grep 'policy demographic_parity <= 0.02: met'` finds it, and no trailing blanks. Also
    where the CI sets FORCE_COLOR (for coloured logs): rich coloured each number and path
    inside the lines, and the grep found nothing."""
    from sslops.cli import _print_summary

    monkeypatch.delenv("NO_COLOR", raising=False)
    if force_color is None:
        monkeypatch.delenv("FORCE_COLOR", raising=False)
    else:
        monkeypatch.setenv("FORCE_COLOR", force_color)

    metrics = {"accuracy": 0.8, "roc_auc": 0.9, "dp_difference": 0.01, "eo_difference": 0.05}
    summary = {
        "ssl": metrics, "mitigated": metrics, "baseline": metrics, "sensitive": "sex",
        "transfer": "ensemble",
        "fairness": {
            "selected": "evidence+penalty=100", "selected_mechanism": "evidence_penalty",
            "constraint": "demographic_parity", "max_gap": 0.02, "policy_met_on_validation": True,
            "gap_measured_on": "validation (286 rows) + 1208 unlabeled training rows held out "
            "of every penalty",
        },
        "onnx": {"path": str(tmp_path / "a-long-folder-name" / "audit" / "bundle" / "model.onnx"),
                 "max_abs_diff": 3.6e-07},
        "audit": {"path": str(tmp_path / "a-long-folder-name" / "audit" / "bundle")},
    }  # fmt: skip
    _print_summary(summary, tmp_path)
    lines = capsys.readouterr().out.splitlines()
    mitigated = [line for line in lines if line.startswith("Mitigated:")]
    assert len(mitigated) == 1 and mitigated[0].endswith("held out of every penalty")
    assert "policy demographic_parity <= 0.02: met" in mitigated[0]
    onnx = [line for line in lines if line.startswith("ONNX model:")]
    assert len(onnx) == 1 and onnx[0].endswith("(max |onnx - torch| = 3.6e-07)")
    assert all(line == line.rstrip() for line in lines[lines.index(mitigated[0]) :])


def test_every_subcommand_help_states_its_exit_statuses() -> None:
    import argparse

    from sslops.cli import build_parser

    def subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in set(action.choices.values()):
                    found += [child, *subcommands(child)]
        return found

    parsers = subcommands(build_parser())
    assert len(parsers) > 20
    for parser in parsers:
        text = " ".join(parser.format_help().split()).lower()
        assert "exit status" in text or "exit 0" in text, parser.prog
        assert any(f" 2 {word}" in text for word in ("unusable", "when", "for")), parser.prog
