"""The software the model was built with: an environment record and a CycloneDX SBOM.

The SBOM lists every installed Python distribution (name, version, purl, declared
licence) plus the model and the training data as CycloneDX ``machine-learning-model``
and ``data`` components identified by their sha256, so a scanner can match the
bundle's dependencies against advisories.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from sslops import __version__


def _field(dist: Distribution, key: str) -> str:
    values = dist.metadata.get_all(key) or []
    return str(values[0]).strip() if values else ""


def _search_path() -> list[str]:
    """``sys.path`` without folders inside an installed package: importing setuptools puts
    its ``_vendor`` folder on the path, and its bundled copies (autocommand, jaraco.*) are
    no installed distributions; listed, they made the record depend on what the process
    had imported before (a rebuild's environment.json differed from the filed one)."""
    sites = {Path(p).resolve() for p in (sysconfig.get_path("purelib"),
                                         sysconfig.get_path("platlib")) if p}  # fmt: skip
    return [e for e in sys.path if not sites & set(Path(e or ".").resolve().parents)]


def _installed() -> list[Distribution]:
    seen: dict[str, Distribution] = {}
    for dist in distributions(path=_search_path()):
        name = _field(dist, "Name")
        if name and name.lower() not in seen:
            seen[name.lower()] = dist
    return [seen[k] for k in sorted(seen)]


# Variables that set how many threads the math libraries use (and so how float sums are split).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def numerics_record() -> dict[str, Any]:
    """What decides the last bits of the floats beyond the package versions: the CPU's
    vector instructions torch dispatches to, the thread counts (a sum split over more
    threads rounds differently) and torch's determinism switch. Recorded in this process,
    with the variables every stage process of ``sslops run`` inherits."""
    import numpy as np
    import torch  # here only: verifying a bundle must not need torch

    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "numpy_blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
        "thread_variables": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def environment_record(stage_versions: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "numerics": numerics_record(),
        "packages": {d.metadata["Name"]: d.version for d in _installed()},
        "stage_versions": stage_versions,
    }


def _license(dist: Distribution) -> list[DisjunctiveLicense]:
    text = _field(dist, "License-Expression") or _field(dist, "License")
    # Some packages put the whole licence text in this field; keep only short names.
    return [DisjunctiveLicense(name=text)] if text and len(text) <= 80 and "\n" not in text else []


def sbom_json(model_name: str, model_sha256: str, data_sha256: dict[str, str]) -> str:
    """CycloneDX 1.6 JSON of the environment, the model and its training data."""
    bom = Bom()
    root = Component(
        name="sslops", version=__version__, type=ComponentType.APPLICATION, bom_ref="sslops"
    )
    bom.metadata.component = root
    for dist in _installed():
        name = dist.metadata["Name"]
        if name.lower() == "sslops":
            continue
        bom.components.add(
            Component(
                name=name,
                version=dist.version,
                type=ComponentType.LIBRARY,
                purl=PackageURL(type="pypi", name=name.lower(), version=dist.version),
                bom_ref=f"pypi:{name.lower()}@{dist.version}",
                licenses=_license(dist),
            )
        )
    bom.components.add(
        Component(
            name=model_name,
            type=ComponentType.MACHINE_LEARNING_MODEL,
            bom_ref="model",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=model_sha256)],
        )
    )
    for key, digest in sorted(data_sha256.items()):
        bom.components.add(
            Component(
                name=key,
                type=ComponentType.DATA,
                bom_ref=f"data:{key}",
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest)],
            )
        )
    bom.register_dependency(root, list(bom.components))
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"
