"""Audit bundle: signature and verification against every kind of tampering, gates, card, zip."""

from __future__ import annotations

import base64
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from sslops.audit import audit, generate_keypair, load_public_key, verify_bundle
from sslops.audit.bundle import verify_path
from sslops.cli import main
from sslops.config import Config, validate_config
from sslops.errors import ConfigError, GateError

_UPSTREAM = ("prepare", "pretrain", "finetune", "evaluate", "export")


def _with(cfg: Config, **audit_settings: object) -> Config:
    raw = cfg.model_dump(mode="json")
    raw["audit"].update(audit_settings)
    return Config.model_validate(raw)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    paths = {"private": root / "signing.pem", "public": root / "signing.pub.pem"}
    generate_keypair(paths["private"], paths["public"])
    return paths


@pytest.fixture(scope="module")
def signed(
    stage_artifacts: dict[str, Path], small_config: Config, keys: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:  # fmt: skip
    cfg = _with(small_config, signing={"key_file": str(keys["private"])})
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    return audit(cfg, upstream, tmp_path_factory.mktemp("signed") / "audit")


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(folder / "bundle", target)
    return target


def test_fresh_bundle_verifies_with_its_public_key(signed: Path, keys: dict[str, Path]) -> None:
    result = verify_path(signed, load_public_key(keys["public"]))
    assert result["problems"] == [] and result["signed"]
    assert verify_bundle(signed / "bundle.zip")["problems"] == []


def test_model_card_names_the_policy_and_where_its_gap_was_measured(signed: Path) -> None:
    card = " ".join((signed / "bundle" / "model_card.md").read_text().split())
    assert "Fairness policy: constraint demographic_parity" in card
    assert "(gap measured on validation (" in card and "unlabeled training rows held out" in card


def test_changing_any_byte_of_any_file_is_caught_and_named(signed: Path, tmp_path: Path) -> None:
    bundle = _copy(signed, tmp_path)
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    assert len(files) > 25
    for path in files:
        name = path.relative_to(bundle).as_posix()
        original = path.read_bytes()
        # The seals are small and special: flip bytes all over them; elsewhere one byte is enough.
        step = 7 if name == "signature.json" else 29 if name == "manifest.json" else len(original)
        for offset in [*range(0, len(original), step), len(original) // 2, len(original) - 1]:
            changed = bytearray(original)
            changed[offset] ^= 0x01
            path.write_bytes(bytes(changed))
            problems = verify_bundle(bundle)["problems"]
            assert problems, f"a changed byte {offset} of {name} went unnoticed"
            assert any(name in p for p in problems), (name, offset, problems)
        path.write_bytes(original)
    assert verify_bundle(bundle)["problems"] == []


def test_added_and_removed_files_are_named(signed: Path, tmp_path: Path) -> None:
    bundle = _copy(signed, tmp_path)
    (bundle / "evidence" / "evaluate" / "extra.json").write_text("{}")
    assert verify_bundle(bundle)["problems"] == [
        "evidence/evaluate/extra.json was added (not in manifest.json)"
    ]
    (bundle / "evidence" / "evaluate" / "extra.json").unlink()
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        name = path.relative_to(bundle).as_posix()
        data = path.read_bytes()
        path.unlink()
        problems = verify_bundle(bundle)["problems"]
        assert problems and any(name in p for p in problems), (name, problems)
        path.write_bytes(data)


def test_zip_members_are_checked_too(signed: Path, tmp_path: Path) -> None:
    packed = tmp_path / "bundle.zip"
    with zipfile.ZipFile(signed / "bundle.zip") as src, zipfile.ZipFile(packed, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data + b" " if info.filename == "model.onnx" else data)
    assert verify_bundle(packed)["problems"] == [
        "model.onnx was modified (sha256 differs from manifest.json)"
    ]


def test_another_key_or_an_unsigned_bundle_fails_with_a_public_key(
    signed: Path, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    other = load_public_key(tmp_path / "other.pub")
    assert (
        "signature.json: the signature does not verify with the given public key"
        in (verify_bundle(signed, other)["problems"])
    )
    unsigned = stage_artifacts["audit"]
    assert verify_bundle(unsigned)["problems"] == [] and not verify_bundle(unsigned)["signed"]
    assert verify_bundle(unsigned, other)["problems"] == [
        "signature.json is missing: the bundle is not signed "
        "(the issuer signs it with audit.signing.key_file)"
    ]


def test_cli_verify_exit_codes(signed: Path, keys: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(["audit", "verify", str(signed), "--public-key", str(keys["public"])]) == 0
    assert "files intact; signed" in capsys.readouterr().out
    bundle = _copy(signed, tmp_path)
    (bundle / "model_card.md").write_text("edited")
    assert main(["audit", "verify", str(bundle)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "model_card.md was modified" in err[-1]
    assert main(["audit", "verify", str(tmp_path / "nowhere")]) == 2


def test_the_private_key_appears_in_no_output(signed: Path, keys: dict[str, Path]) -> None:
    pem = keys["private"].read_bytes()
    body = b"".join(line for line in pem.splitlines() if b"-----" not in line)
    raw = base64.b64decode(body)[-32:]  # the Ed25519 seed at the end of the PKCS8 blob
    needles = [body, raw, base64.b64encode(raw), raw.hex().encode()]
    for path in signed.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles), path
    with zipfile.ZipFile(signed / "bundle.zip") as archive:
        for info in archive.infolist():
            assert not any(n in archive.read(info) for n in needles), info.filename


def test_key_from_environment_and_clean_key_errors(
    stage_artifacts: dict[str, Path], small_config: Config, keys: dict[str, Path],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    monkeypatch.setenv("SSLOPS_TEST_KEY", keys["private"].read_text())
    out = audit(
        _with(small_config, signing={"key_env": "SSLOPS_TEST_KEY"}), upstream, tmp_path / "a"
    )
    assert verify_bundle(out, load_public_key(keys["public"]))["problems"] == []
    monkeypatch.setenv("SSLOPS_TEST_KEY", "not a key")
    with pytest.raises(ConfigError, match="SSLOPS_TEST_KEY does not hold") as info:
        audit(_with(small_config, signing={"key_env": "SSLOPS_TEST_KEY"}), upstream, tmp_path / "b")
    assert "not a key" not in str(info.value)
    missing = {"key_env": "SSLOPS_NO_SUCH_KEY", "required": True}
    with pytest.raises(ConfigError, match="SSLOPS_NO_SUCH_KEY"):
        audit(_with(small_config, signing=missing), upstream, tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_failing_gate_names_gate_and_values_and_writes_nothing(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    strict = _with(small_config, gates={"min_auc": 0.99, "max_dp_difference": 0.0001})
    with pytest.raises(GateError) as info:
        audit(strict, upstream, tmp_path / "audit")
    message = str(info.value)
    assert "min_auc: test ROC AUC = 0." in message and "< limit 0.99" in message
    assert "max_dp_difference" in message and "> limit 0.0001" in message
    report = json.loads((upstream["finetune"] / "finetune.json").read_text())
    rows = json.loads((upstream["evaluate"] / "metrics.json").read_text())["rows"]
    used, train_rows = report["labels_used"], report["train_rows"]
    few = " (raise finetune.label_fraction)" if used < 50 else ""  # the small run has fewer
    assert message.endswith(
        f"; the model was fitted on {used:,} labels of {train_rows:,} training rows{few} and "
        f"measured on {rows:,} test rows"
    )
    assert list(tmp_path.iterdir()) == []


def test_override_with_justification_is_recorded(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    override = {
        "justification": "Pilot on 3,000 rows; the full-data model is gated separately.",
        "approved_by": "Model risk committee",
    }
    cfg = _with(small_config, gates={"min_auc": 0.99}, overrides={"min_auc": override})
    bundle = audit(cfg, upstream, tmp_path / "audit") / "bundle"
    gates = json.loads((bundle / "gates.json").read_text())
    row = next(r for r in gates["results"] if r["gate"] == "min_auc")
    assert gates["overall"] == "passed with overrides" and row["status"] == "overridden"
    assert row["override"] == override
    assert "Model risk committee" in (bundle / "model_card.md").read_text()
    raw = small_config.model_dump(mode="json")
    raw["audit"]["overrides"] = {"min_aucc": override}
    with pytest.raises(ConfigError, match="names no gate"):
        validate_config(raw)


def test_change_log_against_a_previous_bundle(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    cfg = _with(small_config, previous_bundle=str(stage_artifacts["audit"] / "bundle.zip"))
    bundle = audit(cfg, upstream, tmp_path / "audit") / "bundle"
    log = json.loads((bundle / "changelog.json").read_text())
    assert log["previous"]["verification"] == "intact"
    rows = {(r["model"], r["metric"]): r for r in log["metrics"]}
    assert rows[("mitigated", "accuracy")]["change"] == 0.0
    assert "Changes since the previous bundle" in (bundle / "model_card.md").read_text()


def test_bundle_contents_and_compliance_map(stage_artifacts: dict[str, Path]) -> None:
    bundle = stage_artifacts["audit"] / "bundle"
    for name in (
        "model_card.md", "model_card.html", "model_card.pdf", "model.onnx", "model.int8.onnx",
        "lineage.json", "config.json", "environment.json", "sbom.cdx.json", "run.json",
        "gates.json", "compliance.json", "evidence/prepare/datacard.md",
        "evidence/evaluate/metrics.json", "evidence/export/export.json",
    ):  # fmt: skip
        assert (bundle / name).is_file(), name
    sbom = json.loads((bundle / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    kinds = {c["type"] for c in sbom["components"]}
    assert {"library", "machine-learning-model", "data"} <= kinds
    torch_entry = next(c for c in sbom["components"] if c["name"] == "torch")
    assert torch_entry["purl"].startswith("pkg:pypi/torch@")
    compliance = json.loads((bundle / "compliance.json").read_text())
    frameworks = {r["framework"] for r in compliance}
    assert frameworks == {"EU AI Act Annex IV", "NIST AI RMF"}
    for row in compliance:
        for name in row["evidence_files"]:
            assert (bundle / name).is_file() or name in {"manifest.json", "signature.json"}
    chain = json.loads((bundle / "lineage.json").read_text())["chain"]
    assert list(chain) == [
        "raw data", "prepared splits", "SSL checkpoint", "fine-tuned model", "ONNX"
    ]  # fmt: skip
    assert (
        "Sensitive-attribute probe: 'sex' predicted from the frozen embedding"
        in (bundle / "model_card.md").read_text()
    )


def test_new_result_files_flow_into_the_card(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    """A JSON table and a PNG added to the evaluate artifact appear in the card unprompted."""
    from sslops.artifacts import write_artifact

    evaluate = tmp_path / "evaluate"
    meta = json.loads((stage_artifacts["evaluate"] / "meta.json").read_text())
    with write_artifact(evaluate, "evaluate", meta["config"]) as tmp:
        for path in stage_artifacts["evaluate"].iterdir():
            if path.name != "meta.json":
                shutil.copy2(path, tmp / path.name)
        front = {"policy": "max DP 0.02", "points": [{"penalty": 1.0, "accuracy": 0.84}]}
        (tmp / "pareto.json").write_text(json.dumps(front))
        shutil.copy2(tmp / "roc.png", tmp / "pareto_front.png")
    upstream = {**{s: stage_artifacts[s] for s in _UPSTREAM}, "evaluate": evaluate}
    bundle = audit(small_config, upstream, tmp_path / "audit") / "bundle"
    card = (bundle / "model_card.md").read_text()
    assert "Result: evaluate/pareto.json" in card and "max DP 0.02" in card
    assert "| penalty | accuracy |" in card
    assert "(evidence/evaluate/pareto_front.png)" in card
    html = (bundle / "model_card.html").read_text()
    assert html.count("data:image/png;base64,") == len(list(bundle.rglob("*.png")))


@pytest.mark.slow
def test_failing_gate_stops_sslops_run(
    small_data: dict[str, Path], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    import subprocess

    from tests.conftest import FAST_OVERRIDES, ROOT

    args = ["sslops", "run", "--config", str(ROOT / "configs" / "adult.yaml"),
            "--out", str(tmp_path / "run"), "--set", f"data.train={small_data['train']}",
            "--set", f"data.test={small_data['test']}", "--set", "audit.gates.min_auc=0.99"]  # fmt: skip
    for override in FAST_OVERRIDES:
        args += ["--set", override]
    result = subprocess.run(args, capture_output=True, text=True, env=cli_env, timeout=900)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: policy gate failed") and "min_auc" in last and "0.99" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
