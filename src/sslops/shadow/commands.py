"""The ``sslops shadow`` and ``sslops schedule-shadow`` subcommands (parsers and handlers).

``sslops.cli`` registers them with :func:`add_parsers` and hands them over with
:func:`run`; the work is in :func:`sslops.shadow.stage.shadow` and
:func:`sslops.k8s.schedule.schedule_shadow`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslops.config import load_config
from sslops.errors import ConfigError
from sslops.k8s.commands import HOST_HELP

COMMANDS = ("shadow", "schedule-shadow")

SHADOW_EPILOG = """\
PREDICTIONS.csv (an incumbent known only by its log): columns row_id, score[, label]
  row_id  matches a batch row: the batch's shadow.id_column, else '<file stem>:<row number>'
  score   the incumbent's probability of the positive class, in [0, 1]
  label   optional: the decision it took (0/1); default score >= evaluate.threshold

examples:
  sslops shadow --candidate runs/adult/export/model.onnx --incumbent incumbent.onnx \\
                --data batches/ --out shadow/ --config configs/adult.yaml
  sslops shadow --candidate model.onnx --incumbent predictions.csv --data today.csv \\
                --reference train_sample.csv --label-efficiency runs/adult/evaluate --out shadow/
  sslops schedule-shadow --host http://localhost:8080 --cron '0 0 6 * * *' \\
                --candidate /workspace/model.onnx --incumbent /workspace/incumbent.onnx \\
                --data /workspace/batches --config configs/adult.yaml
"""


def add_parsers(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    shadow = sub.add_parser(
        "shadow",
        help="read-only shadow test of a candidate ONNX model against the incumbent",
        description="Score a batch CSV, or every CSV of a folder (daily batches, by name), with "
        "the candidate and the incumbent without affecting any decision; report agreement, the "
        "disagreeing rows, metric and fairness deltas (when the batches carry labels), drift of "
        "inputs and scores (PSI + KS/chi-square) and the kpi section's costs. Writes OUT with "
        "shadow.{json,md,html}, scores.csv and plots; nothing when an input is wrong.",
        epilog=SHADOW_EPILOG,
    )
    add_config_args(shadow)
    shadow.add_argument(
        "--candidate",
        required=True,
        type=Path,
        metavar="MODEL.onnx",
        help="the new model (sslops export's model.onnx: raw columns in)",
    )
    shadow.add_argument(
        "--incumbent",
        required=True,
        type=Path,
        metavar="MODEL.onnx|PREDICTIONS.csv",
        help="the model in production",
    )
    shadow.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="BATCH.csv|DIR",
        help="one batch, or a folder of batch CSVs",
    )
    shadow.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="report artifact to write"
    )
    shadow.add_argument(
        "--reference",
        type=Path,
        metavar="FILE",
        help="drift reference CSV (default: the first batch)",
    )
    shadow.add_argument(
        "--label-efficiency",
        type=Path,
        metavar="FILE|DIR",
        help="label_efficiency.json or the evaluate artifact holding it (for the labels-saved KPI)",
    )
    schedule = sub.add_parser(
        "schedule-shadow",
        help="run the shadow pipeline on a KFP cluster as a recurring run (cron)",
        description="Compile the shadow pipeline for the config, upload it as a new version of "
        "'sslops-shadow-pipeline' and create a recurring run on the cron schedule. Paths are "
        "read by the task in its pod (the workspace PVC).",
        epilog=SHADOW_EPILOG,
    )
    add_config_args(schedule)
    add_schedule_args(schedule, "sslops-shadow", [
        ("candidate", "the candidate .onnx"), ("incumbent", "the incumbent .onnx or PREDICTIONS.csv"),
        ("data", "a batch CSV or a folder of them"),
    ])  # fmt: skip
    schedule.add_argument(
        "--reference", default="", metavar="PATH",
        help="drift reference CSV as the pod sees it (default: the first batch)",
    )  # fmt: skip
    schedule.add_argument(
        "--label-efficiency", default="", metavar="PATH",
        help="label_efficiency.json or the evaluate artifact, as the pod sees it (optional)",
    )  # fmt: skip


def add_schedule_args(
    parser: argparse.ArgumentParser, experiment: str, paths: list[tuple[str, str]]
) -> None:
    """What every ``schedule-*`` command takes: the cluster, the cron, the required paths."""
    parser.add_argument("--host", required=True, metavar="URL", help=HOST_HELP)
    parser.add_argument(
        "--cron",
        required=True,
        metavar="EXPR",
        help="6-field cron, seconds first: '0 0 6 * * *' = 06:00 daily",
    )
    for flag, what in paths:
        parser.add_argument(
            f"--{flag}", required=True, metavar="PATH", help=f"{what}, as the pod sees it"
        )
    parser.add_argument("--experiment", default=experiment, metavar="NAME", help="KFP experiment")
    parser.add_argument("--name", metavar="NAME", help="recurring run name")
    parser.add_argument("--namespace", metavar="NS", help="KFP profile namespace (multi-user)")
    parser.add_argument("--service-account", metavar="SA", help="service account of the runs")


def print_scheduled(done: Any) -> None:
    print(f"pipeline version {done.version_name} ({done.version_id})")
    print(f"recurring run {done.recurring_run_id} ({done.cron}): {done.url}")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides) if args.config or args.overrides else None
    if args.command == "schedule-shadow":
        from sslops.k8s.schedule import schedule_shadow

        if cfg is None:
            raise ConfigError("sslops schedule-shadow needs --config (labels, groups, kpi)")
        done = schedule_shadow(
            cfg,
            args.host,
            args.cron,
            candidate=args.candidate,
            incumbent=args.incumbent,
            data=args.data,
            reference=args.reference,
            label_efficiency=args.label_efficiency,
            experiment=args.experiment,
            name=args.name,
            namespace=args.namespace,
            service_account=args.service_account,
        )
        print_scheduled(done)
        return 0
    from sslops.shadow import shadow

    out = shadow(
        args.candidate,
        args.incumbent,
        args.data,
        args.out,
        cfg,
        reference=args.reference,
        label_efficiency=args.label_efficiency,
    )
    report = json.loads((out / "shadow.json").read_text(encoding="utf-8"))
    flagged = report["drift"]["drifted_batches"]
    print(
        f"shadow: agreement {report['agreement']['overall']:.4f} over {report['rows']} rows; "
        f"drift flagged in {', '.join(flagged) if flagged else 'no batch'}; wrote {out}"
    )
    return 0
