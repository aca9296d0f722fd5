"""The container image the KFP components run in: one registry setting, tag = package version."""

from __future__ import annotations

import os

from sslops import __version__

DEFAULT_REGISTRY = "ghcr.io/sslops"


def base_image() -> str:
    """``$SSLOPS_IMAGE_REGISTRY/sslops:<version>`` (an air-gapped mirror sets the registry)."""
    registry = os.environ.get("SSLOPS_IMAGE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    return f"{registry}/sslops:{__version__}"
