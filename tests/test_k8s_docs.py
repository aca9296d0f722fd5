"""docs/deploy.md and docs/security.md refer only to files, values and commands that exist."""

from __future__ import annotations

import re

import pytest
import yaml

from sslops.cli import build_parser
from tests.conftest import ROOT

DOCS = ("docs/deploy.md", "docs/security.md", "helm/sslops/README.md")
PATH = re.compile(r"(?<![\w/.-])((?:helm|manifests|pipelines|docs|tests|configs)/[\w./{},-]+)")


def _expand(path: str) -> list[str]:
    """``values-{onprem,aws}.yaml`` -> both names."""
    match = re.search(r"\{([^}]+)\}", path)
    if not match:
        return [path.rstrip(".,")]
    return [p for part in match[1].split(",") for p in _expand(path.replace(match[0], part, 1))]


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_in_the_docs_exists(doc: str) -> None:
    text = (ROOT / doc).read_text()
    paths = {p for raw in PATH.findall(text) for p in _expand(raw)}
    assert paths, doc
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert missing == [], f"{doc} refers to missing paths: {missing}"


def test_sslops_commands_in_deploy_md_parse() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text().replace("\\\n", " ")
    commands = [line.split("sslops ", 1)[1] for line in text.splitlines()
                if re.match(r"^\s*(\$ )?sslops (submit|render|config) ", line)]  # fmt: skip
    assert len(commands) >= 3
    parser = build_parser()
    for command in commands:
        args = [a for a in command.split("|")[0].split() if a != "&"]
        parser.parse_args(args)  # exits (fails the test) on an unknown flag


def test_values_files_and_overlays_named_in_deploy_md_agree() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    onprem = yaml.safe_load((ROOT / "helm/sslops/values-onprem.yaml").read_text())
    assert onprem["pipelines"]["pipelineRoot"] in text
    assert "sslops.io/node-pool=gpu" in text and "nvidia.com/gpu=present:NoSchedule" in text
