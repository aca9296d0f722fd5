"""Shard-parallel prepare as a KFP pipeline: ParallelFor over input shards, then one merge.

``list_input_shards`` names the input files; ``scan_shard`` runs once per file (in
parallel on a cluster) and writes its canonical, PII-redacted rows with their tokens
and key hashes; ``merge_scans`` does the global exact and near-duplicate join, the
split and the data card. The result is byte-identical to ``sslops prepare`` on the
same files (tested through ``kfp.local``).

No ``from __future__ import annotations`` here: KFP reads the annotations at runtime.
"""

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import List  # noqa: UP035 (KFP reads typing.List)

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from sslops.config import Config
from sslops.pipeline.image import base_image

IMAGE = base_image()
PIPELINE_NAME = "sslops-prepare-sharded"


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def list_input_shards(config_json: str) -> List[str]:  # noqa: UP006
    """One entry per input file of data.train / data.test (a folder or glob of shards)."""
    from sslops.config import config_from_json
    from sslops.prepare.shards import list_shards

    return list_shards(config_from_json(config_json))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def scan_shard(config_json: str, shard: str, scan: Output[Dataset]):
    """Canonicalize, redact PII and hash the rows of one shard."""
    from pathlib import Path

    from sslops.config import config_from_json
    from sslops.prepare.shards import scan_shard as run

    run(config_from_json(config_json), shard, Path(scan.path))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def merge_scans(
    config_json: str,
    scans: Input[List[Dataset]],  # noqa: UP006
    prepared: Output[Dataset],
    datacard: Output[Markdown],
):
    """Global duplicate join, clusters, splits, encoding and data card."""
    import shutil
    from pathlib import Path

    from sslops.config import config_from_json
    from sslops.prepare.shards import merge_shards

    out = merge_shards(
        config_from_json(config_json), [Path(s.path) for s in scans], Path(prepared.path)
    )
    shutil.copyfile(out / "datacard.md", datacard.path)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="sslops prepare over many input shards: a scan per shard, one global merge.",
)
def prepare_sharded_pipeline(config_json: str):
    shards = list_input_shards(config_json=config_json).set_display_name("list input shards")
    with dsl.ParallelFor(shards.output) as shard:
        scanned = scan_shard(config_json=config_json, shard=shard).set_display_name("scan shard")
    merge_scans(
        config_json=config_json, scans=dsl.Collected(scanned.outputs["scan"])
    ).set_display_name("merge: duplicates, splits, data card")


def compile_prepare_sharded(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(prepare_sharded_pipeline, str(path), pipeline_name=PIPELINE_NAME)
    return path


def run_prepare_sharded_locally(cfg: Config, out: Path) -> Path:
    """Run the sharded pipeline through kfp.local and move the prepare artifact to ``out``."""
    from sslops.pipeline.local import kfp_local

    with tempfile.TemporaryDirectory(prefix="sslops-shards-") as root, kfp_local(root):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You may be attemping")
            warnings.filterwarnings(
                "ignore", message=".*have no effect in the current local runner"
            )
            prepare_sharded_pipeline(config_json=cfg.to_json())
        found = sorted(Path(root).glob("*/merge-scans/prepared"))
        if len(found) != 1:
            raise RuntimeError(f"expected one merge output under {root}, found {found}")
        out = Path(out)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(found[0]), str(out))
    return out
