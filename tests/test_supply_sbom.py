"""The audit bundle's SBOM as a supply-chain reviewer reads it: every installed package with
the licence it declares (however it declares it), the sha256 of the wheel the image
installed where the image's lock knows it, valid CycloneDX 1.6, and the same package set
as environment.json."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from sslops.audit import environment
from sslops.audit.environment import IMAGE_LOCK, environment_record, locked_wheels, sbom_json
from tests.conftest import ROOT

# torch 2.x's PEP 639 expression: longer than a licence name, and an SPDX expression.
LONG_EXPRESSION = (
    "Apache-2.0 AND Apache-2.0 WITH LLVM-exception AND BSD-2-Clause AND BSD-3-Clause "
    "AND BSL-1.0 AND MIT"
)
SHA = {"a": "a" * 64, "b": "b" * 64}


def _dist(site: Path, name: str, version: str, *headers: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.4", f"Name: {name}", f"Version: {version}", *headers]
    (info / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of made-up installed distributions, the only ones the SBOM sees."""
    site = tmp_path / "site-packages"
    _dist(site, "long-expression", "1.0", f"License-Expression: {LONG_EXPRESSION}")
    _dist(site, "classifiers-only", "2.0",
          "Classifier: License :: OSI Approved :: BSD License",
          "Classifier: License :: OSI Approved :: MIT License",
          "Classifier: Programming Language :: Python :: 3")  # fmt: skip
    _dist(site, "whole-text", "3.0", "License: Copyright (c) 2001 Someone",
          "        All rights reserved, and a long licence text follows.",
          "Classifier: License :: OSI Approved :: Apache Software License")  # fmt: skip
    _dist(site, "spdx-field", "4.0", "License: mit")
    _dist(site, "named-field", "4.1", "License: Dual License",
          "Classifier: License :: OSI Approved :: Apache Software License")  # fmt: skip
    _dist(site, "name-only", "4.2", "License: Apache 2.0")
    _dist(site, "undeclared", "5.0")
    _dist(site, "locked-other-version", "6.0", "License: MIT")
    monkeypatch.setattr(environment, "_search_path", lambda: [str(site)])
    return site


def _components(sbom: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(sbom)["components"] if c["type"] == "library"}


def test_every_declared_licence_is_in_the_sbom(site: Path) -> None:
    """A PEP 639 expression is kept however long (torch's was dropped as too long for a
    name), classifiers speak for a package whose License field is its whole text or empty
    (scipy, matplotlib, kfp, jinja2 had none), an SPDX id is an id."""
    components = _components(sbom_json("m", SHA["a"], {}, lock=site / "no.lock"))
    assert components["long-expression"]["licenses"] == [{"expression": LONG_EXPRESSION}]
    assert sorted(components["classifiers-only"]["licenses"], key=json.dumps) == [
        {"license": {"id": "MIT"}}, {"license": {"name": "BSD License"}}
    ]  # fmt: skip
    assert components["whole-text"]["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert components["spdx-field"]["licenses"] == [{"license": {"id": "MIT"}}]
    # A License field that names no SPDX licence yields to the classifiers, if any.
    assert components["named-field"]["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert components["name-only"]["licenses"] == [{"license": {"name": "Apache 2.0"}}]
    assert "licenses" not in components["undeclared"]


def test_a_package_installed_at_the_locked_version_carries_the_wheels_sha256(
    site: Path, tmp_path: Path
) -> None:
    lock = tmp_path / "image.lock"
    lock.write_text(
        "# a comment\n"
        f"long_expression==1.0 --hash=sha256:{SHA['a']}\n"
        f"spdx-field==4.0 --hash=sha256:{SHA['a']} --hash=sha256:{SHA['b']}\n"
        f"locked-other-version==6.1 --hash=sha256:{SHA['b']}\n",
        encoding="utf-8",
    )
    components = _components(sbom_json("m", SHA["a"], {}, lock=lock))
    sha = [{"alg": "SHA-256", "content": SHA["a"]}]
    assert components["long-expression"]["hashes"] == sha  # the lock's name, normalised
    assert components["spdx-field"]["hashes"] == [*sha, {"alg": "SHA-256", "content": SHA["b"]}]
    # Installed at another version than the lock's, or not in the lock: no hash to claim.
    assert "hashes" not in components["locked-other-version"]
    assert "hashes" not in components["undeclared"]


def test_the_image_keeps_its_lock_where_the_sbom_reads_it() -> None:
    """The build stage's venv is /opt/sslops (its sys.prefix): the lock is copied into it,
    and the runtime stage takes the whole venv."""
    text = " ".join(re.sub(r"\\\n", " ", (ROOT / "Containerfile").read_text()).split())
    assert "python -m venv /opt/sslops" in text
    assert IMAGE_LOCK.relative_to(sys.prefix).as_posix() == "share/sslops/image.lock"
    assert "install -D -m 0444 image.lock /opt/sslops/share/sslops/image.lock" in text
    assert "COPY --from=build /opt/sslops /opt/sslops" in text


def test_the_checked_in_lock_gives_every_locked_package_a_hash() -> None:
    wheels = locked_wheels(ROOT / "image.lock")
    lines = [
        line for line in (ROOT / "image.lock").read_text().splitlines() if "==" in line
    ]  # fmt: skip
    assert len(wheels) == len(lines) > 50
    assert all(len(digests) == 1 for digests in wheels.values())


def test_this_environments_sbom_is_valid_cyclonedx_and_lists_what_is_installed() -> None:
    """Against the CycloneDX 1.6 JSON schema the library ships (no network); the libraries
    are environment.json's packages, sslops itself being the SBOM's subject."""
    pytest.importorskip("jsonschema")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    sbom = sbom_json("m (model.onnx)", SHA["a"], {"train.csv": SHA["b"]}, lock=ROOT / "image.lock")
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom) is None
    packages = environment_record({})["packages"]
    components = _components(sbom)
    assert {n: c["version"] for n, c in components.items()} == {
        n: v for n, v in packages.items() if n.lower() != "sslops"
    }


DPKG = """Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u13
Description: GNU C Library: Shared libraries
 Contains the standard libraries: used by nearly all programs.

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: tzdata
Status: install ok installed
Architecture: all
Version: {tzdata}
"""


def _debian(sbom: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(sbom)["components"] if c["bom-ref"].startswith("deb:")}


def test_in_the_image_the_sbom_lists_the_base_images_debian_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in the sslops image (its build record is there), the SBOM also lists the Debian
    packages dpkg has installed, by purl; elsewhere the host's own system is left out."""
    status = tmp_path / "status"
    status.write_text(DPKG.format(tzdata="2025b-0+deb12u2"), encoding="utf-8")
    monkeypatch.setattr(environment, "DPKG_STATUS", status)
    monkeypatch.setattr(environment, "IMAGE_BUILD", tmp_path / "no-build.json")
    assert _debian(sbom_json("m", SHA["a"], {}, lock=tmp_path / "no.lock")) == {}

    build = tmp_path / "build.json"
    build.write_text('{"variant": "cpu", "version": "0.1.0", "revision": null}', encoding="utf-8")
    monkeypatch.setattr(environment, "IMAGE_BUILD", build)
    sbom = sbom_json("m", SHA["a"], {}, lock=tmp_path / "no.lock")
    debian = _debian(sbom)
    assert sorted(debian) == ["libc6", "tzdata"]  # not the package removed but configured
    assert debian["libc6"]["purl"] == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u13?arch=amd64"
    assert debian["tzdata"]["version"] == "2025b-0+deb12u2"
    pytest.importorskip("jsonschema")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom) is None


def test_a_rebuild_on_another_base_image_differs_in_its_environment_only(tmp_path: Path) -> None:
    """`sslops audit compare`: Debian package changes in the SBOM are the environment's,
    like Python package changes, not unexplained differences of the model."""
    from sslops.audit import rebuild

    sboms = []
    for tzdata in ("2025b-0+deb12u2", "2026a-0+deb12u1"):
        status = tmp_path / f"status-{tzdata}"
        status.write_text(DPKG.format(tzdata=tzdata), encoding="utf-8")
        sboms.append(json.loads(sbom_json("m", SHA["a"], {}, dpkg_status=status)))
    fields = rebuild._differing(*sboms)
    assert any(field[:2] == ("components", "deb:tzdata@2026a-0+deb12u1") for field in fields)
    volatile = rebuild.VOLATILE["sbom.cdx.json"][0]
    unexplained = [
        field for field in fields
        if not rebuild._matches(field, volatile)
        and not rebuild._matches(field, rebuild._ENVIRONMENT["sbom.cdx.json"])
    ]  # fmt: skip
    assert unexplained == []
