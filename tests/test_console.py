"""What sslops writes on stderr for a log shipper: SSLOPS_LOG_FORMAT=json (one JSON object a
line, UTC times, the stage and run it came from), and the timing and colour-free log of the
tasks sslops run starts (found by the observe review)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_OVERRIDES, ROOT

ADULT_CONFIG = str(ROOT / "configs" / "adult.yaml")
KEYS = ["time", "level", "logger", "stage", "run", "message"]


def _records(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line as the JSON object it must be, checked for its keys and UTC time."""
    records = [json.loads(line) for line in stderr.splitlines()]
    for record in records:
        assert list(record) == KEYS, record
        assert record["time"].endswith("Z"), record
        stamp = datetime.fromisoformat(record["time"])
        assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
        assert abs((datetime.now(UTC) - stamp).total_seconds()) < 3600  # now, not local time
    return records


def test_a_stage_that_fails_inside_sslops_run_is_one_json_error_naming_the_stage(
    small_data: dict[str, Path], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A real kfp.local run whose prepare task refuses its input: every stderr line is a JSON
    object; the task's own error line is there once, as an error of stage prepare, with no
    KFP traceback; the last line is the run's error, naming the kept log, which is text."""
    args = [
        "sslops", "run", "--config", ADULT_CONFIG, "--out", str(tmp_path / "out"),
        "--set", f"data.train={small_data['train']}", "--set", f"data.test={small_data['test']}",
        "--set", "prepare.ood=native-country == United States",
    ]  # fmt: skip
    for override in FAST_OVERRIDES:
        args += ["--set", override]
    env = {**cli_env, "SSLOPS_LOG_FORMAT": "json"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    records = _records(result.stderr)
    assert {r["run"] for r in records} == {"out"} and {r["logger"] for r in records} == {"sslops"}
    cause = "prepare.ood 'native-country == United States' holds for no row of the data"
    task_errors = [r for r in records if r["stage"] == "prepare" and r["level"] == "error"]
    assert [r["message"].startswith(cause) for r in task_errors] == [True, False]
    assert task_errors[1]["message"].startswith("[FAILURE] prepare")
    last = records[-1]
    assert last["level"] == "error" and last["message"].startswith(cause)
    assert last["message"].endswith(f"(full log: {tmp_path / '.out.failed.log'})")
    assert "Traceback" not in result.stderr and "KFP Executor" not in result.stderr
    assert result.stdout == ""
    # The kept log (run.log) is text only: the tasks, which write it, are given the text
    # format, as their JSON objects among kfp.local's lines made one file of two formats (and
    # hid the task's error from the console; found by the logs review).
    log = (tmp_path / ".out.failed.log").read_text(encoding="utf-8").splitlines()
    assert not [line for line in log if line.startswith('{"time": ')], log
    assert [line for line in log if line.strip().startswith(f"error: {cause}")], log


def test_a_bad_log_format_is_one_error_line(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "SSLOPS_LOG_FORMAT": "yaml"}
    result = subprocess.run(["sslops", "config", "--config", ADULT_CONFIG], capture_output=True,
                            text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "error: SSLOPS_LOG_FORMAT='yaml' is not a log format; expected text or json\n"
    )


def test_progress_lines_and_library_warnings_become_one_object_each() -> None:
    """The non-terminal progress line and a library's warning (its message and the source
    line Python prints below it) each make one object, at info and warning."""
    from sslops.console import JsonLines
    from sslops.progress import task_progress

    out = io.StringIO()
    with (
        contextlib.redirect_stderr(JsonLines(out, stage="pretrain")),
        task_progress("pretrain (scarf, 1 process)", 2) as progress,
    ):
        progress.update(1, "loss 5.5245")
        print("note: a last line without its line break", end="", file=sys.stderr)
        sys.stderr.finish()
    line, note = _records(out.getvalue())
    assert (line["level"], line["stage"], line["message"]) == (
        "info", "pretrain", "pretrain (scarf, 1 process) 1/2 loss 5.5245",
    )  # fmt: skip
    assert (note["level"], note["message"]) == ("info", "note: a last line without its line break")
    # Python's own warning printer (pytest replaces it in this process), in a fresh one.
    code = (
        "import sys, warnings\n"
        "from sslops.console import JsonLines\n"
        "sys.stderr = JsonLines(sys.__stderr__, stage='finetune')\n"
        "warnings.warn('lbfgs failed to converge', UserWarning)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    (warning,) = _records(done.stderr)
    assert (warning["level"], warning["stage"]) == ("warning", "finetune")
    assert warning["message"] == "<string>:4: UserWarning: lbfgs failed to converge"


def test_a_bug_is_one_critical_object_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sslops import cli

    def crash(args: Any) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setenv("SSLOPS_LOG_FORMAT", "json")
    monkeypatch.setattr(cli, "_main", crash)
    assert cli.main(["pretrain", "--out", "x", "--prepared", "y"]) == 1
    (record,) = _records(capsys.readouterr().err)
    assert (record["level"], record["stage"]) == ("critical", "pretrain")
    assert record["message"].startswith("Traceback (most recent call last):")
    assert record["message"].endswith("RuntimeError: a bug")


def _kfp_lines(task: str, succeeded: bool) -> str:
    """The lines kfp.local's own logging writes around a task, colour codes and all."""
    from kfp.local import logging_utils, status

    name = logging_utils.format_task_name(task)
    done = logging_utils.format_status(
        status.Status.SUCCESS if succeeded else status.Status.FAILURE
    )
    return (
        f"12:00:00.000 - INFO - Executing task {name}\n"
        f"12:00:00.001 - INFO - Streamed logs:\n\n"
        f"12:00:05.000 - INFO - Task {name} finished with status {done}\n"
    )


def test_the_run_log_has_no_colour_codes_and_each_task_is_timed() -> None:
    """run.log kept kfp.local's ANSI colour codes (noise in a log store); the console's task
    lines now carry the task's wall time, which summary.json records as ``stages``."""
    from sslops.console import JsonLines
    from sslops.pipeline.local import _ConsoleFilter

    log, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(JsonLines(out)):
        console = _ConsoleFilter(log)
    console.write(
        _kfp_lines("prepare", True).replace(
            "Streamed logs:\n", "Streamed logs:\nreused prepare: finished earlier\n"
        )
    )
    console.write(_kfp_lines("pretrain", True))
    assert "\x1b[" not in log.getvalue() and "Executing task 'prepare'" in log.getvalue()
    assert list(console.stages) == ["prepare", "pretrain"]
    assert [console.stages[t]["reused"] for t in console.stages] == [True, False]
    for timing in console.stages.values():
        assert isinstance(timing["seconds"], float) and timing["seconds"] >= 0
        assert datetime.fromisoformat(timing["started"]).utcoffset().total_seconds() == 0
    records = _records(out.getvalue())
    assert [(r["stage"], r["message"].split()[:2]) for r in records] == [
        ("prepare", ["reused", "prepare:"]), ("prepare", ["[ok]", "prepare"]),
        ("pretrain", ["[ok]", "pretrain"]),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "stage", "message"),
    [
        (["run", "--bogus"], None, "sslops: unrecognized arguments: --bogus"),
        (["predict"], None, "sslops predict: the following arguments are required: --model, "
         "--data, --out"),
        (["pretrain", "--config", "c.yaml"], "pretrain", "sslops pretrain: the following "
         "arguments are required: --prepared, --out"),
    ],
)  # fmt: skip
def test_a_wrong_command_line_is_one_json_error_with_its_usage(
    argv: list[str], stage: str | None, message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """argparse printed its usage and error as plain lines even with the JSON format (found
    by the logs review): now one error object, the usage line a key of its own, exit 2."""
    from sslops import cli

    monkeypatch.setenv("SSLOPS_LOG_FORMAT", "json")
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    (record,) = [json.loads(line) for line in captured.err.splitlines()]
    assert list(record) == [*KEYS, "usage"] and captured.out == ""
    assert (record["level"], record["stage"], record["message"]) == ("error", stage, message)
    command = " ".join(["sslops", *argv[:1]]) if argv[0] != "run" else "sslops"
    assert record["usage"].startswith(f"usage: {command} [-h]")
    assert "\n" not in record["usage"]
    monkeypatch.setenv("SSLOPS_LOG_FORMAT", "text")  # the text format is argparse's own
    with pytest.raises(SystemExit):
        cli.main(argv)
    plain = capsys.readouterr().err
    assert plain.startswith("usage: ") and plain.endswith(f"error: {message.split(': ', 1)[1]}\n")


# What a torchrun job's shared stderr holds: a rank's own JSON object, torchrun's agent lines
# (torch's glog prefix) and, when it fails, its traceback, which ends its output.
TORCHRUN_LIKE = r"""
import sys
w = sys.stderr.write
w('{"time": "t", "level": "info", "logger": "sslops", "stage": "pretrain", "run": null, '
  '"message": "a rank", "rank": 1}\n')
w("W1202 02:31:09.542000 17204 api.py:1028] Sending process 17218 closing signal SIGTERM\n")
w("E1202 02:31:09.709000 17204 api.py:1002] failed (exitcode: 2) local_rank: 0\n")
w("Traceback (most recent call last):\n  File \"run.py\", line 1, in main\n")
w("torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n====\nFailures:\n")
sys.exit(1)
"""


def test_torchrun_s_own_lines_become_objects_and_a_rank_s_pass_as_they_are(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """launch_torchrun let torchrun write on the process's stderr: under the JSON format its
    agent's lines (a rank's failure, a restart) were plain text among the ranks' objects
    (found by the logs review). Now read through a pipe: the rank's object unchanged, each
    agent line one object at its glog level, the closing traceback one error object."""
    from sslops.console import JsonLines
    from sslops.pretrain.launch import _run_torchrun

    monkeypatch.setenv("SSLOPS_LOG_FORMAT", "json")
    monkeypatch.setattr(sys, "stderr", JsonLines(sys.stderr, stage="pretrain"))
    status = _run_torchrun([sys.executable, "-c", TORCHRUN_LIKE], dict(os.environ))
    assert status == 1
    rank, *agent = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert rank == {"time": "t", "level": "info", "logger": "sslops", "stage": "pretrain",
                    "run": None, "message": "a rank", "rank": 1}  # fmt: skip
    for record in agent:
        assert list(record) == KEYS and (record["logger"], record["stage"]) == (
            "torchrun", "pretrain",
        )  # fmt: skip
    assert [r["level"] for r in agent] == ["warning", "error", "error"]
    assert agent[0]["message"].endswith("Sending process 17218 closing signal SIGTERM")
    assert agent[2]["message"].startswith("Traceback (most recent call last):\n  File")
    assert agent[2]["message"].endswith("ChildFailedError:\n====\nFailures:")


@pytest.mark.ddp
def test_every_line_of_two_torchrun_ranks_is_json_with_its_rank(
    small_config: Any, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """sslops pretrain with 2 local processes under SSLOPS_LOG_FORMAT=json: the variable
    reached the ranks, yet they wrote plain lines (heartbeats, rank 0's progress; found by the
    logs review). Now every stderr line is an object; a rank's name its rank."""
    from sslops.prepare import prepare

    prepared = prepare(small_config, tmp_path / "prepare")
    config = tmp_path / "config.json"
    config.write_text(small_config.to_json(), encoding="utf-8")
    settings = ["pretrain.epochs=1", "pretrain.processes_per_node=2", "pretrain.threads=1",
                "pretrain.knn_every=0", "pretrain.log_level=debug",
                "pretrain.heartbeat_seconds=0.000001"]  # fmt: skip
    args = ["sslops", "pretrain", "--config", str(config), "--prepared", str(prepared),
            "--out", str(tmp_path / "pretrain")]  # fmt: skip
    for setting in settings:
        args += ["--set", setting]
    env = {**cli_env, "SSLOPS_LOG_FORMAT": "json"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stderr.splitlines()]
    beats = [r for r in records if r["message"].startswith("heartbeat rank ")]
    assert {(r["rank"], r["level"], r["logger"]) for r in beats} == {
        (0, "info", "sslops.pretrain"), (1, "debug", "sslops.pretrain"),
    }  # fmt: skip
    for record in beats:
        assert record["message"].startswith(f"heartbeat rank {record['rank']}/2 step ")
    (progress,) = [r for r in records if r["message"].startswith("pretrain (")]
    assert progress["rank"] == 0 and progress["stage"] == "pretrain"
    assert {r["stage"] for r in records} == {"pretrain"}


def test_a_pipeline_task_writes_json_objects_under_the_json_format(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A KFP component (on a cluster: platform.log_format json) wrote plain lines whatever
    SSLOPS_LOG_FORMAT said (found by the logs review): now its stdout and stderr lines are
    objects naming its stage, and a user error is one error object, exit status 2."""
    from types import SimpleNamespace

    from sslops.pipeline import tasks

    monkeypatch.setenv("SSLOPS_LOG_FORMAT", "json")
    config = {"data": {"train": str(tmp_path / "missing.csv"), "label": "y", "positive": 1,
                       "sensitive": ["s"]}}  # fmt: skip
    out = SimpleNamespace(path=str(tmp_path / "prepared"), metadata={})
    card = SimpleNamespace(path=str(tmp_path / "datacard.md"), metadata={})
    with pytest.raises(SystemExit) as stopped:
        tasks.prepare_task(json.dumps(config), out, card)
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.err.splitlines()]
    assert captured.out == "" and records and {r["stage"] for r in records} == {"prepare"}
    assert all(list(r) == KEYS for r in records)
    assert records[-1]["level"] == "error" and "missing.csv" in records[-1]["message"]
    with tasks._user_errors("export"):
        print("a note a stage printed on stdout")  # a pod's log: stdout is no result stream
    (note,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert (note["stage"], note["message"]) == ("export", "a note a stage printed on stdout")
    monkeypatch.setenv("SSLOPS_LOG_FORMAT", "text")  # the default: plain lines, as before
    with pytest.raises(SystemExit):
        tasks.prepare_task(json.dumps(config), out, card)
    plain = capsys.readouterr().err
    assert plain.startswith("error: ") and "missing.csv" in plain and "{" not in plain
