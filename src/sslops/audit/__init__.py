"""The audit stage: model card, lineage and a manifest of hashes for the compliance file."""

from sslops.audit.stage import MANIFEST, audit, build_lineage

__all__ = ["MANIFEST", "audit", "build_lineage"]
