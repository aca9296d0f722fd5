"""The ``sslops`` command line: one subcommand per stage, ``run`` for the whole pipeline.

Every subcommand takes ``--config FILE`` and any number of ``--set KEY=VALUE``
overrides. Errors in input or configuration print one line starting with
``error:`` and exit with status 2; nothing partial is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shlex
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from sslops import __version__
from sslops.artifacts import INPUT_STAGE, json_text
from sslops.closed_stdout import stdout_closed, stdout_flushed_at_the_end, stdout_gone
from sslops.config import Config, load_config
from sslops.console import JsonLines, log_format, say
from sslops.errors import (
    EXIT_GATE,
    ConfigError,
    GateError,
    SslopsError,
    describe_os_error,
    one_line,
)
from sslops.k8s import commands as k8s_commands
from sslops.matplotlib_home import quiet_config_dir
from sslops.shadow import commands as shadow_commands
from sslops.sigterm import EXIT_SIGINT, EXIT_SIGTERM, Terminated, sigterm_as_interrupt

EXAMPLES = """\
examples:
  sslops run --config configs/adult.yaml                     # whole pipeline, locally (kfp.local)
  sslops run --config configs/adult.yaml --set finetune.label_fraction=0.1 --out runs/ten-percent
  sslops run --config configs/adult.yaml --set data.train=my.csv --set data.test=null \\
             --set data.label=default --set data.positive=yes --set data.sensitive=[gender] \\
             --set evaluate.proxies=[] --set audit.model_name=loans \\
             --set 'audit.title=Loan default model'   # not Adult's proxies, name, title
  sslops config --config configs/adult.yaml                  # print the resolved config
  sslops prepare --config params.yaml --out artifacts/prepare  # one stage (as dvc.yaml does)
  sslops submit --config configs/adult.yaml --host http://localhost:8080   # run on a KFP cluster
  sslops render --target helm --values helm/sslops/values-aws.yaml         # review manifests
  sslops shadow --candidate model.onnx --incumbent old.onnx --data batches/ --out shadow/
  sslops predict --model runs/adult/export/model.onnx --data new.csv --out predictions.csv

output: results on stdout (a stage's 'wrote' line, the run's table, config, render, --json);
progress, status and errors on stderr: a progress bar on a terminal, else one line a step;
  SSLOPS_LOG_FORMAT=json makes each stderr line one JSON object (docs/automation.md)
exit status (docs/automation.md):
  0    done; a check (audit verify, list --verify, reproduce, compare) found nothing wrong
  1    a check found a problem (one line each on stderr); or a crash with a traceback (a bug)
  2    unusable input, config or environment; a task of sslops run failed; a verification
       without a trusted key: one 'error:' line, nothing written
  3    a policy gate failed (audit.gates): the model is not fit to ship; as for 2 otherwise
  130  interrupted (SIGINT, Ctrl-C): nothing partial kept, child processes stopped too
  141  stdout's reader went away (sslops predict --out - | head -1): stopped quietly
  143  stopped by SIGTERM (CI cancel, docker stop, Kubernetes): as for 130
"""

PREDICT_EXAMPLES = """\
Writes OUT and, beside it, <name>.meta.json: the model's and each input's sha256, the
threshold and where it came from, row counts. --out - writes the CSV alone to stdout
(no record), --data - reads a table from stdin: sslops predict ... --out - | gzip > p.csv.gz

PREDICTIONS.csv: one row per scored row, the format sslops shadow --incumbent reads
  row_id  the --id-column's value, else '<file stem>:<row number>' (0-based, after the header)
  score   the model's probability of the positive class
  label   the decision: 1 where score >= the threshold, else 0

examples:
  sslops predict --model runs/adult/export/model.onnx --data new.csv --out predictions.csv \\
                 --config configs/adult.yaml          # '?' marks missing, as in training
  sslops predict --model model.onnx --data batches/ --out predictions.csv --id-column id
  sslops predict --model runs/mnist/export/model.onnx --data scans/ --out digits.csv  # images
  sslops schedule-predict --host http://localhost:8080 --cron '0 0 2 * * *' \\
                 --model /workspace/model.onnx --data /workspace/incoming \\
                 --out '/workspace/predictions/{date}.csv' --config configs/adult.yaml
"""


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose, keeps text laid out in lines (examples) as written, and appends
    "(default: X)" to an option's help where X is a value worth stating."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:  # an epilog of examples or a table: as written
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, "", [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


# Every subcommand's --help ends with this unless it states its own exit statuses.
SUBCOMMAND_EXIT = """\
exit status: 0 done; 2 unusable input, config or environment (one 'error:' line on stderr,
nothing written); 3 a policy gate failed (likewise); 130 SIGINT, 143 SIGTERM (nothing
partial kept); 141 stdout's reader went away (| head); 1 a bug (a traceback). Results go to
stdout, progress and errors to stderr: sslops --help"""


# The commands whose JSON log lines name their stage (sslops --help's stage commands).
LOG_STAGES = {*INPUT_STAGE.values(), "audit"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, but under ``SSLOPS_LOG_FORMAT=json`` a wrong command line is one JSON
    error object (its usage line a key of its own), not argparse's plain lines."""

    def error(self, message: str) -> NoReturn:
        with contextlib.suppress(ConfigError):  # a bad format: main() refuses it after this
            if log_format() == "json":
                words = self.prog.split()
                stage = words[1] if len(words) == 2 and words[1] in LOG_STAGES else None
                usage = " ".join(self.format_usage().split())
                JsonLines(sys.stderr, stage=stage).emit(
                    f"{self.prog}: {message}", level="error", fields={"usage": usage}
                )
                self.exit(2)
        super().error(message)


def _use_formatter(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """Give ``parser`` and every parser below it :class:`HelpFormatter`, and each
    subcommand the exit statuses (where its own text does not give them)."""
    parser.formatter_class = HelpFormatter
    said = f"{parser.description or ''} {parser.epilog or ''}".lower()
    if not top and "exit" not in said:
        parser.epilog = (
            f"{parser.epilog}\n\n{SUBCOMMAND_EXIT}" if parser.epilog else SUBCOMMAND_EXIT
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _use_formatter(child, top=False)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE",
        help="YAML config (see configs/; the demo configs also ship inside sslops as "
        "package:adult.yaml, package:mnist.yaml and package:gunpoint.yaml); without it, the "
        "built-in defaults plus --set, which must then give at least data.train and data.label "
        "(tables: also data.positive and data.sensitive)",
    )  # fmt: skip
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted key, e.g. --set data.label=income (repeatable)",
    )


def _stage(
    sub: Any, name: str, help_text: str, inputs: list[tuple[str, str]], required: bool = True,
    **kwargs: Any,
) -> argparse.ArgumentParser:  # fmt: skip
    flags = "".join(f" --{flag} artifacts/{INPUT_STAGE[flag]}" for flag, _ in inputs)
    kwargs.setdefault(
        "epilog",
        f"example (one stage, as dvc.yaml runs it):\n  sslops {name} --config params.yaml{flags} "
        f"--out artifacts/{name}",
    )
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text, **kwargs
    )
    _add_config_args(parser)
    for flag, what in inputs:
        parser.add_argument(f"--{flag}", required=required, type=Path, metavar="DIR", help=what)
    parser.add_argument(
        "--out", required=required, type=Path, metavar="DIR", help="artifact directory to write"
    )
    return parser


RUN_EXAMPLES = """\
examples:
  sslops run --config configs/adult.yaml                     # the demo: UCI Adult, 1% of labels
  sslops run --config configs/adult.yaml --set finetune.label_fraction=0.1 --out runs/ten-percent
  sslops run --config configs/adult.yaml --set finetune.fairness.constraint=equalized_odds
  sslops run --config configs/adult.yaml --set data.train=my.csv --set data.test=null \\
             --set data.label=default --set data.positive=yes --set data.sensitive=[gender] \\
             --set evaluate.proxies=[] --set audit.model_name=loans \\
             --set 'audit.title=Loan default model'   # not Adult's proxies, name, title
  sslops run --config configs/mnist.yaml                     # images; configs/gunpoint.yaml: series
"""

AUDIT_EPILOG = """\
tools:
  sslops audit verify BUNDLE --public-key FILE|--trusted-keys FILE|--integrity-only   check a bundle
  sslops audit keygen --private-key FILE --public-key FILE   new Ed25519 signing key pair
  sslops audit reproduce BUNDLE --data DIR --public-key FILE --out DIR [--key-file FILE]
                                                   re-run the evaluation from the bundle, signed attestation
  sslops audit verify-attestation DIR --public-key FILE|--integrity-only   check an attestation's signature
  sslops audit compare FILED REBUILT   is a rebuilt bundle the filed one, bit for bit (and why not)
  sslops audit file BUNDLE --registry DIR [--model NAME]   file a bundle in an audit registry
  sslops audit list --registry DIR [--model NAME] [--verify]   what was filed (and is it intact)
  sslops audit checkpoint --registry DIR --out FILE   the registry's head, to keep elsewhere
  sslops audit approve|reject SHA256 --registry DIR --by WHO --key-file FILE   signed decision
examples:
  sslops audit --config params.yaml --prepared artifacts/prepare --pretrained artifacts/pretrain \\
      --finetuned artifacts/finetune --evaluation artifacts/evaluate --exported artifacts/export \\
      --out artifacts/audit
  sslops audit verify runs/demo/audit --public-key issuer.pub.pem
"""


def _audit_tools(audit: argparse.ArgumentParser) -> None:
    tools = audit.add_subparsers(
        dest="audit_command",
        metavar="{verify,keygen,reproduce,verify-attestation,compare,file,list,checkpoint,approve,"
        "reject}",
    )
    verify = tools.add_parser(
        "verify",
        help="check a bundle's hashes and signature",
        description="Check every file of an audit bundle against manifest.json and the Ed25519 "
        "signature against the issuer's public key. Exit 0 when intact and signed with that "
        "key; 1 naming each changed, added or missing file or a bad signature; 2 when no "
        "trusted key was given (--public-key, or --integrity-only to check the hashes alone).",
        epilog="examples:\n"
        "  sslops audit verify bundle.zip --public-key issuer.pub.pem     # intact, and who signed it\n"
        "  sslops audit verify runs/demo/audit --integrity-only            # hashes only: anyone can "
        "re-seal a bundle",
    )
    verify.add_argument(
        "bundle", type=Path, metavar="BUNDLE", help="bundle folder, .zip or audit folder"
    )
    _trust_arguments(verify, "PEM public key the bundle must be signed with (the issuer's)",
                     trusted_keys=True)  # fmt: skip
    verify.add_argument(
        "--json", action="store_true",
        help="print the result as one JSON object on stdout (verified, trust, path, files, "
        "signed, key_fingerprint, trusted_key, problems); the exit status is the same",
    )  # fmt: skip
    keygen = tools.add_parser(
        "keygen",
        help="write a new Ed25519 key pair for signing bundles",
        description="Write a new Ed25519 key pair (PEM). Point audit.signing.key_file at the "
        "private key, or put it in the SSLOPS_SIGNING_KEY environment variable / a Secret.",
        epilog="example:\n"
        "  sslops audit keygen --private-key issuer.pem --public-key issuer.pub.pem\n"
        "  sslops run --config configs/adult.yaml --set audit.signing.key_file=issuer.pem",
    )
    keygen.add_argument(
        "--private-key", required=True, type=Path, metavar="FILE",
        help="where to write the private key (mode 0600; keep it out of version control)",
    )  # fmt: skip
    keygen.add_argument(
        "--public-key", required=True, type=Path, metavar="FILE",
        help="where to write the public key, to hand to whoever verifies bundles",
    )  # fmt: skip
    _reproduce_tools(tools)
    from sslops.audit import rebuild

    compare = tools.add_parser("compare", help=rebuild.COMPARE_HELP, epilog=rebuild.COMPARE_EPILOG,
                               description=rebuild.COMPARE_DESCRIPTION,
                               formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    rebuild.add_arguments(compare)
    _registry_tools(tools)


_TRUSTED_KEYS_HELP = (
    "a trusted-keys file (JSON: issuer keys with the window each may sign in, and revoked "
    "ones; docs/audit.md): the bundle must be signed with one, valid when it was created"
)


def _trust_arguments(
    parser: argparse.ArgumentParser, key_help: str, *, trusted_keys: bool = False
) -> None:
    """--public-key, or --integrity-only: a verification needs a trust root, or to be told
    explicitly that it has none (as cosign and gpg refuse to verify without one)."""
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--public-key", type=Path, metavar="FILE", help=key_help)
    if trusted_keys:
        trust.add_argument("--trusted-keys", type=Path, metavar="FILE", help=_TRUSTED_KEYS_HELP)
    trust.add_argument(
        "--integrity-only", action="store_true",
        help="check hashes (and the signature against the key embedded in it) without a "
        "trusted key: proves nothing about who made it, since anyone can re-seal and re-sign "
        "a changed copy",
    )  # fmt: skip


def _untrusted(what: Path, result: str | None) -> int:
    """Exit 2: intact as far as could be checked, but no trusted key was given."""
    if result is not None:
        print(result)
    print(f"error: {what}: the signature was not checked against a trusted key, so this does "
          "not show who made it (anyone can re-seal a changed copy): pass --public-key FILE, "
          "or --integrity-only to accept a check of the hashes alone", file=sys.stderr)  # fmt: skip
    return 2


def check_yaml_out(out: Path) -> None:
    """``--out`` of a compiled pipeline: a .yaml file in a folder that exists (KFP writes
    platform settings to YAML only)."""
    if out.suffix not in (".yaml", ".yml") or out.is_dir():
        raise ConfigError(f"--out {out}: expected a .yaml file (KFP IR YAML)")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist")


def _registry_tools(tools: Any) -> None:
    filing = tools.add_parser(
        "file",
        help="file a bundle in an audit registry (content-addressed, indexed by model)",
        description="Verify a bundle and file it in an audit registry folder: "
        "bundles/<sha256 of manifest.json>.zip (read-only) and an entry in "
        "models/<model>/index.json (deployed model, gates, metrics, signer, KFP run). Filing "
        "the same bundle again changes nothing. A bundle that fails verification is not "
        "filed. The audit stage files its bundle itself when audit.registry is set.",
        epilog="examples:\n"
        "  sslops audit file runs/demo/audit --registry /mnt/audit-registry\n"
        "  sslops audit file bundle.zip --registry reg/ --model income --public-key issuer.pub.pem"
        " --require-signed",
    )
    filing.add_argument(
        "bundle", type=Path, metavar="BUNDLE", help="bundle folder, .zip or audit folder"
    )
    filing.add_argument("--registry", required=True, type=Path, metavar="DIR",
                        help="the registry folder (made on first use)")  # fmt: skip
    filing.add_argument(
        "--model", metavar="NAME",
        help="file under this model name (default: the bundle's audit.model_name, else its "
        "title made lower-case with dashes)",
    )  # fmt: skip
    filing_trust = filing.add_mutually_exclusive_group()
    filing_trust.add_argument("--public-key", type=Path, metavar="FILE",
                              help="the bundle must be signed with this PEM public key")  # fmt: skip
    filing_trust.add_argument("--trusted-keys", type=Path, metavar="FILE", help=_TRUSTED_KEYS_HELP)
    filing.add_argument("--require-signed", action="store_true",
                        help="refuse an unsigned bundle")  # fmt: skip
    filing.add_argument("--key-file", type=Path, metavar="FILE",
                        help="sign the index entry with this Ed25519 private key (PEM): the "
                        "entry, and every entry before it, then cannot be removed, changed or "
                        "reordered without the key")  # fmt: skip
    for decision, verb in (("approve", "approve a filed bundle for use"),
                           ("reject", "reject a filed bundle")):  # fmt: skip
        decide = tools.add_parser(
            decision,
            help=f"{verb} (a signed decision in the registry's index)",
            description=f"Record a signed decision to {decision} a bundle filed in an audit "
            "registry: who, when, why, Ed25519-signed with the decider's own key and chained "
            "into the model's index. The latest decision is the bundle's status in `sslops "
            "audit list`; `sslops predict --registry` scores only with a model whose bundle is "
            "approved. Four eyes: the key that signed a bundle cannot approve it.",
            epilog="examples:\n"
            f"  sslops audit {decision} 0550d8d2 --registry reg/ --by 'J. Doe, model risk' "
            "--key-file approver.pem --note 'validation report MR-2026-118'",
        )
        decide.add_argument("bundle", metavar="SHA256",
                            help="the bundle's manifest sha256, or its first 8+ characters")  # fmt: skip
        decide.add_argument("--registry", required=True, type=Path, metavar="DIR",
                            help="the registry folder")  # fmt: skip
        decide.add_argument("--by", required=True, metavar="WHO",
                            help="who decides: a name and role")  # fmt: skip
        decide.add_argument(
            "--key-file", type=Path, metavar="FILE",
            help="the decider's PEM private key (default: the SSLOPS_APPROVER_KEY variable)",
        )  # fmt: skip
        decide.add_argument("--note", default="", metavar="TEXT",
                            help="why: a ticket, a report, a condition")  # fmt: skip
        decide.add_argument("--model", metavar="NAME",
                            help="the model it is filed under (when filed under several)")  # fmt: skip
    listing = tools.add_parser(
        "list",
        help="list the bundles filed in an audit registry",
        description="List the bundles filed in an audit registry, oldest first: when filed, "
        "model, manifest sha256, deployed model, gates, accuracy, ROC AUC, DP and EO "
        "differences, signed or not. --verify also re-checks every filed bundle and the "
        "chain of index entries: exit 0 when all is intact, 1 naming each problem, 2 for an "
        "unusable registry, key or checkpoint.",
        epilog="examples:\n"
        "  sslops audit list --registry /mnt/audit-registry\n"
        "  sslops audit list --registry reg/ --model income --json\n"
        "  sslops audit list --registry reg/ --verify --public-key issuer.pub.pem",
    )
    listing.add_argument("--registry", required=True, type=Path, metavar="DIR",
                         help="the registry folder")  # fmt: skip
    listing.add_argument("--model", metavar="NAME", help="only this model's bundles")
    listing.add_argument("--json", action="store_true", help="print the entries as JSON")
    listing.add_argument("--verify", action="store_true",
                         help="re-check every filed bundle and the index chains")  # fmt: skip
    listing_trust = listing.add_mutually_exclusive_group()
    listing_trust.add_argument("--public-key", type=Path, metavar="FILE",
                               help="with --verify: every bundle must be signed with this key")  # fmt: skip
    listing_trust.add_argument("--trusted-keys", type=Path, metavar="FILE",
                               help=f"with --verify: {_TRUSTED_KEYS_HELP}")  # fmt: skip
    listing.add_argument("--checkpoint", type=Path, metavar="FILE",
                         help="implies --verify: the registry must still hold every entry this "
                         "checkpoint (sslops audit checkpoint) recorded")  # fmt: skip
    listing.add_argument("--approver-key", action="append", type=Path, metavar="FILE",
                         help="the approvers' PEM public keys (repeatable): a decision signed "
                         "with another key shows as 'key not trusted' in STATUS")  # fmt: skip
    point = tools.add_parser(
        "checkpoint",
        help="record the registry's head, to keep away from it",
        description="Write the registry's head now (each model's number of index entries and "
        "the digest of the last one) as JSON. Kept away from the registry (a GitOps "
        "repository, a ticket, a ConfigMap), it lets `sslops audit list --checkpoint` find "
        "what the chain of digests alone cannot: entries removed from the end of an index (a "
        "rejection after an approval, say) and a model's whole index removed.",
        epilog="examples:\n"
        "  sslops audit checkpoint --registry /mnt/audit-registry --out gitops/audit-checkpoint.json\n"
        "  sslops audit list --registry /mnt/audit-registry --checkpoint gitops/audit-checkpoint.json",
    )
    point.add_argument("--registry", required=True, type=Path, metavar="DIR",
                       help="the registry folder")  # fmt: skip
    point.add_argument("--out", type=Path, metavar="FILE",
                       help="where to write it (default: print it)")  # fmt: skip


def _cmd_registry(args: argparse.Namespace) -> int:
    from sslops.audit import load_public_key
    from sslops.audit.registry import (
        check_checkpoint,
        check_registry,
        file_bundle,
        list_registry,
        read_checkpoint,
    )

    if args.audit_command in {"approve", "reject"}:
        from sslops.audit.bundle import load_private_key
        from sslops.audit.registry import decide

        private = load_private_key(args.key_file, "SSLOPS_APPROVER_KEY", True, "--key-file",
                                   "a decision is signed")  # fmt: skip
        if private is None:  # required=True: load_private_key raised already
            raise ConfigError("a decision is signed: give --key-file")
        decision = {"approve": "approved", "reject": "rejected"}[args.audit_command]
        done = decide(args.registry, args.bundle, decision, private, by=args.by, note=args.note,
                      model=args.model)  # fmt: skip
        print(
            f"{done['decision']}: bundle {done['manifest_sha256'][:12]} (model {done['model']}) "
            f"by {done['by']}, signed with key {done['key_fingerprint']}"
        )
        return 0
    if args.audit_command == "checkpoint":
        return _write_checkpoint(args.registry, args.out)
    key = _trust_root(args)
    if args.audit_command == "file":
        from sslops.audit.bundle import load_private_key

        filer = (
            load_private_key(args.key_file, "", False, "--key-file", "") if args.key_file else None
        )
        entry = file_bundle(args.bundle, args.registry, model=args.model, public_key=key,
                            require_signed=args.require_signed, key=filer)  # fmt: skip
        signed = "NOT signed"
        if entry["signed"]:
            signed = f"signed with key {entry['key_fingerprint']}" + (
                "" if key else ", not checked against a trusted key: --public-key"
            )
        entry_signed = (
            f", entry signed with key {entry['filer_key']}" if entry.get("filer_key") else ""
        )
        print(
            f"{entry['status']}: {args.bundle} as {entry['path']} (model {entry['model']}, "
            f"{signed}, gates {entry['gates']}{entry_signed})"
        )
        return 0
    rows = list_registry(args.registry, args.model)
    if args.approver_key:  # who decided is the key, not the name typed in --by
        from sslops.audit.bundle import fingerprint

        trusted = {fingerprint(load_public_key(path, "--approver-key"))
                   for path in args.approver_key}  # fmt: skip
        for row in rows:
            row["decided_key_trusted"] = (
                None if row["decided_key"] is None else row["decided_key"] in trusted
            )
    point = read_checkpoint(args.checkpoint) if args.checkpoint else None
    args.verify = args.verify or point is not None
    problems = check_registry(args.registry, key) if args.verify else []
    problems += check_checkpoint(args.registry, point) if point else []
    if args.json:
        print(json_text(rows, indent=2))
    else:
        _print_registry(rows)
    if problems:
        return _failed_verification(args.registry, problems)
    if args.verify:
        since = f", every entry of the checkpoint of {point['taken']} held" if point else ""
        pinned = "" if key else ("; bundle signatures checked against their embedded keys only "
                                 "(pass --public-key to require the issuer's)")  # fmt: skip
        print(f"verified: {len(rows)} filed bundle(s) intact, index chains unbroken{since}"
              f"{pinned}", file=sys.stderr)  # fmt: skip
    return 0


def _write_checkpoint(registry: Path, out: Path | None) -> int:
    from sslops.audit.registry import checkpoint, write_checkpoint

    if out is None:
        print(json_text(checkpoint(registry), indent=2, sort_keys=True))
        return 0
    point = write_checkpoint(registry, out)
    entries = sum(head["entries"] for head in point["models"].values())
    print(f"checkpoint of {point['taken']}: {len(point['models'])} model(s), {entries} index "
          f"entries, written to {out}; keep it away from the registry and check with "
          f"sslops audit list --registry {registry} --checkpoint {out}")  # fmt: skip
    return 0


def _failed_verification(what: Path, problems: list[str]) -> int:
    """Exit 1: every problem on its own line when there are several, then one error line."""
    if len(problems) > 1:
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    count = len(problems)
    print(f"error: {what} failed verification ({count} problem{'s' * (count > 1)}): "
          f"{problems[0]}", file=sys.stderr)  # fmt: skip
    return 1


def _print_registry(rows: list[dict[str, Any]]) -> None:
    """One line a filed bundle, columns aligned and nothing cut (as ``kubectl get`` prints)."""

    def number(metrics: dict[str, Any], key: str) -> str:
        """A measured value; "undefined" where it was measured and is not defined (null, or
        NaN in an index filed before strict JSON: it printed "nan"); "-" where no gate
        measured it."""
        value = metrics.get(key, "-")
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "undefined"
        return f"{value:.4f}" if isinstance(value, int | float) else "-"

    table = [("FILED", "MODEL", "MANIFEST", "DEPLOYED", "GATES", "ACCURACY", "ROC_AUC",
              "DP_DIFF", "EO_DIFF", "SIGNED", "STATUS")]  # fmt: skip
    for row in rows:
        m = row.get("metrics") or {}
        table.append((
            row.get("filed") or "-", row["model"], row["manifest_sha256"][:12],
            str(row.get("deployed") or "-"), str(row.get("gates") or "-"),
            *(number(m, k) for k in ("accuracy", "roc_auc", "dp_difference", "eo_difference")),
            "yes" if row.get("signed") else "no",
            row["decision"] + (f" ({row['decided_by']}" + (
                f"; key {row['decided_key']} not trusted" if row.get("decided_key_trusted")
                is False else "") + ")" if row.get("decided_by") else ""),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


REPRODUCE_EPILOG = """\
exit status: 0 every check passed; 1 a check failed (one line each, naming the metric,
and the attestation records the failure); 2 unusable input (unreadable key, test data
that is not the bundle's frozen test split: nothing is written).
In an environment with only numpy, pandas, pyarrow, onnxruntime, scikit-learn and
cryptography, run the same with: python -m sslops.audit.reproduce BUNDLE ...
example:
  sslops audit reproduce runs/demo/audit --data runs/demo/prepare \\
      --public-key issuer.pub.pem --key-file verifier.pem --out attestation/
"""


def _reproduce_tools(tools: Any) -> None:
    from sslops.audit.reproduce import add_arguments

    reproduce = tools.add_parser(
        "reproduce",
        help="re-run the evaluation from the bundle's own ONNX model; signed attestation",
        description="Independent re-verification: check the bundle's signature against the "
        "issuer's public key and the test data against the frozen test-split hash, re-run the "
        "bundle's model.onnx with ONNX Runtime on it and compare every reported metric of the "
        "deployed model within a stated tolerance; write an attestation signed with the "
        "verifier's own key.",
        epilog=REPRODUCE_EPILOG,
    )
    add_arguments(reproduce)
    attested = tools.add_parser(
        "verify-attestation",
        help="check an attestation's signature and files",
        description="Check attestation.json and attestation.md against attestation.sig.json. "
        "Exit 0 when intact (prints the attested result); 1 naming each problem; 2 when no "
        "trusted key was given (--public-key, or --integrity-only) or the input is unusable.",
        epilog="example:\n  sslops audit verify-attestation attestation/ --public-key verifier.pub.pem",
    )
    attested.add_argument("attestation", type=Path, metavar="DIR", help="attestation folder")
    _trust_arguments(attested, "the verifier's PEM public key the attestation must be signed with")
    attested.add_argument(
        "--bundle",
        type=Path,
        metavar="PATH",
        help="the bundle (folder, .zip or audit folder) the attestation must be of",
    )


def _cmd_attestation(args: argparse.Namespace) -> int:
    from sslops.audit import load_public_key
    from sslops.audit.attestation import verify_attestation
    from sslops.audit.bundle import bundle_manifest_sha256
    from sslops.audit.reproduce import run as run_reproduce

    if args.audit_command == "reproduce":
        return run_reproduce(args)
    key = load_public_key(args.public_key, "--public-key") if args.public_key else None
    result = verify_attestation(args.attestation, key)
    attested = result.get("bundle_manifest_sha256")
    if args.bundle is not None and not result["problems"]:
        given = bundle_manifest_sha256(args.bundle)
        if given != attested:
            result["problems"].append(
                f"it attests bundle {str(attested)[:12]}, not {args.bundle} ({given[:12]})"
            )
    for problem in result["problems"]:
        print(f"error: {args.attestation}: {problem}", file=sys.stderr)
    if result["problems"]:
        return 1
    line = (
        f"verified: {result['path']}: attestation of bundle {str(attested)[:12]} by "
        f"{result['verifier']} (key {result['key_fingerprint']}) on {result['created']}, "
        f"result: {result['result']}"
    )
    if key is None and not args.integrity_only:
        return _untrusted(args.attestation, line)
    print(line + ("" if key else " (integrity only: pass the verifier's --public-key to know "
                  "who signed)"))  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="sslops",
        description="Self-supervised pretraining on unlabeled data, fairness-aware fine-tuning on few "
        "labels, evaluation, ONNX export and an audit bundle.",
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=f"sslops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the whole pipeline locally through kfp.local",
        description="Run prepare -> pretrain -> finetune -> evaluate -> export -> audit locally "
        "through kfp.local, then write OUT/summary.json. OUT is replaced only when the run "
        "succeeds.",
        epilog=RUN_EXAMPLES,
    )
    _add_config_args(run)
    run.add_argument(
        "--out", type=Path, metavar="DIR", help="run folder (default: runs/<config name>)"
    )

    show = sub.add_parser(
        "config",
        help="print the resolved config (defaults + file + --set)",
        description="Print the config every stage would use: the built-in defaults, then the "
        "file, then each --set, validated (a wrong key or value is an error here too). Every "
        "key is explicit, so the output is also a params.yaml for dvc.yaml.",
        epilog="examples:\n  sslops config --config configs/adult.yaml --set seed=1\n"
        "  sslops config --config configs/adult.yaml > params.yaml   # the parameters dvc.yaml reads",
    )
    _add_config_args(show)
    show.add_argument("--json", action="store_true", help="print JSON (the pipeline's config_json)")
    show.add_argument(
        "--schema", action="store_true",
        help="print the JSON Schema of a config file instead (for editors: docs/config.md)",
    )  # fmt: skip

    comp = sub.add_parser(
        "compile",
        help="compile the KFP pipeline to IR YAML",
        description="Write the pipeline as KFP IR YAML, to upload in the KFP UI. With --config "
        "(and --set), that config is config_json's default and its platform section places the "
        "tasks; without, config_json is a required run parameter. make compile writes the "
        "committed pipelines/compiled/ files.",
        epilog="example:\n  sslops compile --config configs/adult.yaml --set pretrain.launcher=trainjob \\\n"
        "      --set platform.storage.workspace_pvc=sslops-workspace --out adult.yaml",
    )
    _add_config_args(comp)
    comp.add_argument(
        "--out", type=Path, default=Path("ssl_pipeline.yaml"), metavar="FILE",
        help="IR YAML to write (default: ssl_pipeline.yaml)",
    )  # fmt: skip

    prepared = ("prepared", "prepare artifact")
    finetuned = ("finetuned", "finetune artifact")
    k8s_commands.add_parsers(sub, _add_config_args)  # submit, render

    _stage(sub, "prepare", "read, canonicalize, deduplicate, split and encode the raw data", [])
    _stage(sub, "pretrain", "self-supervised pretraining of the encoder", [prepared])
    _stage(sub, "finetune", "few-label heads, fairness-mitigated head, baseline",
           [prepared, ("pretrained", "pretrain artifact")])  # fmt: skip
    _stage(sub, "evaluate", "test-split metrics overall and per group", [prepared, finetuned])
    _stage(sub, "export", "ONNX export with onnxruntime parity check", [prepared, finetuned])
    audit = _stage(sub, "audit", "signed compliance bundle: model card, gates, lineage, SBOM", [
        prepared, ("pretrained", "pretrain artifact"), finetuned,
        ("evaluation", "evaluate artifact"), ("exported", "export artifact"),
    ], required=False, epilog=AUDIT_EPILOG)  # fmt: skip
    _audit_tools(audit)
    shadow_commands.add_parsers(sub, _add_config_args)  # shadow, schedule-shadow
    _predict_parser(sub)
    _use_formatter(parser)
    return parser


def _predict_parser(sub: Any) -> None:
    pred = sub.add_parser(
        "predict",
        help="score new rows with an exported model: PREDICTIONS.csv",
        description="Feed each row of a CSV or Parquet file, or of every such file in a "
        "folder, to the ONNX model sslops export wrote (raw columns in, preprocessing inside "
        "the graph) and write one score and decision per row. The threshold is the model's "
        "own (its decision_threshold metadata), else evaluate.threshold; --config supplies "
        "data.na_values, shadow.id_column and data.format (which files of a folder to read). "
        "An image or series model reads a .npy/.npz "
        "array (images (N, H, W[, C]), series (N, L)), a pixel CSV or a folder of image files "
        "(images), a .ts file (series), brought to the model's size as prepare does, and "
        "gives the most probable class and each class's probability. OUT "
        "appears whole or not at all, and only an earlier predictions file is ever replaced.",
        epilog=PREDICT_EXAMPLES,
    )
    _add_config_args(pred)
    pred.add_argument("--model", required=True, type=Path, metavar="MODEL.onnx",
                      help="sslops export's model.onnx (or its int8 copy)")  # fmt: skip
    pred.add_argument("--data", required=True, type=Path, metavar="FILE.csv|DIR|-",
                      help="rows to score: one CSV or Parquet file, or a folder of CSVs (by "
                      "name; of Parquet files with data.format=parquet), or - (one CSV or "
                      "Parquet file on stdin); image and "
                      "series models: .npy/.npz; images also a pixel CSV or a folder of "
                      "images; series a .ts file")  # fmt: skip
    pred.add_argument("--out", required=True, type=Path, metavar="FILE.csv|-",
                      help="PREDICTIONS.csv to write (with PREDICTIONS.meta.json beside it), "
                      "or - for stdout (the CSV alone, once every row is scored; the summary "
                      "line goes to stderr)")  # fmt: skip
    pred.add_argument("--id-column", metavar="COLUMN",
                      help="column whose values name the rows (default: shadow.id_column)")  # fmt: skip
    pred.add_argument("--threshold", type=float, metavar="P",
                      help="decision threshold in (0, 1), overriding the model's")  # fmt: skip
    pred.add_argument("--chunk-rows", type=int, metavar="N",
                      help="rows read, scored and written at a time, so memory stays flat "
                      "for a file of any size (default: 20000; images and series: 256 per "
                      "model run)")  # fmt: skip
    pred.add_argument("--registry", type=Path, metavar="DIR",
                      help="score only if the model's bundle is approved in this audit registry "
                      "(sslops audit approve); the approval goes into the record")  # fmt: skip
    pred.add_argument("--approver-key", action="append", type=Path, metavar="FILE",
                      help="with --registry: the approval must be signed with this PEM public "
                      "key (repeatable: any of them; default: any key, integrity only)")  # fmt: skip

    schedule = sub.add_parser(
        "schedule-predict",
        help="run the batch-scoring pipeline on a KFP cluster as a recurring run (cron)",
        description="Compile the batch-scoring pipeline for the config, upload it as a new "
        "version of 'sslops-predict-pipeline' and create a recurring run on the cron schedule: "
        "on every run the rows under --data are scored with --model (what sslops predict does) "
        "into the run's predictions artifact and, with --out, published on the workspace PVC "
        "({date} = the run's scheduled UTC date), where sslops shadow --incumbent reads such a "
        "log. "
        "Paths are read by the task in its pod.",
        epilog=PREDICT_EXAMPLES,
    )
    _add_config_args(schedule)
    shadow_commands.add_schedule_args(schedule, "sslops-predict", [
        ("model", "sslops export's model.onnx"), ("data", "a CSV or a folder of CSVs to score"),
    ])  # fmt: skip
    schedule.add_argument("--out", default="", metavar="PATH",
                          help="also publish PREDICTIONS.csv here; must hold {date}")  # fmt: skip
    schedule.add_argument("--id-column", default="", metavar="COLUMN",
                          help="column naming the rows (default: shadow.id_column)")  # fmt: skip
    schedule.add_argument("--threshold", default="", metavar="P",
                          help="decision threshold in (0, 1) (default: the model's own)")  # fmt: skip
    schedule.add_argument("--registry", default="", metavar="DIR",
                          help="an audit registry on the PVC: every run scores only if the "
                          "model's bundle is approved there (a rejection stops the next run)")  # fmt: skip
    schedule.add_argument("--approver-key", default="", metavar="FILE",
                          help="with --registry: a PEM public key on the PVC the approval must "
                          "be signed with")  # fmt: skip


def _cmd_schedule_predict(args: argparse.Namespace) -> int:
    from sslops.k8s.schedule import schedule_predict

    if not (args.config or args.overrides):
        raise ConfigError(
            "sslops schedule-predict needs --config (data.na_values, shadow.id_column)"
        )
    done = schedule_predict(
        load_config(args.config, args.overrides), args.host, args.cron, model=args.model,
        data=args.data, out=args.out, id_column=args.id_column, threshold=args.threshold,
        registry=args.registry, approver_key=args.approver_key, experiment=args.experiment, name=args.name, namespace=args.namespace,
        service_account=args.service_account,
    )  # fmt: skip
    shadow_commands.print_scheduled(done)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from sslops.predict import STDIO, meta_path, predict

    if args.overrides and not args.config:
        raise ConfigError("--set changes a config: give it with --config FILE too (predict reads "
                          "only data.na_values and shadow.id_column from it; --id-column sets "
                          "the latter directly)")  # fmt: skip
    cfg = load_config(args.config, args.overrides) if args.config else None
    done = predict(args.model, args.data, args.out, cfg, id_column=args.id_column,
                   threshold=args.threshold, chunk_rows=args.chunk_rows,
                   registry=args.registry, approver_keys=args.approver_key)  # fmt: skip
    wrote = f"{done.out} and {meta_path(done.out).name}"
    if done.out == STDIO:  # stdout holds the CSV alone
        wrote = "them to stdout (no record: give --out FILE.csv for one)"
    print(f"predict: {done.rows:,} rows from {done.files} file(s), {done.described}; wrote "
          f"{wrote}", file=sys.stderr if done.out == STDIO else sys.stdout)  # fmt: skip
    return 0


def _trust_root(args: argparse.Namespace) -> Any:
    """``--public-key`` (one issuer key) or ``--trusted-keys`` (keys with validity windows);
    None when neither was given."""
    from sslops.audit import load_public_key

    if getattr(args, "trusted_keys", None):
        from sslops.audit.keys import TrustedKeys

        return TrustedKeys.load(args.trusted_keys)
    return load_public_key(args.public_key, "--public-key") if args.public_key else None


def _cmd_audit_tool(args: argparse.Namespace) -> int:
    from sslops.audit import generate_keypair
    from sslops.audit.bundle import verify_path

    if args.audit_command in {"reproduce", "verify-attestation"}:
        return _cmd_attestation(args)
    if args.audit_command == "compare":
        from sslops.audit.rebuild import run as run_compare

        return run_compare(args)
    if args.audit_command in {"file", "list", "checkpoint", "approve", "reject"}:
        return _cmd_registry(args)
    if args.audit_command == "keygen":
        fp = generate_keypair(args.private_key, args.public_key)
        print(f"wrote {args.private_key} (private, mode 0600) and {args.public_key}; key {fp}")
        return 0
    key = _trust_root(args)
    result = verify_path(args.bundle, key)
    if args.json:
        _print_verification_json(args, result, key is not None)
    if result["problems"]:
        return _failed_verification(args.bundle, result["problems"])
    if result.get("signed"):
        trust = "the given public key" if key else "its embedded public key (integrity only; "
        trust += "" if key else "pass --public-key to check who signed it)"
        judged = result.get("trusted_key")
        if judged:
            trust = (f"the trusted keys {args.trusted_keys}: key {judged['key_name']}, valid "
                     f"{judged['key_valid']}, signed {judged['signed_at']}, within it")  # fmt: skip
        how = f"signed, Ed25519 key {result['key_fingerprint']}, verified with {trust}"
    else:
        how = "NOT signed (hashes only)"
    line = f"verified: {result['path']}: {result['files']} files intact; {how}"
    if key is None and not args.integrity_only:
        return _untrusted(args.bundle, None if args.json else line)
    if not args.json:
        print(line)
    return 0


def _print_verification_json(args: argparse.Namespace, result: dict[str, Any], keyed: bool) -> None:
    """``audit verify --json``: what a CI job reads instead of the lines (same exit status)."""
    trust = "trusted-keys" if args.trusted_keys else "public-key" if keyed else (
        "integrity-only" if args.integrity_only else "none")  # fmt: skip
    print(json_text({
        "verified": not result["problems"] and trust != "none", "trust": trust,
        "path": result["path"], "files": result.get("files"), "signed": bool(result.get("signed")),
        "key_fingerprint": result.get("key_fingerprint"),
        "trusted_key": result.get("trusted_key"), "problems": result["problems"],
    }, indent=2))  # fmt: skip


_SSL_LABELS = {
    "linear_probe": "SSL (probe)",
    "full": "SSL (fine-tuned)",
    "ensemble": "SSL (ensemble)",
}


def _print_summary(summary: dict[str, Any], out: Path, config_path: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    # No markup: paths and column names are printed as they are ('runs/[v2]' lost its '[v2]',
    # a '[/x]' raised MarkupError after the run). No highlighting: with FORCE_COLOR (a CI's
    # coloured log) each number and path inside a line was coloured, and grep missed it.
    console = Console(stderr=False, markup=False, highlight=False)
    sensitive = summary["sensitive"]
    table = Table(title=f"sslops run: test split (fairness for '{sensitive}')")
    for column in ("model", "accuracy", "ROC AUC", "DP diff.", "EO diff."):
        table.add_column(column, justify="left" if column == "model" else "right")
    labels = {
        "ssl": _SSL_LABELS.get(summary.get("transfer", ""), "SSL"),
        "mitigated": "fairness-mitigated",
        "baseline": "supervised baseline",
    }
    for key, label in labels.items():
        m = summary[key]
        table.add_row(
            label,
            *(_cell(m[k]) for k in ("accuracy", "roc_auc", "dp_difference", "eo_difference")),
        )
    console.print(table)
    # Into a pipe or a CI log, each line after the table stays whole (greppable, no
    # trailing blanks) rather than broken at 80 columns; a terminal fits them to its width.
    console.soft_wrap = not sys.stdout.isatty()
    _print_test_precision(console, out / "evaluate" / "metrics.json")
    fairness = summary.get("fairness")
    if fairness:
        met = "met" if fairness["policy_met_on_validation"] else "NOT met (fairest candidate)"
        console.print(
            f"Mitigated:    {fairness['selected']} ({fairness['selected_mechanism']}); policy "
            f"{fairness['constraint']} <= {fairness['max_gap']}: {met}, measured on "
            f"{fairness.get('gap_measured_on', 'validation')}"
        )
    suspects = summary.get("identifier_like_columns")
    if suspects:
        names = ", ".join(repr(c) for c in suspects)
        console.print(
            f"Data:         nearly every value of {names} is distinct: an identifier or free "
            "text? Declare it in data.identifiers or data.text (prepare/datacard.md)"
        )
    if summary.get("label_note"):
        console.print(f"Label:        {summary['label_note']} (prepare/datacard.md)", markup=False)
    if summary.get("few_class_note"):
        console.print(f"Splits:       {summary['few_class_note']} (prepare/datacard.md)",
                      markup=False)  # fmt: skip
    for note in summary.get("data_notes") or []:
        console.print(f"Data:         {note} (prepare/datacard.md)", markup=False)
    console.print(
        f"ONNX model:   {summary['onnx']['path']}  (max |onnx - torch| = "
        f"{summary['onnx']['max_abs_diff']:.1e})"
    )
    console.print(f"Audit bundle: {summary['audit']['path']}  (model card: model_card.html)")
    if summary["audit"].get("filed"):
        filed = Path(summary["audit"]["filed"])
        console.print(f"Filed as:     {filed}  (sslops audit list --registry "
                      f"{filed.parent.parent})", soft_wrap=True)  # fmt: skip
    console.print(f"Summary:      {out / 'summary.json'}")
    tables = (out / "prepare" / "encoding.json").is_file()  # the model takes raw columns
    config = f" --config {shlex.quote(str(config_path))}" if config_path and tables else ""
    console.print(  # quoted: a folder name with a space or an accent stays one argument
        f"Score rows:   sslops predict --model {shlex.quote(summary['onnx']['path'])} --data "
        f"{'NEW.csv' if tables else 'NEW.npy'} --out predictions.csv{config}",
        soft_wrap=True,  # one line, to copy
    )


def _cell(value: float | None) -> str:
    """A summary.json number for the run's table: null is a number evaluate could not take
    (a gap with fewer than two groups to compare; summary.json's gap_notes say why)."""
    return "undefined" if value is None else f"{value:.4f}"


def _print_test_precision(console: Any, metrics_path: Path) -> None:
    """How many rows the table stands on and the deployed model's 95% bootstrap intervals:
    with a few hundred labels and no separate test file the test split is a few dozen rows."""
    if not metrics_path.is_file():
        return
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    intervals = metrics.get("models", {}).get("mitigated", {}).get("intervals") or {}
    shown = []
    for name, key in (("accuracy", "accuracy"), ("DP diff.", "dp_difference"),
                      ("EO diff.", "eo_difference")):  # fmt: skip
        bounds = intervals.get(key) or []
        if len(bounds) == 2 and all(isinstance(b, float) and math.isfinite(b) for b in bounds):
            shown.append(f"{name} [{bounds[0]:.3f}, {bounds[1]:.3f}]")
    line = f"Test split:   {metrics.get('rows', 0):,} rows"
    if shown:
        line += "; fairness-mitigated, 95% bootstrap intervals: " + ", ".join(shown)
    console.print(line + " (evaluate/metrics.md)")


def _cmd_run(args: argparse.Namespace, cfg: Config) -> None:
    from sslops.pipeline.local import run_local

    stem = Path(args.config.removeprefix("package:")).stem if args.config else "run"
    out = args.out or Path("runs") / stem
    if isinstance(sys.stderr, JsonLines):
        sys.stderr.run = Path(out).name
    summary = run_local(cfg, out)
    _print_summary(summary, Path(out).resolve(), args.config)


def _cmd_stage(args: argparse.Namespace, cfg: Config) -> None:
    from sslops.api import run_stage

    run_stage(
        args.command, cfg, args.out, {flag: getattr(args, flag, None) for flag in INPUT_STAGE}
    )
    print(f"{args.command}: wrote {args.out}")


def _print_schema(args: argparse.Namespace) -> int:
    if args.config or args.overrides or args.json:
        raise ConfigError("sslops config --schema describes every config: it takes no --config, "
                          "--set or --json")  # fmt: skip
    from sslops.config_reference import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def _portable_paths_and_output(args: argparse.Namespace) -> None:
    """Whatever machine runs it: ``--out=~/runs/x`` reaches sslops unexpanded (a shell expands
    ``~`` only at the start of a word), so expand it as data paths are rather than create a
    folder named ``~``; and where stdout cannot encode a path or column name (an ASCII locale,
    a folder name in Latin-1 bytes), print it escaped rather than fail after the work is done."""
    for name, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, name, value.expanduser())
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            setattr(args, name, [v.expanduser() for v in value])
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def describe_unencodable(exc: UnicodeEncodeError) -> str:
    """A path that cannot become bytes: non-ASCII under an ASCII locale, or a name whose bytes
    are not UTF-8 (Python keeps those as surrogates, which pyarrow cannot pass on). Names the
    file or folder holding the characters, as its bytes where it has them."""
    where = sys.getfilesystemencoding()
    start = exc.object.rfind(os.sep, 0, exc.start) + 1
    end = exc.object.find(os.sep, exc.end)
    name = exc.object[start : end if end >= 0 else None]
    try:
        shown = repr(name.encode(where, "surrogateescape"))
    except UnicodeEncodeError:
        shown = repr(name)
    if where == "utf-8":
        return (
            f"the file or folder name {shown} is not UTF-8 text; rename it with UTF-8 "
            "characters (e.g. convmv -f latin1 -t utf-8 --notest NAME)"
        )
    return (
        f"the file or folder name {shown} cannot be used under this locale, whose file "
        f"names are {where}; run under a UTF-8 locale (LANG=C.UTF-8) or with PYTHONUTF8=1"
    )


@stdout_flushed_at_the_end
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _portable_paths_and_output(args)
    quiet_config_dir()
    try:
        json_log = log_format() == "json"
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not json_log:
        with sigterm_as_interrupt():
            return _main(args)
    stage = (
        args.command
        if args.command in LOG_STAGES and not getattr(args, "audit_command", None)
        else None
    )
    stderr, lines = sys.stderr, JsonLines(sys.stderr, stage=stage)
    sys.stderr = lines
    try:
        with sigterm_as_interrupt():
            return _main(args)
    except Exception:  # a bug: its traceback as one object, not one per line
        say(lines, traceback.format_exc(), level="critical")
        return 1
    finally:
        lines.finish()
        sys.stderr = stderr


def _main(args: argparse.Namespace) -> int:
    try:
        if args.command == "compile":
            from sslops.pipeline.ssl_pipeline import compile_pipeline

            check_yaml_out(args.out)
            given = args.config is not None or args.overrides
            cfg = load_config(args.config, args.overrides) if given else None
            with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=".sslops-compile-") as tmp:
                os.replace(compile_pipeline(Path(tmp) / "pipeline.yaml", cfg), args.out)
            print(f"compiled {args.out}")
            print("next: upload it in the KFP UI (Pipelines > Upload pipeline) and create a run "
                  "from it; or compile, upload and start a run in one step with sslops submit "
                  "(docs/deploy.md, step 9)", file=sys.stderr)  # fmt: skip
            return 0
        if args.command in k8s_commands.COMMANDS:
            return k8s_commands.run(args)
        if args.command in shadow_commands.COMMANDS:
            return shadow_commands.run(args)
        if args.command == "predict":
            return _cmd_predict(args)
        if args.command == "schedule-predict":
            return _cmd_schedule_predict(args)
        if args.command == "audit" and args.audit_command:
            return _cmd_audit_tool(args)
        if args.command == "audit":
            missing = [f"--{f}" for f in ("prepared", "pretrained", "finetuned", "evaluation",
                                          "exported", "out") if getattr(args, f) is None]  # fmt: skip
            if missing:
                raise ConfigError(
                    f"sslops audit needs {', '.join(missing)} (or: sslops audit verify BUNDLE)"
                )
        if args.command == "config" and args.schema:
            return _print_schema(args)
        cfg = load_config(args.config, args.overrides)
        handlers: dict[str, Callable[[argparse.Namespace, Config], None]] = {"run": _cmd_run}
        if args.command == "config":
            data = cfg.model_dump(mode="json")
            text = json_text(data) + "\n" if args.json else yaml.safe_dump(data, sort_keys=False)
            print(text, end="")
            return 0
        handlers.get(args.command, _cmd_stage)(args, cfg)
    except GateError as exc:  # the input was fine; the model is not fit to ship
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_GATE
    except SslopsError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # environment: folder not writable, disk full, ...
        if isinstance(exc, BrokenPipeError) and stdout_gone():  # `| head -1` had enough
            return stdout_closed()
        print(f"error: {one_line(describe_os_error(exc))}", file=sys.stderr)
        return 2
    except Terminated as exc:  # pretraining's says where its checkpoint is
        where = f"; {one_line(str(exc))}" if str(exc) else ""
        print(f"terminated (SIGTERM); no partial output was kept{where}", file=sys.stderr)
        return EXIT_SIGTERM
    except UnicodeEncodeError as exc:  # a file name the locale or pyarrow cannot encode
        print(f"error: {one_line(describe_unencodable(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # `sslops run`'s says where its finished stages are
        where = f"; {one_line(str(exc))}" if str(exc) else ""
        print(f"interrupted; no partial output was kept{where}", file=sys.stderr)
        return EXIT_SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
