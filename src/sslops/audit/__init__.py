"""The audit stage: signed compliance bundle, model card, policy gates, verification."""

from sslops.audit.bundle import (
    BUNDLE_DIR,
    MANIFEST,
    SIGNATURE,
    ZIP_NAME,
    generate_keypair,
    load_public_key,
    verify_bundle,
)
from sslops.audit.stage import audit, build_lineage

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
