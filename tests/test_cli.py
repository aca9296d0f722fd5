"""The `sslops` command line: help, stage commands, and bad input (one line, exit 2, no output)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

ADULT_CONFIG = str(ROOT / "configs" / "adult.yaml")


def _sslops(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sslops", *args], capture_output=True, text=True, env=env, timeout=300)


def test_help_lists_every_command(cli_env: dict[str, str]) -> None:
    result = _sslops("--help", env=cli_env)
    assert result.returncode == 0
    for command in ("run", "prepare", "pretrain", "finetune", "evaluate", "export", "audit"):
        assert command in result.stdout
    assert "--set" in _sslops("run", "--help", env=cli_env).stdout


def test_python_m_sslops_is_the_sslops_command(cli_env: dict[str, str]) -> None:
    """``python -m sslops`` runs the same CLI: same program name, same exit status."""
    import sys

    def module(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sslops", *args], capture_output=True,
                              text=True, env=cli_env, timeout=300)  # fmt: skip

    assert module("--version").stdout == _sslops("--version", env=cli_env).stdout
    bad = module("config", "--config", ADULT_CONFIG, "--set", "data.labell=x")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown config key 'data.labell'")
    assert module("run", "--help").stdout.startswith("usage: sslops run ")


def test_config_command_prints_the_resolved_config(cli_env: dict[str, str]) -> None:
    result = _sslops(
        "config", "--config", ADULT_CONFIG, "--set", "finetune.label_fraction=0.1", "--json",
        env=cli_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["finetune"]["label_fraction"] == 0.1
    assert resolved["pretrain"]["objective"] == "scarf"  # defaults are filled in


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["data.train=/nonexistent/x.csv"], "/nonexistent/x.csv"),
        (["data.labell=income"], "labell"),
        (["data.label=no_such_column"], "no_such_column"),
        (["data.positive=maybe"], "maybe"),
        (["finetune.label_fraction=2"], "finetune.label_fraction"),
        (["modality=audio"], "modality"),
        (["finetune.fairness.constraint=parity"], "demographic_parity"),
        (["pretrain.epochs"], "KEY=VALUE"),
    ],
)
def test_bad_input_is_one_clear_line_and_leaves_nothing(
    overrides: list[str], named: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    args = ["run", "--config", ADULT_CONFIG, "--out", str(tmp_path / "out")]
    for override in overrides:
        args += ["--set", override]
    result = _sslops(*args, env=cli_env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: ") and named in last
    # No output; a run that failed inside the pipeline keeps its log beside the output
    # folder, named in the error, until a run into that folder succeeds.
    log = tmp_path / ".out.failed.log"
    assert list(tmp_path.iterdir()) in ([], [log]), "a rejected run must leave no output"
    assert log.is_file() == (f"(full log: {log})" in last)


def test_stage_commands_chain(small_config, tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Each stage runs from the shell with the same config the other adapters use."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(small_config.to_json())  # JSON is YAML
    out = {s: tmp_path / s for s in ("prepare", "pretrain", "finetune", "evaluate")}
    steps = [
        ["prepare", "--out", str(out["prepare"])],
        ["pretrain", "--prepared", str(out["prepare"]), "--out", str(out["pretrain"])],
        ["finetune", "--prepared", str(out["prepare"]), "--pretrained", str(out["pretrain"]),
         "--out", str(out["finetune"])],
        ["evaluate", "--prepared", str(out["prepare"]), "--finetuned", str(out["finetune"]),
         "--out", str(out["evaluate"])],
    ]  # fmt: skip
    for step in steps:
        result = _sslops(*step, "--config", str(cfg), env=cli_env)
        assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out["evaluate"] / "metrics.json").read_text())
    assert {"ssl", "mitigated", "baseline"} <= set(metrics["models"])


def test_stage_refuses_a_tampered_input_artifact(
    stage_artifacts: dict[str, Path], small_config, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    import shutil

    prepared = tmp_path / "prepare"
    shutil.copytree(stage_artifacts["prepare"], prepared)
    with open(prepared / "train.parquet", "ab") as fh:
        fh.write(b"\0")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(small_config.to_json())
    result = _sslops(
        "pretrain", "--config", str(cfg), "--prepared", str(prepared),
        "--out", str(tmp_path / "pre"), env=cli_env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "train.parquet" in result.stderr and "modified" in result.stderr
    assert not (tmp_path / "pre").exists()


@pytest.mark.parametrize(("out", "named"), [
    ("pipeline.json", "expected a .yaml file"), ("", "expected a .yaml file"),
    ("missing/pipeline.yaml", "does not exist"),
])  # fmt: skip
def test_compile_refuses_an_out_it_cannot_write_and_leaves_nothing(
    out: str, named: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    result = _sslops("compile", "--out", str(tmp_path / out), env=cli_env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --out") and named in result.stderr
    assert list(tmp_path.iterdir()) == []


def _parsers(parser, path=("sslops",)):
    """(command path, parser) for the top-level parser and every subcommand below it."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def _example_commands(epilog: str) -> list[list[str]]:
    """The `sslops ...` command lines of an epilog: continuation lines joined, comments and
    what follows a shell redirection or pipe cut."""
    import itertools
    import shlex

    text = ("\n" + epilog).replace("\\\n", " ").partition("\nexample")[2]  # from "example(s):"
    commands = [shlex.split(line.strip(), comments=True)[1:]
                for line in text.splitlines() if line.strip().startswith("sslops ")]  # fmt: skip
    return [list(itertools.takewhile(lambda a: a not in {">", "|"}, c)) for c in commands]


def test_every_option_is_explained_and_every_command_has_an_example_that_parses() -> None:
    from sslops.cli import build_parser
    from sslops.config import load_config

    top = build_parser()
    leaves = 0
    for path, parser in _parsers(top):
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{' '.join(path)} {action.option_strings[0]} has no help"
        if parser._subparsers is not None and path != ("sslops", "audit"):
            continue  # a command group: its commands carry the examples
        leaves += 1
        examples = _example_commands(parser.epilog or "")
        assert examples, f"{' '.join(path)} --help shows no example"
        for argv in examples:
            args = top.parse_args(argv)  # an unknown flag or a missing argument exits: fails
            config = getattr(args, "config", None)
            if config is not None and (ROOT / config).is_file():  # a shipped config: it holds
                load_config(ROOT / config, getattr(args, "overrides", None) or [])
    assert leaves >= 17


def test_help_states_defaults_and_wraps_prose(cli_env: dict[str, str]) -> None:
    from sslops.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["render"].format_help()
    assert "--overlay NAME|DIR    kustomize overlay" in text and "(default: onprem)" in text
    assert "(default: None)" not in text and "(default: [])" not in text
    assert max(map(len, text.splitlines())) < 110  # descriptions wrapped, examples as written


def _without_a_reader(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``sslops ARGS`` with stdout a pipe whose reader is gone before it starts (`| head -c1`
    that has had enough, made certain): (status, stderr). Buffered, as a user's shell runs it."""
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(["sslops", *args], stdout=write, stderr=subprocess.PIPE, text=True,
                              env={k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"},
                              timeout=300)  # fmt: skip
    finally:
        os.close(write)
    return done.returncode, done.stderr


@pytest.fixture(scope="module")
def registry(stage_artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sslops.cli import main

    root = tmp_path_factory.mktemp("registry") / "registry"
    assert main(["audit", "file", str(stage_artifacts["audit"]), "--registry", str(root)]) == 0
    return root


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["audit", "list", "--help"],
        ["config", "--config", ADULT_CONFIG],
        ["config", "--config", ADULT_CONFIG, "--json"],
        ["audit", "verify", "{bundle}", "--integrity-only", "--json"],
        ["audit", "list", "--registry", "{registry}", "--json"],
        ["audit", "compare", "{bundle}", "{bundle}"],
    ],
    ids=lambda args: " ".join(a for a in args if a != ADULT_CONFIG),
)
def test_a_command_whose_reader_went_away_ends_quietly_with_141(
    args: list[str], stage_artifacts: dict[str, Path], registry: Path, cli_env: dict[str, str]
) -> None:
    """Short output sits in stdout's buffer until the end: its reader going away showed only at
    interpreter exit, as Python's 'Exception ignored ... BrokenPipeError' and status 120 (found
    by the leftovers review); every command ends as predict's stream does."""
    args = [a.format(bundle=stage_artifacts["audit"], registry=registry) for a in args]
    status, err = _without_a_reader(args, cli_env)
    assert (status, err) == (141, "")
    read = subprocess.run(["sslops", *args], capture_output=True, text=True, env=cli_env,
                          timeout=300)  # fmt: skip
    assert read.returncode == 0 and read.stdout, read.stderr  # with a reader: all of it, 0


def test_a_failure_keeps_its_status_when_the_reader_went_away(
    stage_artifacts: dict[str, Path], cli_env: dict[str, str]
) -> None:
    """A verification without a trusted key is exit 2 whether or not stdout is read."""
    status, err = _without_a_reader(["audit", "verify", str(stage_artifacts["audit"]), "--json"],
                                    cli_env)  # fmt: skip
    assert status == 2 and err.startswith("error: ") and "Exception ignored" not in err, err
