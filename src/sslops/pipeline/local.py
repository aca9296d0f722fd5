"""``sslops run``: the KFP pipeline executed locally through ``kfp.local.SubprocessRunner``.

The run is staged in a hidden sibling of the output folder and renamed into place
only when every task succeeded, so a failed or interrupted run leaves no partial
output (and an earlier successful run in that folder is kept until then).

Each finished stage is also kept in ``.<out>.stages`` (see
:mod:`sslops.pipeline.stage_cache`) until the run succeeds, so running the same
command again after a kill reuses them and restarts the interrupted stage. A lock
file (``.<out>.lock``) keeps two runs from writing the same folder at once and lets
a run remove what a killed run into the same folder left behind. The log of a failed
run is kept in ``.<out>.failed.log`` (the error names it) until a run into the same
folder succeeds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sslops import __version__
from sslops.artifacts import (
    LOCATIONS_ENV,
    OLD_PREFIX,
    check_replaceable,
    move_into_place,
    output_lock,
    sha256_file,
    staging_folder,
    write_json,
)
from sslops.audit.bundle import load_signing_key
from sslops.audit.gates import GATE_FAILED
from sslops.audit.registry import BUNDLES
from sslops.config import Config
from sslops.console import LOG_FORMAT_ENV, say
from sslops.data.datacard import few_class_note, label_note
from sslops.errors import GateError, SslopsError, describe_os_error
from sslops.pipeline import stage_cache
from sslops.prepare import check_inputs
from sslops.progress import PROGRESS_LINE
from sslops.sigterm import stop_descendants_with

# (task name, output name) -> folder in the run directory
_OUTPUTS = {
    ("prepare", "prepared"): "prepare",
    ("pretrain", "pretrained"): "pretrain",
    ("finetune", "finetuned"): "finetune",
    ("evaluate", "evaluation"): "evaluate",
    ("export", "onnx_model"): "export",
    ("audit", "bundle"): "audit",
}
SUMMARY_KEYS = ("accuracy", "roc_auc", "dp_difference", "eo_difference")
# summary.json's layout: raised when a key is removed, renamed or changes meaning (adding a
# key does not), so a tool can refuse a layout it was not written for.
SUMMARY_FORMAT = 1


class PipelineFailed(SslopsError):
    """A task of the local pipeline run failed; its own error was printed above."""


class PipelineGateFailed(PipelineFailed, GateError):
    """The audit task's policy gate failed (the CLI's exit status 3, not 2)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '(?P<task>[\w-]+)'")
_TASK_DONE = re.compile(r"Task '(?P<task>[\w-]+)' finished with status (?P<status>\w+)")


class _ConsoleFilter(io.TextIOBase):
    """Everything kfp.local prints goes to the log file (without its colour codes); the
    console gets task status, stage progress and error lines only. The console is
    ``sys.stderr`` as the run starts (a notebook's cell output, or what the caller redirected
    it to), not the process's own stderr, which a notebook shows nowhere.

    ``stages`` records each task's wall time as kfp.local ran it (process start, imports,
    the stage's work, its artifact) and whether it was reused from an interrupted run."""

    def __init__(self, log: io.TextIOBase) -> None:
        self.log, self._pending = log, ""
        self.console = sys.stderr
        self.error_lines: list[str] = []
        self.stages: dict[str, dict[str, Any]] = {}
        self._task: str | None = None
        self._started = 0.0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = _ANSI.sub("", text)
        self.log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._echo(line.strip())
        return len(text)

    def _echo(self, line: str) -> None:
        started, done = _TASK_START.search(line), _TASK_DONE.search(line)
        if started:
            self._task, self._started = started["task"], time.monotonic()
            self.stages[self._task] = {
                "started": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": None,
                "reused": False,
            }  # fmt: skip
        elif done:
            mark = "ok" if done["status"] == "SUCCESS" else done["status"]
            timing = self.stages.get(done["task"])
            took = ""
            if timing is not None and done["task"] == self._task:
                timing["seconds"] = round(time.monotonic() - self._started, 1)
                took = f"  {timing['seconds']:.1f} s"
            say(self.console, f"[{mark}] {done['task']}{took}", indent="  ", stage=done["task"],
                level="info" if mark == "ok" else "error")  # fmt: skip
        elif line.startswith(("reused ", "not reusing ")):
            if line.startswith("reused ") and self._task in self.stages:
                self.stages[self._task]["reused"] = True
            say(self.console, line, indent="    ", stage=self._task)
        elif line.startswith("error:"):
            self.error_lines.append(line)
            say(self.console, line, indent="  ", stage=self._task, level="error")
        elif PROGRESS_LINE.match(line):
            say(self.console, line, indent="    ", stage=self._task)


def _absolute_paths(cfg: Config) -> Config:
    """Data paths resolved against the caller's working directory (tasks may run elsewhere)."""
    data = cfg.data.model_copy()
    for key in ("train", "test"):
        value = getattr(data, key)
        if value and not value.startswith("package:"):
            setattr(data, key, str(Path(value).expanduser().resolve()))
    audit = cfg.audit.model_copy()
    if audit.registry:  # the registry outlives the run: keep where the caller meant
        audit.registry = str(Path(audit.registry).expanduser().resolve())
    return cfg.model_copy(update={"data": data, "audit": audit})


def _collect(pipeline_root: Path, staging: Path) -> None:
    runs = [p for p in pipeline_root.iterdir() if p.is_dir()]
    if len(runs) != 1:
        raise SslopsError(f"expected one pipeline run under {pipeline_root}, found {len(runs)}")
    for (task, output), folder in _OUTPUTS.items():
        source = runs[0] / task / output
        if not source.is_dir():
            raise SslopsError(f"pipeline task {task!r} did not produce {output!r} at {source}")
        shutil.move(str(source), str(staging / folder))


def _summary_numbers(model: dict[str, Any], sensitive: str) -> dict[str, Any]:
    """One model's :data:`SUMMARY_KEYS`, an undefined one (NaN: a ROC AUC on one class, a gap
    with fewer than two groups to compare) as null, not the bare NaN that is no JSON; with
    ``gap_notes`` (gap -> why it is undefined or partly defined) where evaluate wrote any."""
    out: dict[str, Any] = {
        key: None if model[key] != model[key] else model[key] for key in SUMMARY_KEYS
    }
    notes = {k: v for k, v in model.get("gap_notes", {}).get(sensitive, {}).items()
             if k in SUMMARY_KEYS}  # fmt: skip
    if notes:
        out["gap_notes"] = notes
    if "policy_gap" in model:  # the constrained gap, the largest over the policy's columns
        gap = model["policy_gap"]
        out["policy_gap"] = None if gap is None or gap != gap else gap
        out["policy_gap_column"] = model.get("policy_gap_column")
    return out


def summary_fairness(fairness: dict[str, Any], first: str) -> dict[str, Any]:
    """summary.json's ``fairness`` from finetune.json's: which candidate the policy deployed
    as ``mitigated`` (it need not use the SSL encoder) and the columns the policy bounds
    (``sensitive``: the largest gap over them, each on its own; each model's ``policy_gap``
    is that on test). The models' dp_difference / eo_difference are by ``first`` alone, so a
    policy on sex and race was read off the gaps by sex (found by the multisens review)."""
    out = {
        key: fairness[key]
        for key in ("constraint", "max_gap", "selected", "selected_mechanism",
                    "selected_description", "policy_met_on_validation")
    }  # fmt: skip
    out["sensitive"] = [str(c) for c in fairness.get("sensitive") or [first]]
    return out


def build_summary(run_dir: Path) -> dict[str, Any]:
    """The stable contract other tools read from ``summary.json``."""
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text(encoding="utf-8"))
    exported = json.loads((run_dir / "export" / "export.json").read_text(encoding="utf-8"))
    summary: dict[str, Any] = {"summary_format": SUMMARY_FORMAT, "sslops_version": __version__}
    summary |= {
        name: _summary_numbers(metrics["models"][name], metrics["sensitive"])
        for name in ("ssl", "mitigated", "baseline")
    }
    summary["sensitive"] = metrics["sensitive"]
    finetuned = json.loads((run_dir / "finetune" / "finetune.json").read_text(encoding="utf-8"))
    summary["transfer"] = finetuned.get("transfer", "linear_probe")  # how `ssl` was built
    fairness = finetuned["fairness"]
    summary["fairness"] = summary_fairness(fairness, metrics["sensitive"])
    # Where the constrained gap was measured (images and series: validation only).
    gap_rows = fairness.get("gap_rows", {}).get(fairness["constraint"])
    summary["fairness"]["gap_measured_on"] = gap_rows or "validation"
    # What the selection's figures do not show (a constant predictor taken, a gap measured
    # on few positives), as finetune warned: a CI job reads them without the logs.
    summary["fairness"]["selection_caveats"] = list(fairness.get("selection_caveats") or [])
    card_path = run_dir / "prepare" / "datacard.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    # Columns the data card suspects of being undeclared identifiers or free text.
    summary["identifier_like_columns"] = sorted(card.get("identifier_like_train") or {})
    # A label of more than two values, trained one-vs-rest: which values count as negative.
    summary["label_note"] = label_note(str(card.get("label", "")), card.get("label_values"))
    # A split with fewer than 10 rows of a class: its metrics (validation: model selection)
    # rest on those rows.
    summary["few_class_note"] = few_class_note(
        str(card.get("label", "")), card.get("few_class_rows")
    )
    # Images and series: what prepare changed (channels, sizes, lengths, gaps), the files it
    # left out and the classes a split lacks, as it printed them.
    summary["data_notes"] = [str(n) for n in card.get("notes") or []]
    bundle = run_dir / "audit" / "bundle"
    quant = exported.get("quantization") or {}
    gates = json.loads((bundle / "gates.json").read_text(encoding="utf-8"))
    summary["onnx"] = {
        "path": str((bundle / "model.onnx").resolve()),
        "model": exported["model"],
        "max_abs_diff": exported["parity"]["max_abs_diff"],
        "labels_identical": exported["parity"]["labels_identical"],
        "inputs": exported.get(
            "inputs_description", "raw columns (preprocessing inside the graph)"
        ),
        "int8_path": str((bundle / quant["file"]).resolve()) if quant else None,
        "int8_accuracy_change_points": quant.get("accuracy_change_points"),
    }
    summary["audit"] = {
        "path": str(bundle.resolve()),
        "zip": str((run_dir / "audit" / "bundle.zip").resolve()),
        "model_card": str((bundle / "model_card.html").resolve()),
        "model_card_pdf": str((bundle / "model_card.pdf").resolve()),
        "manifest": str((bundle / "manifest.json").resolve()),
        "signed": (bundle / "signature.json").is_file(),
        "gates": gates["overall"],
        "filed": _filed(bundle),
    }
    return summary


def _filed(bundle: Path) -> str | None:
    """The bundle's file in the audit registry, when ``audit.registry`` filed it."""
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    registry = config["audit"].get("registry")
    if not registry:
        return None
    filed = Path(registry) / BUNDLES / f"{sha256_file(bundle / 'manifest.json')}.zip"
    return str(filed) if filed.is_file() else None


def failure_log(out: Path) -> Path:
    """Where the log of a failed run into ``out`` is kept (the error names it): beside the
    output folder, replaced by the next failed run into it and removed by a successful one."""
    return out.parent / f".{out.name}.failed.log"


def _run_pipeline(
    pipeline: Any, cfg: Config, log_path: Path, kept: Path
) -> dict[str, dict[str, Any]]:
    """Run ``pipeline``; returns each task's timing (:attr:`_ConsoleFilter.stages`)."""
    say(sys.stderr, "running the pipeline locally (kfp.local); full log: run.log in the output "
        "folder")  # fmt: skip
    with open(log_path, "w", encoding="utf-8") as log:
        console = _ConsoleFilter(log)
        with warnings.catch_warnings(), contextlib.redirect_stdout(console):
            warnings.filterwarnings(
                "ignore", message="You may be attemping", category=RuntimeWarning
            )
            warnings.filterwarnings(
                "ignore", message=".*have no effect in the current local runner"
            )
            try:
                pipeline(config_json=cfg.to_json())
                return console.stages
            except RuntimeError as exc:
                failure = str(exc)
    # Keep the log of a failed run outside the (discarded) staging folder. A disk too full
    # for the copy must not hide the task's error behind the copy's, nor leave half a log.
    try:
        shutil.copyfile(log_path, kept)
        where = f"full log: {kept}"
    except OSError as exc:
        kept.unlink(missing_ok=True)
        where = f"its log could not be kept: {describe_os_error(exc)}"
    cause = (
        console.error_lines[-1].removeprefix("error: ")
        if console.error_lines
        else _ANSI.sub("", failure)
    )
    failed = PipelineGateFailed if cause.startswith(GATE_FAILED) else PipelineFailed
    raise failed(f"{cause} ({where})")


def _clean_leftovers(out: Path) -> None:
    """Under the lock: remove what runs into ``out`` that were killed left beside it, and say
    so. A run killed between moving the earlier ``out`` aside and renaming its own staging
    folder into place left no ``out`` but the earlier one under ``.<out>.old-*``: that one is
    put back (it was complete; the killed run's staging folder is removed like any other)."""
    olds = sorted(out.parent.glob(f"{OLD_PREFIX.format(name=out.name)}*"),
                  key=lambda p: p.stat().st_mtime)  # fmt: skip
    if olds and not out.exists():
        olds.pop().rename(out)
        print(f"restored {out}: a run killed while replacing it had moved it aside",
              file=sys.stderr)  # fmt: skip
    for stale in [*out.parent.glob(f".{out.name}.partial-*"), *olds]:
        shutil.rmtree(stale, ignore_errors=True)
        print(f"removed {stale}, left by an interrupted run into {out}", file=sys.stderr)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``.<out>.lock`` (:func:`sslops.artifacts.output_lock`); then remove the staging
    folders of killed runs into ``out``."""
    with output_lock(out, "run"):
        _clean_leftovers(out)
        yield


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (for the task subprocesses) and restore them afterwards."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_local(cfg: Config, out: Path) -> dict[str, Any]:
    """Run the whole pipeline locally into ``out``; returns the summary."""
    check_inputs(cfg)  # a missing file or column fails here, before any task starts
    cfg = _absolute_paths(cfg)
    load_signing_key(cfg.audit.signing)  # so does a signing key the audit would refuse
    out = Path(out).resolve()
    check_replaceable(out, "sslops run folder", "summary.json")
    stages = out.parent / f".{out.name}.stages"
    tempfile.gettempdir()  # this process keeps its own temporary folder (cached from here on)
    with _exclusive(out):
        # again under the lock: another command may have written out since the check above
        check_replaceable(out, "sslops run folder", "summary.json")
        try:
            # The task subprocesses inherit these: kfp.local's task command makes a `mktemp -d`
            # folder per task and never removes it; under TMPDIR here, they go with the run.
            # Their output is run.log, a file a person reads, in text whatever the console's
            # SSLOPS_LOG_FORMAT (_ConsoleFilter writes the console's lines in that format).
            run_env = {stage_cache.ENV: str(stages), LOG_FORMAT_ENV: "text"}
            with (
                tempfile.TemporaryDirectory(prefix="sslops-tasks-") as tasks_tmp,
                _environment(run_env | {"TMPDIR": tasks_tmp}),
            ):
                summary = _run_staged(cfg, out)
        except (PipelineFailed, KeyboardInterrupt) as exc:  # Ctrl-C and SIGTERM say it too
            if stages.is_dir() and any(stages.iterdir()):
                kept = (f"the stages that finished are kept in {stages}, so a rerun into "
                        f"{out} resumes after them (delete that folder to start over)")  # fmt: skip
                raise type(exc)(f"{exc}; {kept}" if str(exc) else kept) from None
            raise
        shutil.rmtree(stages, ignore_errors=True)
        failure_log(out).unlink(missing_ok=True)  # an earlier failed run's: this one succeeded
    return summary


def _moved(value: Any, staging: str, out: str) -> Any:
    """``value`` with each path under ``staging`` naming ``out`` instead. Replaced in the
    strings, not in their JSON text, where an accent in the folder (``\\u00e9``) or a quote
    is escaped and the staging folder went unnoticed."""
    if isinstance(value, str):
        return value.replace(staging, out)
    if isinstance(value, dict):
        return {key: _moved(item, staging, out) for key, item in value.items()}
    if isinstance(value, list):
        return [_moved(item, staging, out) for item in value]
    return value


def _run_staged(cfg: Config, out: Path) -> dict[str, Any]:
    # Locked while it runs, so a stage command writing the same folder meanwhile
    # (write_artifact) does not take it for a killed run's.
    with staging_folder(out) as staging:
        return _run_in(staging, cfg, out)


@contextlib.contextmanager
def kfp_local(pipeline_root: str) -> Iterator[None]:
    """kfp.local set up for the block (tasks as subprocesses, outputs under
    ``pipeline_root``), then its process-wide configuration given back: after a run the
    program's own ``kfp.local.init`` (or none) holds again, not a root the run removed."""
    import kfp.local
    from kfp.local.config import LocalExecutionConfig

    before = LocalExecutionConfig.instance
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root)
    try:
        yield
    finally:
        LocalExecutionConfig.instance = before


def _run_in(staging: Path, cfg: Config, out: Path) -> dict[str, Any]:
    pipeline_root = staging / "kfp"
    # Lineage records where each artifact will be after the run, not the staging folder.
    locations = json.dumps({
        "root": str(pipeline_root), "out": str(out),
        "folders": {f"{task}/{output}": folder for (task, output), folder in _OUTPUTS.items()},
    })  # fmt: skip
    try:
        from sslops.pipeline.ssl_pipeline import ssl_pipeline

        with kfp_local(str(pipeline_root)), _environment({LOCATIONS_ENV: locations}):
            stages = _run_pipeline(ssl_pipeline, cfg, staging / "run.log", failure_log(out))
        _collect(pipeline_root, staging)
        shutil.rmtree(pipeline_root)
        summary_path = staging / "summary.json"
        # Paths in the summary point at the final folder, which exists after the rename.
        summary = build_summary(staging) | {"stages": stages}
        summary = _moved(summary, str(staging), str(out))
        write_json(summary_path, summary)
        move_into_place(staging, out)
    except BaseException:
        # Interrupted (KeyboardInterrupt) in a process whose children the signal did not
        # reach, kfp.local leaves its running task: stopped before its folder goes.
        stop_descendants_with(f"{LOCATIONS_ENV}={locations}")
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary
