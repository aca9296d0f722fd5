"""Compile the batch-scoring pipeline into pipelines/compiled/ (next to the main pipeline).

    python pipelines/predict_pipeline.py          # or: make compile

``predict_pipeline.yaml`` is the KFP IR YAML (upload in the KFP UI, or what
``sslops schedule-predict`` uploads before it creates the recurring run);
``predict_pipeline.k8s.yaml`` the Kubernetes-native ``Pipeline``/``PipelineVersion``
for GitOps (manifests/base installs it; the Helm chart's copy is
helm/sslops/files/pipelines/predict_pipeline.yaml). Compiled as the shadow pipeline is (configs/adult.yaml, the cluster
conventions of the main pipeline, the workspace PVC). A test fails when a committed file
differs from a fresh compile.
"""

import importlib.util
from pathlib import Path

from sslops.pipeline.predict_pipeline import (
    PREDICT_PIPELINE_NAME,
    build_predict_pipeline,
    compile_predict_pipeline,
)

_spec = importlib.util.spec_from_file_location(
    "shadow_pipeline_script", Path(__file__).with_name("shadow_pipeline.py")
)
assert _spec and _spec.loader
shadow_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shadow_script)
ROOT, COMPILED = shadow_script.ROOT, shadow_script.COMPILED


def compile_predict(
    directory: Path = COMPILED, chart_files: Path = shadow_script.main_script.CHART_FILES
) -> list[Path]:
    return shadow_script.compile_single(
        directory, "predict_pipeline", PREDICT_PIPELINE_NAME, build_predict_pipeline,
        compile_predict_pipeline, chart_files,
    )  # fmt: skip


if __name__ == "__main__":
    for path in compile_predict():
        print(f"compiled {path.relative_to(ROOT)}")
