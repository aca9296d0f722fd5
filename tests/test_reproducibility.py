"""Rebuilding a filed model: what decides the last bits of its floats is recorded, and one
stage's thread setting does not leak into the next."""

from __future__ import annotations

import json
from pathlib import Path

from sslops.config import Config


def test_the_environment_record_names_what_decides_the_last_bits(
    stage_artifacts: dict[str, Path],
) -> None:
    record = json.loads((stage_artifacts["audit"] / "bundle" / "environment.json").read_text())
    numerics = record["numerics"]
    assert numerics["torch_threads"] >= 1 and numerics["cpu_count"] >= 1
    assert numerics["torch_cpu_capability"]  # e.g. AVX2 / AVX512: the kernels torch picks
    assert numerics["torch_deterministic_algorithms"] is False
    assert set(numerics["thread_variables"]) == {
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"
    }  # fmt: skip
    finetuned = json.loads((stage_artifacts["finetune"] / "finetune.json").read_text())
    assert finetuned["threads"] == numerics["torch_threads"]  # the mitigated head depends on it


def test_pretrain_records_its_threads_and_leaves_the_process_as_it_found_it(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    """pretrain.threads once stayed set in the process, so finetune called next in it ran
    with pretrain's threads, and gave other weights than under `sslops run`."""
    import torch

    from sslops.pretrain import pretrain

    before = torch.get_num_threads()
    raw = small_config.model_dump(mode="json")
    raw["pretrain"].update(threads=before + 1, epochs=1)
    try:
        out = pretrain(Config.model_validate(raw), stage_artifacts["prepare"], tmp_path / "p")
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert json.loads((out / "summary.json").read_text())["threads"] == before + 1
    assert after == before
