"""Compile the sslops pipeline into pipelines/compiled/ (KFP IR YAML for the KFP UI).

    python pipelines/ssl_pipeline.py          # or: make compile

The pipeline itself is defined in ``sslops.pipeline.ssl_pipeline`` so that
``sslops run`` (kfp.local) and a cluster run the same object. A test fails when the
committed YAML differs from a fresh compile.
"""

from pathlib import Path

from sslops.pipeline.ssl_pipeline import compile_pipeline, ssl_pipeline

COMPILED = Path(__file__).resolve().parent / "compiled"

__all__ = ["COMPILED", "compile_all", "ssl_pipeline"]


def compile_all(directory: Path = COMPILED) -> list[Path]:
    return [compile_pipeline(directory / "ssl_pipeline.yaml")]


if __name__ == "__main__":
    for path in compile_all():
        print(f"compiled {path}")
