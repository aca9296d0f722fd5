"""``torchrun --nproc_per_node=N -m sslops.pretrain --config C --prepared P --out O``.

One rank of distributed pretraining (also runs alone: ``python -m sslops.pretrain``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sslops.config import load_config
from sslops.console import json_stderr
from sslops.errors import ConfigError, SslopsError
from sslops.pretrain.stage import run_pretrain
from sslops.sigterm import EXIT_SIGTERM, Terminated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslops.pretrain", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML or JSON config")
    parser.add_argument("--prepared", type=Path, required=True, help="prepare artifact")
    parser.add_argument("--out", type=Path, required=True, help="pretrain artifact to write")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    # SSLOPS_LOG_FORMAT=json reaches a rank through torchrun's environment: its lines are
    # JSON objects holding its global rank, as the launching process's are.
    rank = {"rank": int(os.environ["RANK"])} if "RANK" in os.environ else {}
    try:
        with json_stderr("pretrain", fields=rank):
            return _run(args)
    except ConfigError as exc:  # a bad SSLOPS_LOG_FORMAT
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    try:
        run_pretrain(load_config(args.config, args.set), args.prepared, args.out)
    except SslopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated as exc:  # loop.StoppedBySigterm says where the checkpoint is
        print(f"stopped: {str(exc) or 'SIGTERM'}", file=sys.stderr)
        return EXIT_SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
