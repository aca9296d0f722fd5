"""Offline schema validation of generated Kubernetes objects (no cluster needed).

Built-in kinds are checked with ``kubernetes-validate`` (strict: unknown fields fail) at
a given Kubernetes version; custom resources with ``jsonschema`` against the
``openAPIV3Schema`` of their CustomResourceDefinition. Kubernetes rejects unknown fields
of a CR under strict field validation, so the CRD schema is tightened the same way:
every object schema with ``properties`` gets ``additionalProperties: false`` unless it
preserves unknown fields.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sslops.errors import ConfigError, SslopsError

KUBERNETES_VERSION = "1.31.0"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")


class ManifestError(SslopsError):
    """A generated object does not match the schema of its kind."""


def check_dns_label(value: str, flag: str, max_length: int = 63) -> str:
    """``value`` of ``flag`` (a namespace, a Helm release name) as Kubernetes takes it: a
    DNS-1123 label of at most ``max_length`` characters (Helm allows 53 for a release)."""
    if len(value) > max_length or not re.fullmatch(_DNS_LABEL, value):
        raise ConfigError(
            f"{flag} {value!r}: expected a DNS-1123 label (lowercase letters, digits and '-', "
            f"at most {max_length} characters)"
        )
    return value


def _closed(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {key: _closed(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def load_crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind) -> closed openAPIV3Schema`` for every CRD file in ``crd_dir``."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes
        for crd in yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = _closed(schema)
    if not schemas:
        raise ManifestError(f"no CustomResourceDefinition found in {crd_dir}")
    return schemas


def _where(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def _check_metadata(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise ManifestError(f"{_where(obj)}: metadata.name {name!r} is not a DNS-1123 subdomain")
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63:
            raise ManifestError(f"{_where(obj)}: label {key}={value!r} is not a valid label value")


def validate_object(
    obj: dict[str, Any],
    crd_schemas: dict[tuple[str, str], dict[str, Any]],
    kubernetes_version: str = KUBERNETES_VERSION,
) -> str:
    """Validate one object; returns how (``"crd"`` or ``"kubernetes"``), raises ManifestError."""
    import jsonschema
    import kubernetes_validate

    _check_metadata(obj)
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in crd_schemas:
        try:
            jsonschema.Draft7Validator(crd_schemas[key]).validate(obj)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ManifestError(f"{_where(obj)}: {path}: {exc.message}") from None
        return "crd"
    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(root)"
        raise ManifestError(f"{_where(obj)}: {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError:
        raise ManifestError(
            f"{_where(obj)}: no schema for {key[0]} {key[1]}: neither a Kubernetes "
            f"{kubernetes_version} kind nor a CRD in the schema folder"
        ) from None
    return "kubernetes"


def validate_all(
    objects: Iterable[dict[str, Any]],
    crd_schemas: dict[tuple[str, str], dict[str, Any]],
    kubernetes_version: str = KUBERNETES_VERSION,
) -> dict[str, int]:
    """Validate every object; returns counts per kind. The first invalid one raises."""
    counts: dict[str, int] = {}
    for obj in objects:
        validate_object(obj, crd_schemas, kubernetes_version)
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    return counts


def load_documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document manifest."""
    return [doc for doc in yaml.safe_load_all(text) if doc]
