"""Compile the shadow pipeline into pipelines/compiled/ (next to the main pipeline).

    python pipelines/shadow_pipeline.py          # or: make compile

``shadow_pipeline.yaml`` is the KFP IR YAML (upload in the KFP UI, or what
``sslops schedule-shadow`` uploads before it creates the recurring run);
``shadow_pipeline.k8s.yaml`` the Kubernetes-native ``Pipeline``/``PipelineVersion``
for GitOps. Compiled from configs/adult.yaml with the cluster conventions of the main
pipeline (the workspace PVC holds models and batches). A test fails when a committed
file differs from a fresh compile.
"""

import importlib.util
from pathlib import Path

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


def compile_shadow(directory: Path = COMPILED) -> list[Path]:
    cfg, default = main_script._config(main_script.CLUSTER)
    name = SHADOW_PIPELINE_NAME
    ir = compile_shadow_pipeline(directory / "shadow_pipeline.yaml", cfg, name, default)
    native = compile_kubernetes_manifests(
        directory / "shadow_pipeline.k8s.yaml", cfg, name, main_script.version_name(name),
        pipeline=build_shadow_pipeline(cfg, name, default),
    )  # fmt: skip
    return [ir, native]


if __name__ == "__main__":
    for path in compile_shadow():
        print(f"compiled {path.relative_to(ROOT)}")
