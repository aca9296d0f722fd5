"""``sslops audit reproduce BUNDLE``: independent re-verification, as a third party runs it.

The arguments and the exit status live here, light enough for the ``sslops`` command
line to import; the work is in :mod:`sslops.audit.reevaluate`. In an environment with
only numpy, pandas (pyarrow), onnxruntime, scikit-learn and cryptography installed, run
``python -m sslops.audit.reproduce BUNDLE --data ... --public-key ... --out ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sslops.closed_stdout import stdout_flushed_at_the_end
from sslops.errors import SslopsError

VERIFIER_KEY_ENV = "SSLOPS_VERIFIER_KEY"
TEST_SPLIT = "test.parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bundle", type=Path, metavar="BUNDLE", help="bundle folder, .zip or audit folder"
    )
    parser.add_argument("--data", required=True, type=Path, metavar="PREPARED_DIR_OR_TEST_FILE",
                        help=f"the prepare artifact, or its {TEST_SPLIT}: must hash to the test "
                        "split recorded in the bundle's lineage.json")  # fmt: skip
    parser.add_argument("--public-key", required=True, type=Path, metavar="FILE",
                        help="the issuer's PEM public key the bundle must be signed with")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, metavar="ATTESTATION_DIR",
                        help="folder for attestation.json, attestation.md, attestation.sig.json")  # fmt: skip
    parser.add_argument("--key-file", type=Path, metavar="VERIFIER_KEY",
                        help="the verifier's own Ed25519 private key (PEM) that signs the "
                        f"attestation (default: the environment variable {VERIFIER_KEY_ENV})")  # fmt: skip
    parser.add_argument("--verifier", metavar="NAME",
                        help="who verifies, as recorded (default: user@host)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every check passes; 1 with one line per failing check (attestation written)."""
    from sslops.audit.reevaluate import reproduce

    record = reproduce(args.bundle, args.data, args.public_key, args.out,
                       key_file=args.key_file, verifier=args.verifier)  # fmt: skip
    checks = record["checks"]
    if record["failures"]:
        for line in record["failures"]:
            print(line, file=sys.stderr)
        print(f"error: {len(record['failures'])} check(s) failed; attestation (result: failed) "
              f"written to {args.out}", file=sys.stderr)  # fmt: skip
        return 1
    print(f"reproduced: {len(checks)} metrics of {record['bundle']['model']!r} within tolerance; "
          f"signature verified; test data matches; attestation written to {args.out}")  # fmt: skip
    return 0


@stdout_flushed_at_the_end
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslops.audit.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except SslopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
