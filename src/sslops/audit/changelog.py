"""The change log of a bundle against an earlier one (``audit.previous_bundle``).

The earlier bundle is verified first: a change log against a bundle that fails verification
is refused (its figures would be presented as the previous ones), and the result of an
intact one (signed or not) is recorded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sslops.artifacts import null_as_nan
from sslops.audit.bundle import MANIFEST, BundleFiles, bundle_root, read_bundle_json, verify_bundle
from sslops.errors import ArtifactError

METRICS = ("accuracy", "roc_auc", "dp_difference", "eo_difference", "selection_rate")
# bundle_format 1 kept the stage files at the top level
_LOCATIONS = {
    "metrics": ("evidence/evaluate/metrics.json", "metrics.json"),
    "export": ("evidence/export/export.json", "export.json"),
}


def _find(path: Path, kind: str) -> dict[str, Any]:
    for name in _LOCATIONS[kind]:
        try:
            found: dict[str, Any] = read_bundle_json(path, name)
            return null_as_nan(found) if kind == "metrics" else found
        except ArtifactError:
            continue
    return {}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def build_changelog(previous: Path, bundle: Path) -> dict[str, Any]:
    """Metric deltas per model, and notes on what else changed (model bytes, config keys)."""
    previous = Path(previous).expanduser()
    if not previous.exists():
        raise ArtifactError(f"audit.previous_bundle: not found: {previous}")
    check = verify_bundle(previous)
    if check["problems"]:  # its figures would be shown as "previous" with nothing behind them
        problems = "; ".join(check["problems"][:3]) + (
            "; ..." if len(check["problems"]) > 3 else ""
        )
        raise ArtifactError(
            f"audit.previous_bundle {previous} failed verification ({problems}): a change log "
            "against it would present figures nobody can vouch for; give an intact bundle or "
            "unset audit.previous_bundle"
        )
    root = bundle_root(previous)
    with BundleFiles(root) as files:
        manifest_sha = hashlib.sha256(files.read(MANIFEST)).hexdigest()
    before, now = _find(previous, "metrics"), _find(bundle, "metrics")
    rows = []
    for model, values in now.get("models", {}).items():
        old = before.get("models", {}).get(model)
        for metric in METRICS:
            if old is None or metric not in values or metric not in old:
                continue
            rows.append({
                "model": model, "metric": metric, "previous": old[metric], "now": values[metric],
                "change": values[metric] - old[metric],
            })  # fmt: skip
    notes = []
    old_export, new_export = _find(previous, "export"), _find(bundle, "export")
    if old_export.get("onnx_sha256") != new_export.get("onnx_sha256"):
        notes.append("model.onnx changed (different sha256)")
    for key in ("training_data_sha256",):
        if old_export.get("metadata", {}).get(key) != new_export.get("metadata", {}).get(key):
            notes.append("training data changed (different sha256)")
    try:
        old_cfg = _flatten(read_bundle_json(previous, "config.json"))
        new_cfg = _flatten(read_bundle_json(bundle, "config.json"))
        changed = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
        changed = [k for k in changed if k != "audit.previous_bundle"]
        if changed:
            notes.append("config keys changed: " + ", ".join(changed))
    except ArtifactError:
        notes.append("the previous bundle has no config.json")
    return {
        "previous": {
            "path": str(previous),
            "manifest_sha256": manifest_sha,
            "verification": "intact" if not check["problems"] else "; ".join(check["problems"]),
            "signed": check.get("signed", False),
        },
        "metrics": rows,
        "notes": notes,
    }
