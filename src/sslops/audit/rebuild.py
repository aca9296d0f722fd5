"""``sslops audit compare FILED REBUILT``: is a rebuilt bundle the filed one, bit for bit?

An examiner rebuilds a filed model (the bundle's ``config.json``, the raw data whose sha256
``lineage.json`` records, the same sslops and packages) and compares the two bundles file by
file. Each file listed in either ``manifest.json`` is

- identical (the same sha256);
- explained: a JSON file (or the card) that differs only in fields known to differ
  between two runs of the same inputs, each named below with why (when a stage ran and
  how fast, the SBOM's serial number, how the run was started, a data path whose file
  has the same sha256);
- environment: a difference in ``environment.json``, the SBOM's package list, the
  container image, or the package versions and git commit in ``lineage.json``; reported, since it is the likely cause of any other difference, but
  not a difference of the model;
- unexplained: anything else, with the JSON fields (or "bytes differ") that differ.

The two bundles are checked against their own manifests first; a damaged one is
unexplained too. Nothing is written. The signature is not compared (the rebuild is signed
with the examiner's key, or not at all): ``sslops audit verify`` checks it.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from sslops.artifacts import json_text
from sslops.audit.bundle import MANIFEST, SIGNATURE, BundleFiles, bundle_root, verify_bundle
from sslops.errors import ArtifactError

# The throughput logs pretrain writes: wall-clock samples per second beside every loss.
_PRETRAIN_TIMING = ("history.json", "history.jsonl", "metrics.jsonl", "summary.json")

# file -> (field patterns: "/"-separated, fnmatch wildcards per segment, each naming the
# field and everything under it; why they differ)
VOLATILE: dict[str, tuple[tuple[str, ...], str]] = {
    "lineage.json": (
        (
            "stages/*/started",
            "stages/*/ended",
            "stages/*/seconds",
            "stages/*/time_source",
            "stages/*/meta_sha256",
            "stages/*/inputs/*",
            *(f"stages/pretrain/files/{name}" for name in _PRETRAIN_TIMING),
        ),
        "when each stage ran, and the sha256 of the files that record it: each stage's "
        "meta.json (start and end times, host, artifact paths) and pretrain's throughput logs",
    ),
    "evidence/pretrain/summary.json": (
        ("seconds", "samples_per_s"),
        "wall-clock training time and throughput",
    ),
    "evidence/pretrain/history.json": (("*/samples_per_s",), "throughput per epoch"),
    "sbom.cdx.json": (
        ("metadata/timestamp", "serialNumber"),
        "when the SBOM was written, and its serial number (CycloneDX: unique per SBOM)",
    ),
    "run.json": (
        ("executed_by", "kfp_run_id", "kfp_artifact_uri"),
        "how this build was started (command line, sslops run, KFP) and its run id",
    ),
}
# Files whose every difference is one of the environment the build ran in.
_ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "environment.json": ("*",),
    "sbom.cdx.json": (
        "components/pypi:*",
        "components/deb:*",
        "dependencies/*",
        "metadata/component/version",
    ),
    "run.json": ("image*",),  # image, image_pinned_by, image_immutable, image_from
    "lineage.json": ("stages/*/versions", "stages/*/git_commit"),
}
# Config keys that say where something is kept or which key signs, not what is built (a
# rebuild is not filed in the issuer's registry, nor signed with the issuer's key).
_LOCATION_KEYS = ("pretrain/checkpoint_dir", "audit/registry", "audit/signing")
CARD = "model_card.md"
_CARD_RENDERINGS = ("model_card.html", "model_card.pdf")
# Lines of the card that show the explained fields above: when it was generated, how it ran.
_CARD_VOLATILE = re.compile(
    r"^- (Generated \S+ by sslops |Executed by: |Container image: |Bundle signature: )"
)
# A compliance row of the card that cites the signature (the map's rows, docs/audit.md).
_CARD_SIGNED_ROW = re.compile(r"^\| .*\bsignature\.json\b")
_SIGNED_WHY = "the rebuild is signed with another key or not at all (signature.json)"


_RECORD_KEYS = ("stage", "bom-ref", "ref", "id")


def _leaves(obj: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every scalar of a JSON document by its path; a list of records with a name
    (lineage.json's stages, the SBOM's components) is keyed by it, so one record's field is
    named the same in both bundles whatever else the list holds."""
    for key in _RECORD_KEYS:
        if (
            isinstance(obj, list)
            and obj
            and all(isinstance(x, dict) and isinstance(x.get(key), str) for x in obj)
            and len({x[key] for x in obj}) == len(obj)  # a name, not a kind
        ):
            obj = {x[key]: x for x in obj}
            break
    if isinstance(obj, dict) and obj:
        items: list[tuple[Any, Any]] = list(obj.items())
    elif isinstance(obj, list) and obj:
        items = list(enumerate(obj))
    else:
        return {prefix: obj}
    found: dict[tuple[str, ...], Any] = {}
    for key, value in items:
        found.update(_leaves(value, (*prefix, str(key))))
    return found


def _same(a: Any, b: Any) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and a != a and b != b
    return both_nan or (type(a) is type(b) and a == b)


Field = tuple[str, ...]  # a path into a JSON document: ("stages", "pretrain", "started")


def _differing(a: Any, b: Any) -> list[Field]:
    left, right = _leaves(a), _leaves(b)
    return [
        path
        for path in sorted(set(left) | set(right))
        if path not in left or path not in right or not _same(left[path], right[path])
    ]


def json_differences(a: Any, b: Any) -> list[str]:
    """The paths (``stages/pretrain/started``) where two JSON documents differ."""
    return ["/".join(path) for path in _differing(a, b)]


def _matches(parts: Field, patterns: tuple[str, ...]) -> bool:
    """A pattern names a field and everything under it, one fnmatch wildcard per segment."""
    return any(
        len(parts) >= len(want) and all(map(fnmatchcase, parts, want))
        for want in (pattern.split("/") for pattern in patterns)
    )


class _Side:
    def __init__(self, path: Path) -> None:
        self.path = bundle_root(Path(path))
        if not self.path.exists():
            raise ArtifactError(f"bundle not found: {path}")
        self.integrity = verify_bundle(self.path)["problems"]
        self.files = BundleFiles(self.path)
        manifest = self.json(MANIFEST)
        self.listed: dict[str, str] = manifest.get("files", {}) if manifest else {}
        self.signed = SIGNATURE in self.files.names()

    def __enter__(self) -> _Side:
        return self

    def __exit__(self, *exc: object) -> None:
        self.files.close()

    def json(self, name: str) -> Any:
        try:
            return json.load(io.BytesIO(self.files.read(name)))
        except (KeyError, OSError, ValueError, ArtifactError):
            return None

    def text(self, name: str) -> list[str]:
        try:
            return self.files.read(name).decode("utf-8").splitlines()
        except (KeyError, OSError, UnicodeDecodeError, ArtifactError):
            return []


def _source_hashes(side: _Side) -> dict[str, str]:
    lineage = side.json("lineage.json") or {}
    return dict((lineage.get("chain") or {}).get("raw data", {}))


def _config_fields(
    fields: list[Field], filed: _Side, rebuilt: _Side
) -> tuple[list[Field], list[Field]]:
    """Split a config's differing fields into those that only name another location of the
    same content (a data file with the same sha256 in both lineages) and the rest."""
    a, b = _source_hashes(filed), _source_hashes(rebuilt)
    moved: list[Field] = []
    rest: list[Field] = []
    for field in fields:
        key = ".".join(field)
        same_data = key in a and a[key] == b.get(key)
        (moved if same_data or _matches(field, _LOCATION_KEYS) else rest).append(field)
    return moved, rest


def _card_lines(filed: _Side, rebuilt: _Side) -> list[str]:
    """The card's differing lines, but for those that show when and how it was built and,
    when one bundle is signed and the other not, the compliance rows citing signature.json."""
    a, b = filed.text(CARD), rebuilt.text(CARD)
    if len(a) != len(b):
        return [f"{len(a)} lines vs {len(b)}"]
    signing = filed.signed != rebuilt.signed
    return [
        f"line {i}: {x!r} vs {y!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True), 1)
        if x != y
        and not (_CARD_VOLATILE.match(x) and _CARD_VOLATILE.match(y))
        and not (signing and _CARD_SIGNED_ROW.match(x) and _CARD_SIGNED_ROW.match(y))
    ]


def compare_bundles(filed_path: Path, rebuilt_path: Path) -> dict[str, Any]:
    """Compare two bundles (folders, .zip or audit folders); see the module docstring."""
    with _Side(filed_path) as filed, _Side(rebuilt_path) as rebuilt:  # a .zip: closed at the end
        return _compare(filed, rebuilt)


def _compare(filed: _Side, rebuilt: _Side) -> dict[str, Any]:
    report: dict[str, Any] = {
        "filed": str(filed.path), "rebuilt": str(rebuilt.path),
        "identical": [], "explained": [], "environment": [], "unexplained": [],
    }  # fmt: skip
    for side, problems in (("filed", filed.integrity), ("rebuilt", rebuilt.integrity)):
        for problem in problems:
            report["unexplained"].append({"file": f"({side})", "detail": f"integrity: {problem}"})
    card_ok = True
    names = sorted((set(filed.listed) | set(rebuilt.listed)) - {MANIFEST, SIGNATURE})
    # The card last: its renderings are explained only when its text is.
    names.sort(key=lambda n: (n in (CARD, *_CARD_RENDERINGS), n in _CARD_RENDERINGS))
    for name in names:
        if name not in filed.listed or name not in rebuilt.listed:
            only = "filed" if name in filed.listed else "rebuilt"
            report["unexplained"].append({"file": name, "detail": f"only in the {only} bundle"})
            continue
        if filed.listed[name] == rebuilt.listed[name]:
            report["identical"].append(name)
            continue
        if name == CARD:
            lines = _card_lines(filed, rebuilt)
            card_ok = not lines
            if lines:
                report["unexplained"].append({"file": name, "detail": "; ".join(lines[:5])})
            else:
                report["explained"].append({"file": name, "fields": [],
                                            "why": "the card's lines that show when it was "
                                            "generated, how the build ran and who signed it"})  # fmt: skip
            continue
        if name in _CARD_RENDERINGS:
            entry = {"file": name, "fields": [], "why": f"a rendering of {CARD}'s document"}
            if card_ok:
                report["explained"].append(entry)
            else:
                report["unexplained"].append({"file": name, "detail": f"{CARD} differs"})
            continue
        _classify(name, filed, rebuilt, report)
    a, b = _source_hashes(filed), _source_hashes(rebuilt)
    changed = [f"{k} sha256 {a.get(k, '(none)')[:12]} vs {b.get(k, '(none)')[:12]}"
               for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]  # fmt: skip
    if changed:  # the first cause to name: the rest follows from it
        report["unexplained"].insert(0, {"file": "lineage.json", "detail": "the raw data "
            f"differs ({'; '.join(changed)}): a rebuild reads the same files, byte for byte "
            "(rows in the same order)"})  # fmt: skip
    report["result"] = (
        "differs" if report["unexplained"]
        else "identical" if not report["explained"] and not report["environment"]
        else "identical but for the fields explained"
    )  # fmt: skip
    return report


def _classify(name: str, filed: _Side, rebuilt: _Side, report: dict[str, Any]) -> None:
    a, b = filed.json(name) if name.endswith(".json") else None, None
    if a is not None:
        b = rebuilt.json(name)
    if a is None or b is None:
        detail = f"bytes differ (sha256 {filed.listed[name][:12]} vs {rebuilt.listed[name][:12]})"
        report["unexplained"].append({"file": name, "detail": detail})
        return
    fields = _differing(a, b)
    volatile, why = VOLATILE.get(name, ((), ""))
    explained = [f for f in fields if _matches(f, volatile)]
    environment = [
        f for f in fields if f not in explained and _matches(f, _ENVIRONMENT.get(name, ()))
    ]
    rest = [f for f in fields if f not in explained and f not in environment]
    if name == "config.json" or name.startswith("configs/"):
        moved, rest = _config_fields(rest, filed, rebuilt)
        if moved:
            report["explained"].append({"file": name, "fields": _names(moved), "why": "a path to the "
                                        "same content (the same sha256 in lineage.json), where "
                                        "checkpoints or the registry are kept, or which key signs"})  # fmt: skip
    if name == "compliance.json" and filed.signed != rebuilt.signed:
        rows = {str(r.get("id")) for r in (*a, *b) if "signature.json" in r.get("evidence", [])}
        signing = [f for f in rest if f[0] in rows]
        rest = [f for f in rest if f not in signing]
        if signing:
            report["explained"].append({"file": name, "fields": _names(signing),
                                        "why": _SIGNED_WHY})  # fmt: skip
    if explained:
        report["explained"].append({"file": name, "fields": _names(explained), "why": why})
    if environment:
        report["environment"].append({
            "file": name,
            "fields": [_shown(f, a, b) for f in environment],
        })  # fmt: skip
    if rest:
        report["unexplained"].append({"file": name, "detail": ", ".join(_shown(f, a, b) for f in rest[:12])
                                      + (f" and {len(rest) - 12} more" if len(rest) > 12 else "")})  # fmt: skip


def _names(fields: list[Field]) -> list[str]:
    return ["/".join(field) for field in fields]


def _shown(field: Field, a: Any, b: Any) -> str:
    left, right = _leaves(a), _leaves(b)
    return f"{'/'.join(field)}: {_value(left, field)} vs {_value(right, field)}"


def _value(leaves: dict[Field, Any], path: Field) -> str:
    if path not in leaves:
        return "(absent)"
    text = json.dumps(leaves[path])
    return text if len(text) <= 40 else text[:37] + "..."


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as ``sslops audit compare`` prints it."""
    lines = [f"identical: {len(report['identical'])} files"]
    for entry in report["explained"]:
        shown = entry["fields"][:6] + (
            [f"{len(entry['fields']) - 6} more"] if len(entry["fields"]) > 6 else []
        )
        fields = f" ({', '.join(shown)})" if shown else ""
        lines.append(f"explained: {entry['file']}{fields}: {entry['why']}")
    for entry in report["environment"]:
        lines.append(f"environment: {entry['file']}: {'; '.join(entry['fields'][:8])}")
    for entry in report["unexplained"]:
        lines.append(f"UNEXPLAINED: {entry['file']}: {entry['detail']}")
    lines.append(f"result: {report['result']}")
    return lines


COMPARE_HELP = "compare a rebuilt bundle with the filed one, file by file"
COMPARE_DESCRIPTION = (
    "Compare a filed bundle with one rebuilt from its config.json and raw data: every file "
    "is identical, differs only in fields known to differ between two runs of the same "
    "inputs (named, with why), differs in the environment, or differs unexplained. Exit 0 "
    "when nothing is unexplained; 1 naming each unexplained difference; 2 when a bundle "
    "cannot be read."
)
COMPARE_EPILOG = (
    "example:\n"
    "  sslops run --config bundle/config.json --out rebuilt   # the same data, packages, threads\n"
    "  sslops audit compare filed/bundle.zip rebuilt/audit"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filed", type=Path, metavar="FILED",
                        help="the filed bundle: folder, .zip or audit folder")  # fmt: skip
    parser.add_argument("rebuilt", type=Path, metavar="REBUILT",
                        help="the rebuilt bundle: folder, .zip or audit folder")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    report = compare_bundles(args.filed, args.rebuilt)
    if args.json:
        print(json_text(report, indent=2))
    else:
        for line in report_lines(report):
            print(line, file=sys.stderr if line.startswith("UNEXPLAINED") else sys.stdout)
    return 1 if report["unexplained"] else 0
