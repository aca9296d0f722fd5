"""Rebuilding a filed model: the same config and data give the same bundle, bit for bit, but
for the fields ``sslops audit compare`` names; every other difference is reported."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sslops.audit import SIGNATURE, generate_keypair
from sslops.audit.bundle import fingerprint, sign_manifest, write_manifest
from sslops.audit.rebuild import compare_bundles, json_differences
from sslops.cli import main
from sslops.config import Config
from tests.conftest import FAST_OVERRIDES, small_config_dict

# What two runs of the same inputs may differ in, and nothing else (tests/ measured it:
# two runs into other folders, from another working directory, TZ and LANG).
RUN_RECORDS = {
    "lineage.json", "sbom.cdx.json", "evidence/pretrain/history.json",
    "evidence/pretrain/summary.json", "model_card.md", "model_card.html", "model_card.pdf",
}  # fmt: skip


@pytest.fixture
def other_timezone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_rebuild_elsewhere_is_the_filed_bundle_but_for_the_run_records(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, other_timezone: None, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import torch

    from sslops.audit import audit
    from sslops.evaluate import evaluate
    from sslops.export import export
    from sslops.finetune import finetune
    from sslops.prepare import prepare
    from sslops.pretrain import pretrain

    elsewhere = tmp_path / "another" / "folder"
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    cfg = small_config
    a = {"prepare": prepare(cfg, elsewhere / "prepare")}
    a["pretrain"] = pretrain(cfg, a["prepare"], elsewhere / "pretrain")
    a["finetune"] = finetune(cfg, a["prepare"], a["pretrain"], elsewhere / "finetune")
    a["evaluate"] = evaluate(cfg, a["prepare"], a["finetune"], elsewhere / "evaluate")
    a["export"] = export(cfg, a["prepare"], a["finetune"], elsewhere / "export")
    rebuilt = audit(cfg, dict(a), elsewhere / "audit")

    report = compare_bundles(stage_artifacts["audit"], rebuilt / "bundle.zip")
    assert report["unexplained"] == [] and report["environment"] == []
    assert {e["file"] for e in report["explained"]} <= RUN_RECORDS
    for name in ("model.onnx", "model.int8.onnx", "config.json", "environment.json",
                 "gates.json", "evidence/evaluate/metrics.json", "evidence/export/export.json",
                 "evidence/finetune/finetune.json", "evidence/prepare/datacard.json"):  # fmt: skip
        assert name in report["identical"], name
    # what the weights' last bits depend on, recorded where compare shows a difference
    summary = json.loads((a["pretrain"] / "summary.json").read_text())
    assert summary["threads"] == cfg.pretrain.threads == 1
    finetuned = json.loads((a["finetune"] / "finetune.json").read_text())
    assert finetuned["threads"] == torch.get_num_threads()
    assert main(["audit", "compare", str(stage_artifacts["audit"]), str(rebuilt)]) == 0
    assert "result: identical but for the fields explained" in capsys.readouterr().out


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


def test_finetune_threads_pins_the_count_it_records_and_restores_the_process(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    """finetune.threads (0: torch's default) pins the thread count the mitigated head's last
    bits depend on, so a rebuild on a machine with other cores can match; it is recorded in
    finetune.json and the process keeps its own count afterwards."""
    import torch

    from sslops.finetune import finetune

    before = torch.get_num_threads()
    raw = small_config.model_dump(mode="json")
    raw["finetune"]["threads"] = before + 1
    try:
        out = finetune(Config.model_validate(raw), stage_artifacts["prepare"],
                       stage_artifacts["pretrain"], tmp_path / "f")  # fmt: skip
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert json.loads((out / "finetune.json").read_text())["threads"] == before + 1
    assert after == before


# --- compare: a copy of the session's bundle, edited and sealed again ------------------------


def _copy(stage_artifacts: dict[str, Path], tmp_path: Path) -> Path:
    bundle = tmp_path / "rebuilt"
    shutil.copytree(stage_artifacts["audit"] / "bundle", bundle)
    return bundle


def _edit(bundle: Path, name: str, change: Any) -> None:
    path = bundle / name
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def _seal(bundle: Path) -> Path:
    write_manifest(bundle)
    return bundle


def _one_edit(
    stage_artifacts: dict[str, Path], tmp_path: Path, name: str, change: Any
) -> tuple[Path, dict[str, Any]]:
    """A copy of the session's bundle with one JSON file changed and sealed again, and the
    comparison of the session's bundle with it."""
    bundle = _copy(stage_artifacts, tmp_path)
    _edit(bundle, name, change)
    return bundle, compare_bundles(stage_artifacts["audit"], _seal(bundle))


def _unexplained(report: dict[str, Any]) -> dict[str, str]:
    return {e["file"]: e["detail"] for e in report["unexplained"]}


def test_run_times_throughput_and_the_sbom_serial_are_explained(
    stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    bundle = _copy(stage_artifacts, tmp_path)

    def later(lineage: dict[str, Any]) -> None:
        for stage in lineage["stages"]:
            stage["started"] = stage["ended"] = "2031-01-01T00:00:00+00:00"
            stage["meta_sha256"] = "0" * 64

    _edit(bundle, "lineage.json", later)
    _edit(bundle, "sbom.cdx.json", lambda s: s.update(serialNumber="urn:uuid:" + "1" * 32))
    _edit(bundle, "evidence/pretrain/summary.json", lambda s: s.update(seconds=99.0))
    _edit(bundle, "run.json", lambda r: r.update(executed_by="kfp", kfp_run_id="run-7"))
    report = compare_bundles(stage_artifacts["audit"], _seal(bundle))
    assert report["unexplained"] == []
    explained = {e["file"]: e["fields"] for e in report["explained"]}
    assert explained["evidence/pretrain/summary.json"] == ["seconds"]
    assert explained["sbom.cdx.json"] == ["serialNumber"]
    assert explained["run.json"] == ["executed_by", "kfp_run_id"]
    assert "stages/pretrain/started" in explained["lineage.json"]
    assert report["result"] == "identical but for the fields explained"


def test_a_different_number_is_unexplained_and_named(
    stage_artifacts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _copy(stage_artifacts, tmp_path)
    _edit(bundle, "evidence/evaluate/metrics.json",
          lambda m: m["models"]["mitigated"].update(accuracy=0.5))  # fmt: skip
    # the loss beside a throughput field is not a throughput field
    _edit(bundle, "evidence/pretrain/history.json", lambda h: h[0].update(loss=1.0))
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"\0")
    report = compare_bundles(stage_artifacts["audit"], _seal(bundle))
    found = _unexplained(report)
    assert found["evidence/evaluate/metrics.json"].startswith("models/mitigated/accuracy: ")
    assert found["evidence/pretrain/history.json"].startswith("0/loss: ")
    assert found["model.onnx"].startswith("bytes differ (sha256 ")
    assert report["result"] == "differs"
    assert main(["audit", "compare", str(stage_artifacts["audit"]), str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "UNEXPLAINED: model.onnx: bytes differ" in err


def test_another_data_path_to_the_same_file_is_explained_other_data_is_the_first_cause(
    stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    elsewhere = "/mnt/elsewhere/train.csv"
    bundle, report = _one_edit(stage_artifacts, tmp_path, "config.json",
                               lambda c: c["data"].update(train=elsewhere))  # fmt: skip
    assert report["unexplained"] == []
    moved = next(e for e in report["explained"] if e["file"] == "config.json")
    assert moved["fields"] == ["data/train"]

    def other_rows(lineage: dict[str, Any]) -> None:
        lineage["chain"]["raw data"]["data.train"] = "f" * 64

    _edit(bundle, "lineage.json", other_rows)
    first = compare_bundles(stage_artifacts["audit"], _seal(bundle))["unexplained"][0]
    assert first["file"] == "lineage.json" and first["detail"].startswith(
        "the raw data differs (data.train sha256 "
    )


def test_the_environment_is_reported_apart_and_a_damaged_bundle_is_not_compared_silently(
    stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    bundle, report = _one_edit(stage_artifacts, tmp_path, "environment.json",
                               lambda e: e["packages"].update(torch="9.9.9"))  # fmt: skip
    assert report["unexplained"] == []
    assert report["environment"] == [
        {"file": "environment.json", "fields": [f'packages/torch: "{_torch()}" vs "9.9.9"']}
    ]
    (bundle / "gates.json").write_text("{}")  # after sealing: the manifest no longer matches
    found = _unexplained(compare_bundles(stage_artifacts["audit"], bundle))
    assert "integrity: gates.json was modified" in found["(rebuilt)"]


def test_a_filed_bundle_signed_by_the_issuer_against_an_unsigned_rebuild(
    stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    from sslops.audit.compliance import compliance_map

    bundle = _copy(stage_artifacts, tmp_path)
    generate_keypair(tmp_path / "issuer.pem", tmp_path / "issuer.pub.pem")
    key = serialization.load_pem_private_key((tmp_path / "issuer.pem").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    (bundle / "compliance.json").write_text(json.dumps(compliance_map(names | {SIGNATURE})))
    card = bundle / "model_card.md"
    card.write_text(re.sub(r"(?m)^- Bundle signature: .*$", "- Bundle signature: Ed25519, key "
                           + fingerprint(key.public_key()), card.read_text()))  # fmt: skip
    write_manifest(bundle, key)
    sign_manifest(bundle, key)
    report = compare_bundles(bundle, stage_artifacts["audit"])
    assert report["unexplained"] == []
    why = {e["file"]: e["why"] for e in report["explained"]}
    assert why["compliance.json"].startswith("the rebuild is signed with another key or not")
    assert "who signed it" in why["model_card.md"]


def test_a_changed_card_line_is_unexplained_and_so_are_its_renderings(
    stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    bundle = _copy(stage_artifacts, tmp_path)
    card = bundle / "model_card.md"
    lines = card.read_text().splitlines()
    lines[0] += " (edited)"
    card.write_text("\n".join(lines) + "\n")
    (bundle / "model_card.html").write_text("<p>edited</p>")
    found = _unexplained(compare_bundles(stage_artifacts["audit"], _seal(bundle)))
    assert found["model_card.md"].startswith("line 1: ")
    assert found["model_card.html"] == "model_card.md differs"


def test_json_differences_treat_nan_as_equal_and_key_records_by_name() -> None:
    nan = float("nan")
    assert json_differences({"a": nan, "b": [1, 2]}, {"a": nan, "b": [1, 2]}) == []
    assert json_differences({"a": 1}, {"a": 1.0}) == ["a"]  # another type is another value
    stages = [{"stage": "prepare", "x": 1}, {"stage": "pretrain", "x": 2}]
    assert json_differences({"stages": stages}, {"stages": stages[::-1]}) == []
    assert json_differences({"stages": stages}, {"stages": stages[:1]}) == [
        "stages/pretrain/stage", "stages/pretrain/x"
    ]  # fmt: skip
    twice = [{"id": "1", "x": 1}, {"id": "1", "x": 2}]  # a repeated name is no name: by position
    assert json_differences(twice, twice[::-1]) == ["0/x", "1/x"]


def _torch() -> str:
    from importlib.metadata import version

    return version("torch")


@pytest.mark.slow
def test_sslops_run_builds_what_the_stage_functions_build(
    stage_artifacts: dict[str, Path], small_data: dict[str, Path], tmp_path: Path,
    cli_env: dict[str, str],
) -> None:  # fmt: skip
    """A process per stage (kfp.local) against the stage functions in one process: the same
    model bytes (before pretrain restored the threads it set, finetune differed)."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config_dict(small_data)))
    args = ["sslops", "run", "--config", str(config), "--out", str(tmp_path / "run")]
    for override in FAST_OVERRIDES:
        args += ["--set", override]
    result = subprocess.run(
        args, capture_output=True, text=True, env=cli_env, timeout=900, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = compare_bundles(stage_artifacts["audit"], tmp_path / "run" / "audit")
    assert report["unexplained"] == [], report["unexplained"]
    assert "model.onnx" in report["identical"]
    assert "run.json" in {e["file"] for e in report["explained"]}


def test_the_installed_packages_do_not_depend_on_what_the_process_imported() -> None:
    """Importing setuptools puts its _vendor folder on sys.path; its bundled copies were
    then listed as installed distributions (environment.json and the SBOM), so a rebuild
    after a setuptools import differed from the filed bundle (found by the clean-clone run)."""
    import sys

    import setuptools

    from sslops.audit.environment import _installed

    vendor = Path(setuptools.__file__).parent / "_vendor"
    assert any(vendor.glob("*.dist-info")), "setuptools bundles no distributions here"
    added = str(vendor) not in sys.path
    if added:
        sys.path.append(str(vendor))
    try:
        found = _installed()
    finally:
        if added:
            sys.path.remove(str(vendor))
    assert {"sslops", "torch", "setuptools"} <= {d.metadata["Name"] for d in found}
    inside = [d.metadata["Name"] for d in found if Path(str(d.locate_file(""))) == vendor]
    assert inside == []
