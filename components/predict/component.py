"""KFP component `predict`: see README.md beside this file.

The definition lives in the package (`sslops.pipeline.predict_pipeline`) so that the
compiled pipeline and a cluster use the same object; this file is the component's entry
point for pipelines that import it by path, and `python component.py` compiles it to YAML.
"""

import sys
from pathlib import Path

from kfp import compiler

from sslops.pipeline.predict_pipeline import predict as component

__all__ = ["component"]

if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("component.yaml"))
    compiler.Compiler().compile(component, str(target))
    print(f"compiled {target}")
