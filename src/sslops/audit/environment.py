"""The software the model was built with: an environment record and a CycloneDX SBOM.

The SBOM lists every installed Python distribution (name, version, purl, declared
licence; in the image also the sha256 of the wheel it was installed from, from the
image's lock) plus the model and the training data as CycloneDX ``machine-learning-model``
and ``data`` components identified by their sha256, so a scanner can match the
bundle's dependencies against advisories.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import sys
import sysconfig
import zipfile
from importlib.metadata import Distribution, PackageNotFoundError, distribution, distributions
from pathlib import Path
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, License, LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.spdx import fixup_id, is_expression
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


def files_digest(sha256_by_name: dict[str, str]) -> str:
    """sha256 of the lines ``<name> <sha256>\\n``, in name order."""
    lines = "".join(f"{name} {sha256_by_name[name]}\n" for name in sorted(sha256_by_name))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def package_digest(package: Path) -> str:
    """:func:`files_digest` of every file of a package folder by path (``sslops/cli.py``:
    relative to the folder above it), bytecode left out. The same for the installed
    package, a checkout's ``src/sslops`` holding the same files and the release wheel
    (:func:`wheel_package_digest`; ``make dist`` writes it to ``release.json``), so it ties
    a model to the exact code that built it where the version does not (every build of a
    release says the same)."""
    return files_digest(
        {
            path.relative_to(package.parent).as_posix(): hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
            for path in package.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        }
    )


def wheel_package_digest(wheel: Path, package: str = "sslops") -> str:
    """:func:`package_digest` of the package as the wheel holds it."""
    with zipfile.ZipFile(wheel) as archive:
        return files_digest(
            {
                name: hashlib.sha256(archive.read(name)).hexdigest()
                for name in archive.namelist()
                if name.startswith(f"{package}/") and not name.endswith("/")
            }
        )


def _record_check(package: Path) -> dict[str, Any] | None:
    """The installed files against the sha256 the wheel's RECORD gives them: a file
    changed after installation shows here. None where sslops is not installed from a
    wheel (a checkout, an editable install: no RECORD lists its files)."""
    try:
        files = distribution("sslops").files or []
    except PackageNotFoundError:
        return None
    checked, differ = 0, []
    for entry in files:
        path = Path(str(entry.locate())).resolve()
        if entry.hash is None or entry.hash.mode != "sha256" or package not in path.parents:
            continue
        checked += 1
        if not path.is_file():
            differ.append(str(entry))
            continue
        actual = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest())
        if actual.decode().rstrip("=") != entry.hash.value:
            differ.append(str(entry))
    return {"files_checked": checked, "files_differ": sorted(differ)} if checked else None


# The image's build record (Containerfile): variant, version, source revision, base image.
IMAGE_BUILD = Path(sys.prefix) / "share" / "sslops" / "build.json"


def installation_record() -> dict[str, Any]:
    """Which sslops code ran: its files' digest, whether they still match the wheel's
    RECORD, and in the image the build record and the sha256 of the lock it installed."""
    import sslops

    package = Path(sslops.__file__).resolve().parent
    build = json.loads(IMAGE_BUILD.read_text(encoding="utf-8")) if IMAGE_BUILD.is_file() else None
    lock = hashlib.sha256(IMAGE_LOCK.read_bytes()).hexdigest() if IMAGE_LOCK.is_file() else None
    return {
        "version": __version__,
        "files_sha256": package_digest(package),
        "record": _record_check(package),
        "image_build": build,
        "image_lock_sha256": lock,
    }


def image_record(reference: str | None, source: str) -> dict[str, Any]:
    """run.json's image fields: the reference the tasks ran (``source`` says where it came
    from) and whether it pins the image: a digest (``...@sha256:...``) names exactly one
    image and cannot change; a tag names whatever was last pushed under it."""
    pinned = None if not reference else "digest" if "@" in reference else "tag"
    return {
        "image": reference or None,
        "image_pinned_by": pinned,
        "image_immutable": None if pinned is None else pinned == "digest",
        "image_from": source,
    }


def environment_record(stage_versions: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "sslops": installation_record(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "numerics": numerics_record(),
        "packages": {d.metadata["Name"]: d.version for d in _installed()},
        "stage_versions": stage_versions,
    }


# Trove licence classifiers that name one SPDX licence; the others ("BSD License", which
# BSD?) stay names, as the package declares them.
_CLASSIFIER_SPDX = {
    "Apache Software License": "Apache-2.0",
    "MIT License": "MIT",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "ISC License (ISCL)": "ISC",
    "The Unlicense (Unlicense)": "Unlicense",
    "Python Software Foundation License": "PSF-2.0",
}


def _declared(text: str) -> License:
    """One declared licence: an SPDX id, an SPDX expression, or a name as written."""
    spdx_id = fixup_id(text)
    if spdx_id:
        return DisjunctiveLicense(id=spdx_id)
    if is_expression(text):
        return LicenseExpression(text)
    return DisjunctiveLicense(name=text)


def _license(dist: Distribution) -> list[License]:
    """The licence the distribution declares: its PEP 639 ``License-Expression`` (however
    long: torch's names six licences), else a ``License`` field that is an SPDX id or
    expression, else its Trove licence classifiers, else a one-line ``License`` field as
    written ("Apache 2.0"; some packages put the whole licence text there: left out)."""
    expression = _field(dist, "License-Expression")
    if expression:
        return [_declared(expression)]
    text = _field(dist, "License")
    if text and (fixup_id(text) or is_expression(text)):
        return [_declared(text)]
    names = sorted(
        {
            c.rsplit("::", 1)[-1].strip()
            for c in dist.metadata.get_all("Classifier") or []
            if c.startswith("License ::") and c.count("::") >= 2
        }
    )
    if names:
        return [_declared(_CLASSIFIER_SPDX.get(name, name)) for name in names]
    return [_declared(text)] if text and len(text) <= 80 and "\n" not in text else []


# Where the image keeps the lock its packages were installed from (Containerfile):
# ``pip install --require-hashes`` checked each wheel against it, so its sha256 is the
# installed wheel's.
IMAGE_LOCK = Path(sys.prefix) / "share" / "sslops" / "image.lock"
_LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_wheels(lock: Path) -> dict[tuple[str, str], list[str]]:
    """(canonical name, version) -> the sha256 digests a ``--require-hashes`` lock allows."""
    wheels: dict[tuple[str, str], list[str]] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = _LOCK_LINE.match(line)
        if match:
            digests = re.findall(r"sha256:([0-9a-f]{64})", match.group(3))
            wheels[(_canonical(match.group(1)), match.group(2))] = digests
    return wheels


# The Debian packages of the base image (python:3.11-slim-bookworm), as dpkg records them.
DPKG_STATUS = Path("/var/lib/dpkg/status")


def debian_packages(status: Path) -> list[tuple[str, str, str]]:
    """(name, version, architecture) of each package dpkg's status file says is installed."""
    found = []
    for paragraph in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(
            line.split(":", 1) for line in paragraph.splitlines() if ":" in line and line[:1] != " "
        )
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            found.append(
                (fields["Package"], fields.get("Version", ""), fields.get("Architecture", ""))
            )
    return sorted(found)


def sbom_json(
    model_name: str,
    model_sha256: str,
    data_sha256: dict[str, str],
    lock: Path | None = None,
    dpkg_status: Path | None = None,
) -> str:
    """CycloneDX 1.6 JSON of the environment, the model and its training data. A package
    installed at the version ``lock`` (default: the image's, where there is one) pins gets
    the wheel's sha256; one the lock pins at another version, or not at all, gets none.
    The Debian packages of ``dpkg_status`` are listed too (default: in the sslops image,
    the base image's; elsewhere none: the host's system is not part of the build)."""
    lock = IMAGE_LOCK if lock is None else lock
    wheels = locked_wheels(lock) if lock.is_file() else {}
    if dpkg_status is None and IMAGE_BUILD.is_file():
        dpkg_status = DPKG_STATUS
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
                hashes=[
                    HashType(alg=HashAlgorithm.SHA_256, content=digest)
                    for digest in wheels.get((_canonical(name), dist.version), [])
                ],
            )
        )
    for name, version, arch in debian_packages(dpkg_status) if dpkg_status else []:
        bom.components.add(
            Component(
                name=name,
                version=version,
                type=ComponentType.LIBRARY,
                purl=PackageURL(
                    type="deb",
                    namespace="debian",
                    name=name,
                    version=version,
                    qualifiers={"arch": arch} if arch else None,
                ),
                bom_ref=f"deb:{name}@{version}",
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
