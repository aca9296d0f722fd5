"""sslops: self-supervised pretraining to audited, fairness-checked ONNX models.

``__version__`` is recorded in every artifact (export metadata, audit bundle, stage cache
key, the KFP components' image tag), so it is never a made-up number: imported from a
source tree (a checkout, an unpacked sdist, an editable install) it is that tree's
``pyproject.toml`` version, which an install's metadata could lag behind; installed from a
wheel, the installed metadata's. With neither, it is ``0+unknown`` (a PEP 440 local version
no release has, and no valid image tag), never a release's number.
"""

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

UNKNOWN_VERSION = "0+unknown"


def _source_tree_version() -> str | None:
    """The version in the ``pyproject.toml`` of the source tree this package is imported from."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if project.get("name") != "sslops" or not isinstance(project.get("version"), str):
        return None
    return str(project["version"])


def _version() -> str:
    found = _source_tree_version()
    if found:
        return found
    try:
        return version("sslops")
    except PackageNotFoundError:  # copied without metadata and without its pyproject.toml
        return UNKNOWN_VERSION


__version__ = _version()

__all__ = ["__version__"]
