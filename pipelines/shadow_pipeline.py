"""Compile the shadow pipeline into pipelines/compiled/ (next to the main pipeline).

    python pipelines/shadow_pipeline.py          # or: make compile

``shadow_pipeline.yaml`` is the KFP IR YAML (upload in the KFP UI, or what
``sslops schedule-shadow`` uploads before it creates the recurring run);
``shadow_pipeline.k8s.yaml`` the Kubernetes-native ``Pipeline``/``PipelineVersion``
for GitOps (manifests/base installs it; the Helm chart's copy is
helm/sslops/files/pipelines/shadow_pipeline.yaml). Compiled from configs/adult.yaml with the cluster conventions of the main
pipeline (the workspace PVC holds models and batches). A test fails when a committed
file differs from a fresh compile.
"""

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslops.pipeline.shadow_pipeline import (
    SHADOW_PIPELINE_NAME,
    build_shadow_pipeline,
    compile_shadow_pipeline,
)
from sslops.pipeline.ssl_pipeline import compile_kubernetes_manifests

ROOT = Path(__file__).resolve().parents[1]
COMPILED = ROOT / "pipelines" / "compiled"

_spec = importlib.util.spec_from_file_location(
    "ssl_pipeline_script", Path(__file__).with_name("ssl_pipeline.py")
)
assert _spec and _spec.loader
main_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(main_script)


def compile_single(
    directory: Path,
    stem: str,
    name: str,
    build: Callable[..., Any],
    compile_ir: Callable[..., Path],
    chart_files: Path,
) -> list[Path]:
    """A one-task pipeline (shadow, predict) as IR YAML, Kubernetes-native manifests and the
    Helm chart's copy."""
    cfg, default = main_script._config(main_script.CLUSTER)
    ir = compile_ir(directory / f"{stem}.yaml", cfg, name, default)
    native = compile_kubernetes_manifests(
        directory / f"{stem}.k8s.yaml", cfg, name, main_script.version_name(name),
        pipeline=build(cfg, name, default),
    )  # fmt: skip
    return [ir, native, main_script.write_chart_file(native, stem, chart_files)]


def compile_shadow(
    directory: Path = COMPILED, chart_files: Path = main_script.CHART_FILES
) -> list[Path]:
    return compile_single(
        directory, "shadow_pipeline", SHADOW_PIPELINE_NAME, build_shadow_pipeline,
        compile_shadow_pipeline, chart_files,
    )  # fmt: skip


if __name__ == "__main__":
    for path in compile_shadow():
        print(f"compiled {path.relative_to(ROOT)}")
