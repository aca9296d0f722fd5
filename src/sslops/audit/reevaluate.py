"""Re-verification of a bundle from its own artifacts (the engine of ``sslops audit reproduce``).

A third party holding the bundle, the frozen test split and the issuer's public key
checks that

1. the bundle's signature verifies with that key and every file matches the manifest;
2. the test data hashes to the test split recorded in ``lineage.json``;
3. the bundle's own ``model.onnx``, run with ONNX Runtime on that split with the
   bundle's decision threshold and label, positive class and sensitive columns from
   its resolved config, reproduces every metric the bundle reports for the deployed
   model (``evidence/evaluate/metrics.json``: overall, per group, fairness gaps,
   bootstrap intervals, confusion matrix), the int8 results of
   ``evidence/export/export.json`` and the values in ``gates.json``, each within the
   tolerance in :data:`TOLERANCES`;

and writes a signed attestation (:mod:`sslops.audit.attestation`) with the verdict.
Nothing else is read: no run folder, no training code. This module and what it imports
need only numpy, pandas (pyarrow for Parquet), onnxruntime, scikit-learn and
cryptography, so ``python -m sslops.audit.reproduce`` runs in a minimal environment.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sslops.artifacts import replacing, sha256_file
from sslops.audit.attestation import ATTESTATION, write_attestation
from sslops.audit.bundle import (
    MANIFEST,
    BundleFiles,
    DamagedFile,
    bundle_root,
    check_signature,
    fingerprint,
    load_private_key,
    load_public_key,
    verify_bundle,
)  # fmt: skip
from sslops.audit.gates import gated_columns, largest_gap
from sslops.audit.remeasure import remeasure
from sslops.audit.reproduce import TEST_SPLIT, VERIFIER_KEY_ENV
from sslops.data.canonicalize import label_hits
from sslops.errors import ArtifactError, ConfigError, DataError

MODEL, INT8_MODEL = "model.onnx", "model.int8.onnx"
METRICS, EXPORT = "evidence/evaluate/metrics.json", "evidence/export/export.json"
TOLERANCES: dict[str, dict[str, Any]] = {
    "labels": {
        "value": 1e-9,
        "why": "accuracy, rates, gaps, counts and their intervals depend only on the decisions; "
        "the export stage checked that ONNX and torch decide identically on every test row, "
        "so the numbers are equal up to float rounding",
    },
    "scores": {
        "value": 1e-4,
        "why": "ROC AUC and calibration error depend on the probabilities, which ONNX Runtime "
        "matches to the torch model within the parity gate max_onnx_abs_diff = 1e-4",
    },
    "int8": {
        "value": 5e-3,
        "why": "int8 kernels differ between CPUs (VNNI, AVX2 and AVX-512 paths round "
        "differently), so a few borderline rows may flip; half an accuracy point",
    },
}
_SUMMARY = ("accuracy", "roc_auc", "selection_rate", "dp_difference", "eo_difference",
            "eopp_difference")  # fmt: skip
_CELLS = ("tn", "fp", "fn", "tp")
_GATE_METRICS = {"min_accuracy": "accuracy", "min_auc": "roc_auc",
                 "max_dp_difference": "dp_difference", "max_eo_difference": "eo_difference"}  # fmt: skip
_GAP_GATES = ("max_dp_difference", "max_eo_difference")  # the largest over data.sensitive
PACKAGES = ("sslops", "numpy", "pandas", "pyarrow", "onnxruntime", "scikit-learn", "cryptography")


def _json(files: BundleFiles, name: str) -> Any:
    if name not in files.names():
        raise ArtifactError(f"{files.path} has no {name}; a bundle written by sslops audit has it")
    try:
        return json.loads(files.read(name))
    except DamagedFile as exc:
        raise ArtifactError(f"{files.path}: {exc}; the bundle cannot be re-evaluated") from None


def _sha256(files: BundleFiles, name: str) -> str | None:
    """sha256 of a member, None when it is missing or damaged (the integrity check says so)."""
    try:
        return files.sha256(name) if name in files.names() else None
    except DamagedFile:
        return None


def _model(files: BundleFiles) -> bytes | None:
    """The deployed ONNX model's bytes; None when it is missing or a damaged zip member (the
    integrity check names it, and the attestation records that nothing was re-evaluated)."""
    if MODEL not in files.names():
        return None
    try:
        return files.read(MODEL)
    except DamagedFile:
        return None


def _stage_config(files: BundleFiles, stage: str) -> dict[str, Any]:
    """The config a stage ran with: configs/<stage>.json where it differed, else config.json."""
    name = f"configs/{stage}.json"
    return dict(_json(files, name if name in files.names() else "config.json"))


def check_test_data(data: Path, lineage: dict[str, Any]) -> dict[str, Any]:
    """The test split file given (or inside a prepared folder) against lineage.json."""
    file = data / TEST_SPLIT if data.is_dir() else data
    if not file.is_file():
        raise DataError(f"--data: {file} not found (give a prepared folder or its {TEST_SPLIT})")
    expected = lineage.get("chain", {}).get("prepared splits", {}).get(TEST_SPLIT)
    if not expected:
        raise ArtifactError(f"lineage.json records no sha256 of the prepared {TEST_SPLIT}")
    actual = sha256_file(file)
    if actual != expected:
        raise DataError(
            f"--data: {file} has sha256 {actual}, expected {expected} (the frozen test split "
            "recorded in the bundle's lineage.json)"
        )
    return {"file": str(file), "expected_sha256": expected, "actual_sha256": actual,
            "result": "matches"}  # fmt: skip


def _feed(session: ort.InferenceSession, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """One array per raw column as the graph declares it: float32 with NaN, or strings with ''."""
    feed: dict[str, np.ndarray] = {}
    for item in session.get_inputs():
        if item.name not in frame.columns:
            raise ArtifactError(f"{MODEL} takes a column {item.name!r} the test split lacks")
        column = frame[item.name]
        if item.type == "tensor(string)":
            values = column.to_numpy(dtype=object)
            feed[item.name] = np.array(["" if pd.isna(v) else str(v) for v in values], dtype=object)
        else:
            feed[item.name] = column.astype("float64").to_numpy().astype(np.float32)
    return feed


def score_onnx(model: bytes, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, str]]:
    """Probabilities of the positive class and the model's metadata_props."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    score = np.asarray(session.run(None, _feed(session, frame))[0])
    if score.shape != (len(frame),):
        raise ArtifactError(f"{MODEL} output has shape {score.shape}, expected ({len(frame)},)")
    return score.astype(np.float64), dict(session.get_modelmeta().custom_metadata_map)


def target(frame: pd.DataFrame, label: str, positive: Any) -> np.ndarray:
    """1 where the label is the positive class, compared as prepare does."""
    return label_hits(frame[label], positive).to_numpy().astype(np.int64)


def flatten(record: dict[str, Any], matrix: list[list[int]] | None) -> dict[str, Any]:
    """Every number of one model's metrics record under a name a failure line can show."""
    out: dict[str, Any] = {k: record[k] for k in _SUMMARY if k in record}
    for column, groups in record.get("by_group", {}).items():
        for group, row in groups.items():
            out.update({f"by_group[{column}={group}].{k}": v for k, v in row.items()})
    for column, gaps in record.get("gaps", {}).items():
        out.update({f"gaps[{column}].{k}": v for k, v in gaps.items()})
    for metric, (low, high) in record.get("intervals", {}).items():
        out[f"intervals.{metric}.low"], out[f"intervals.{metric}.high"] = low, high
    for column, intervals in record.get("gap_intervals", {}).items():
        for metric, (low, high) in intervals.items():
            out[f"gap_intervals[{column}].{metric}.low"] = low
            out[f"gap_intervals[{column}].{metric}.high"] = high
    for column, groups in record.get("group_intervals", {}).items():
        for group, intervals in groups.items():
            for metric, (low, high) in intervals.items():
                out[f"group_intervals[{column}={group}].{metric}.low"] = low
                out[f"group_intervals[{column}={group}].{metric}.high"] = high
    if matrix is not None:
        cells = [value for row in matrix for value in row]
        out.update({f"confusion_matrix.{c}": v for c, v in zip(_CELLS, cells, strict=True)})
    return out


def _tolerance(name: str) -> float:
    if name.startswith("int8."):
        return float(TOLERANCES["int8"]["value"])
    if name.startswith("gates."):  # gates.<gate>.value: the tolerance of what it measures
        name = _GATE_METRICS.get(name.split(".")[1], name)
    scored = name.endswith(("roc_auc", ".ece")) or ".roc_auc." in name or ".ece." in name
    return float(TOLERANCES["scores" if scored else "labels"]["value"])


def _finite(value: Any) -> float | None:
    return None if value is None or value != value else float(value)


def compare(reported: dict[str, Any], reproduced: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for name, claimed in reported.items():
        got, tol = _finite(reproduced.get(name)), _tolerance(name)
        claimed = _finite(claimed)
        diff = None if claimed is None or got is None else abs(claimed - got)
        if diff is None:
            passed = claimed is None and got is None and name in reproduced
        else:
            passed = diff <= tol
        checks.append({"metric": name, "reported": claimed, "reproduced": got,
                       "difference": diff, "tolerance": tol, "passed": passed})  # fmt: skip
    return checks


def failure_line(check: dict[str, Any]) -> str:
    def show(v: float | None) -> str:
        return "undefined" if v is None else f"{v:.6g}"

    return (
        f"{check['metric']}: reported {show(check['reported'])}, reproduced "
        f"{show(check['reproduced'])}, tolerance {check['tolerance']:g}"
    )


def _int8_claims(files: BundleFiles, exported: dict[str, Any], frame: pd.DataFrame,
                 fp32: np.ndarray, y: np.ndarray, threshold: float) -> tuple[dict, dict]:  # fmt: skip
    quant = exported.get("quantization")
    if not quant or INT8_MODEL not in files.names():
        return {}, {}
    try:
        int8, _ = score_onnx(files.read(INT8_MODEL), frame)
    except DamagedFile:  # named by the integrity check; its claims cannot be re-checked
        return {}, {}
    fp32_label, int8_label = fp32 >= threshold, int8 >= threshold
    reproduced = {
        "int8.accuracy_fp32": float(np.mean(fp32_label == y)),
        "int8.accuracy_int8": float(np.mean(int8_label == y)),
        "int8.label_agreement": float(np.mean(fp32_label == int8_label)),
    }
    return {k: quant[k.removeprefix("int8.")] for k in reproduced}, reproduced


def _environment() -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": packages}  # fmt: skip


def reproduce(
    bundle: Path, data: Path, public_key: Path, out_dir: Path, *, key_file: Path | None = None,
    verifier: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Re-verify ``bundle``; writes the signed attestation to ``out_dir`` and returns its record.

    Raises :class:`SslopsError` (and writes nothing) when the inputs are unusable: a key
    that cannot be read, a bundle without the files needed, or test data that is not the
    frozen split. Everything about the bundle itself is a check in the record.
    """
    trusted = load_public_key(Path(public_key), "--public-key")
    key = load_private_key(key_file, VERIFIER_KEY_ENV, True, "--key-file",
                           "the attestation is signed with the verifier's key")  # fmt: skip
    assert key is not None
    if fingerprint(key.public_key()) == fingerprint(trusted):
        raise ConfigError(
            "the verifier key is the issuer's key (it matches --public-key); an attestation "
            "must be signed with the verifier's own key"
        )
    root = bundle_root(Path(bundle))
    if not root.exists():
        raise ArtifactError(f"bundle not found: {root}")
    inputs = (Path(bundle), Path(data))
    # Before any work, and held to the end: two verifiers writing one folder at once would
    # both pass the check below, and the second would replace the first's signed record.
    with replacing(Path(out_dir), "audit reproduce", "attestation", ATTESTATION, inputs=inputs):
        if (Path(out_dir) / ATTESTATION).is_file():  # a signed record: never replaced
            raise ArtifactError(
                f"{out_dir} already holds an attestation; an attestation is a record and is "
                "not replaced: give another --out (or move that one away yourself)"
            )
        with BundleFiles(root) as files:  # closed before the attestation is written, or on an error
            record = _reevaluate(files, Path(data), trusted, key, verifier)
        write_attestation(Path(out_dir), record, key, inputs=inputs)
    return record


def _reevaluate(
    files: BundleFiles, data: Path, trusted: Ed25519PublicKey, key: Ed25519PrivateKey,
    verifier: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The attestation's record: the bundle's files checked and its model re-evaluated."""
    root = files.path
    metrics, exported = _json(files, METRICS), _json(files, EXPORT)
    lineage, gates = _json(files, "lineage.json"), _json(files, "gates.json")
    data_check = check_test_data(Path(data), lineage)
    prepare_cfg, evaluate_cfg = _stage_config(files, "prepare"), _stage_config(files, "evaluate")
    deployed = exported["model"]
    if deployed not in metrics.get("models", {}):
        raise ArtifactError(f"{METRICS} reports no metrics for the deployed model {deployed!r}")

    signature_problems, signature = check_signature(files, trusted)
    integrity = [p for p in verify_bundle(root, trusted)["problems"] if p not in signature_problems]

    threshold = float(metrics["threshold"])
    frame = pd.read_parquet(data_check["file"])
    y = target(frame, prepare_cfg["data"]["label"], prepare_cfg["data"]["positive"])
    sensitive = list(prepare_cfg["data"]["sensitive"])
    groups = {
        c: frame[c].astype("string").fillna("(missing)").to_numpy(dtype=str) for c in sensitive
    }
    ev = evaluate_cfg["evaluate"]
    model = _model(files)
    checks: list[dict[str, Any]] = []
    onnx_meta: dict[str, str] = {}
    if model is not None:
        score, onnx_meta = score_onnx(model, frame)
        again = remeasure(y, score, threshold, groups, intersections=bool(ev["intersections"]),
                          resamples=int(ev["bootstrap"]), seed=int(evaluate_cfg["seed"]),
                          min_group_rows=int(ev.get("min_group_rows", 0)))  # fmt: skip
        matrix = metrics.get("confusion_matrices", {}).get(deployed)
        reported = {"rows": metrics["rows"], "decision_threshold": float(exported["metadata"]
                    ["decision_threshold"]), **flatten(metrics["models"][deployed], matrix)}  # fmt: skip
        reproduced = {"rows": len(y), "decision_threshold": threshold,
                      **flatten(again, again["confusion_matrix"])}  # fmt: skip
        gated = gated_columns(_json(files, "config.json"))  # what the fairness gates bound
        for row in gates.get("results", []):
            if row["gate"] in _GATE_METRICS and row.get("value") is not None:
                reported[f"gates.{row['gate']}.value"] = row["value"]
                reproduced[f"gates.{row['gate']}.value"] = largest_gap(
                    again, _GATE_METRICS[row["gate"]], gated
                ) if row["gate"] in _GAP_GATES else again[_GATE_METRICS[row["gate"]]]  # fmt: skip
        claimed8, again8 = _int8_claims(files, exported, frame, score, y, threshold)
        checks = compare({**reported, **claimed8}, {**reproduced, **again8})

    failures = [f"signature: {p}" for p in signature_problems]
    failures += [f"integrity: {p}" for p in integrity]
    failures += [failure_line(c) for c in checks if not c["passed"]]
    if model is None:
        failures.append(f"metrics: none re-evaluated: the bundle's {MODEL} is missing or damaged")
    return {
        "attestation_format": 1,
        "kind": "sslops audit reproduce",
        "result": "failed" if failures else "passed",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle": {
            "path": str(root),
            "manifest_sha256": _sha256(files, MANIFEST),
            "model": deployed,
            "model_onnx_sha256": None if model is None else hashlib.sha256(model).hexdigest(),
            "model_onnx_metadata": {k: v for k, v in onnx_meta.items() if k not in {"inputs", "feature_names"}},
        },
        "signature": {"result": "failed" if signature_problems else "verified",
                      "trusted_key_fingerprint": fingerprint(trusted),
                      "signed_by": signature.get("key_fingerprint"), "problems": signature_problems},
        "integrity": {"result": "failed" if integrity else "intact", "problems": integrity},
        "data": data_check,
        "evaluation": {"runtime": f"onnxruntime {ort.__version__}", "rows": len(y),
                       "threshold": threshold, "label": prepare_cfg["data"]["label"],
                       "positive": prepare_cfg["data"]["positive"], "sensitive": sensitive,
                       "bootstrap": int(ev["bootstrap"]), "seed": int(evaluate_cfg["seed"]),
                       "not_reproduced": "other models, shortcut, OOD and label-efficiency "
                       "results (the bundle holds no runnable artifact for them)"},
        "tolerances": TOLERANCES,
        "checks": checks,
        "failures": failures,
        "environment": _environment(),
        "verifier": {"name": verifier or f"{getpass.getuser()}@{platform.node()}",
                     "key_fingerprint": fingerprint(key.public_key())},
    }  # fmt: skip
