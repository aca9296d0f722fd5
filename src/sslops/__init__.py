"""sslops: self-supervised pretraining to audited, fairness-checked ONNX models.

The Python API (docs/python-api.md), the functions the ``sslops`` commands call::

    import sslops
    cfg = sslops.load_config("package:adult.yaml", {"pretrain.epochs": 2})
    summary = sslops.run(cfg, "runs/adult")          # the whole pipeline: a dict
    scores = sslops.predict_frame(summary["onnx"]["path"], frame)   # a DataFrame

One stage at a time: ``sslops.api.prepare``, ``pretrain``, ``finetune``, ``evaluate``,
``export``, ``audit`` (each returns its artifact folder; ``sslops.prepare`` and its
siblings are the stages' packages), or :func:`run_stage`; :func:`read_metrics` reads an
evaluation. Errors raise :class:`SslopsError` (bad
config: :class:`ConfigError`, bad data: :class:`DataError`). The names load on first
use, so ``import sslops`` stays light (no torch).

``__version__`` is recorded in every artifact (export metadata, audit bundle, stage cache
key, the KFP components' image tag), so it is never a made-up number: imported from a
source tree (a checkout, an unpacked sdist, an editable install) it is that tree's
``pyproject.toml`` version, which an install's metadata could lag behind; installed from a
wheel, the installed metadata's. With neither, it is ``0+unknown`` (a PEP 440 local version
no release has, and no valid image tag), never a release's number.
"""

import os
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

UNKNOWN_VERSION = "0+unknown"

# onnxruntime's import writes a device id and a telemetry event database under
# ~/.cache/Microsoft/DeveloperTools (and warns on stderr where HOME is read-only). sslops
# runs in air-gapped, regulated places, so that is off unless the caller set it themselves;
# it must be set before onnxruntime is first imported (docs/security.md).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


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

# name -> the module that defines it, imported on first use (PEP 562)
_LAZY = {
    **dict.fromkeys(
        ("load_config", "run", "run_stage", "read_metrics", "predict_frame"),
        "sslops.api",
    ),
    "Config": "sslops.config",
    **dict.fromkeys(("SslopsError", "ConfigError", "DataError", "ArtifactError", "GateError"),
                    "sslops.errors"),
}  # fmt: skip

__all__ = ["__version__", "api", *_LAZY]


def __getattr__(name: str) -> Any:
    import importlib

    if name == "api":
        return importlib.import_module("sslops.api")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sslops' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what the lazy names are, for type checkers (redundant aliases: exported)
    from sslops import api as api
    from sslops.api import load_config as load_config
    from sslops.api import predict_frame as predict_frame
    from sslops.api import read_metrics as read_metrics
    from sslops.api import run as run
    from sslops.api import run_stage as run_stage
    from sslops.config import Config as Config
    from sslops.errors import ArtifactError as ArtifactError
    from sslops.errors import ConfigError as ConfigError
    from sslops.errors import DataError as DataError
    from sslops.errors import GateError as GateError
    from sslops.errors import SslopsError as SslopsError
