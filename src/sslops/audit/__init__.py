"""The audit stage: signed compliance bundle, model card, policy gates, verification.

The stage (``audit``, ``build_lineage``) is imported on first use: verifying and
reproducing a bundle (:mod:`sslops.audit.bundle`, :mod:`sslops.audit.reproduce`) must
run where only numpy, pandas, onnxruntime, scikit-learn and cryptography are installed.
"""

from typing import Any

from sslops.audit.bundle import (
    BUNDLE_DIR,
    MANIFEST,
    SIGNATURE,
    ZIP_NAME,
    generate_keypair,
    load_public_key,
    verify_bundle,
)

__all__ = [
    "BUNDLE_DIR",
    "MANIFEST",
    "SIGNATURE",
    "ZIP_NAME",
    "audit",
    "build_lineage",
    "generate_keypair",
    "load_public_key",
    "verify_bundle",
]


def __getattr__(name: str) -> Any:
    if name in {"audit", "build_lineage"}:
        from sslops.audit import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'sslops.audit' has no attribute {name!r}")
