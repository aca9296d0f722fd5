"""Audit bundle: signature and verification against every kind of tampering, gates, card, zip."""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sslops.audit import audit, generate_keypair, load_public_key, verify_bundle
from sslops.audit.bundle import verify_path
from sslops.cli import main
from sslops.config import Config, validate_config
from sslops.errors import ArtifactError, ConfigError, DataError, GateError
from tests.conftest import ROOT

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


def test_the_bundle_does_not_record_where_the_signing_key_lies(
    signed: Path, keys: dict[str, Path]
) -> None:
    path = str(keys["private"]).encode()
    for file in (p for p in (signed / "bundle").rglob("*") if p.is_file()):
        assert path not in file.read_bytes(), file
    config = json.loads((signed / "bundle" / "config.json").read_text())
    assert config["audit"]["signing"]["key_file"] == "(set; its path is not recorded)"


def test_model_card_names_the_policy_and_where_its_gap_was_measured(signed: Path) -> None:
    card = " ".join((signed / "bundle" / "model_card.md").read_text().split())
    assert "Fairness policy: constraint demographic_parity" in card
    assert "(gap measured on validation (" in card and "unlabeled training rows held out" in card


def test_the_card_s_markdown_tables_keep_group_crossings_in_one_cell(signed: Path) -> None:
    """Intersection groups are named "Female | White": unescaped, the name became two cells
    and every number sat under the next column's header (rows under race, ...)."""
    from markdown_it import MarkdownIt

    tokens = (
        MarkdownIt("commonmark")
        .enable("table")
        .parse((signed / "bundle" / "model_card.md").read_text())
    )
    rows: list[list[str]] = []
    for previous, token in itertools.pairwise(tokens):
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "inline" and previous.type in ("th_open", "td_open"):
            rows[-1].append(token.content)
    crossings = [row for row in rows if row and " | " in row[0]]
    assert crossings, "no sex x race table in the card"
    for row in crossings:  # group | rows | accuracy | ...
        assert row[1].replace(",", "").isdigit(), row


def test_the_audit_folder_is_checked_whole_even_without_its_meta_json(
    signed: Path, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """Deleting meta.json must not narrow the check to bundle/: bundle.zip (what is sent
    out) must be the same bundle, and a missing zip or meta.json is named."""
    from sslops.artifacts import sha256_file

    folder = tmp_path / "audit"
    shutil.copytree(signed, folder)
    other = stage_artifacts["audit"] / "bundle.zip"  # a bundle intact by itself, another run's
    shutil.copy2(other, folder / "bundle.zip")
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["bundle.zip"] = sha256_file(other)  # meta.json is not signed
    (folder / "meta.json").write_text(json.dumps(meta))
    assert verify_path(folder)["problems"] == [
        "bundle.zip holds another bundle than bundle/ (manifest.json differs)"
    ]
    (folder / "meta.json").unlink()
    problems = verify_path(folder)["problems"]
    assert problems[0] == "bundle.zip holds another bundle than bundle/ (manifest.json differs)"
    assert any("meta.json is missing" in p for p in problems), problems
    (folder / "bundle.zip").unlink()
    problems = verify_path(folder)["problems"]
    assert "bundle.zip is missing (the audit stage writes it)" in problems, problems


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


def test_a_zip_member_that_occurs_twice_or_escapes_its_folder_is_refused(
    signed: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    """Python reads the last of two same-named members, many extractors the first: a
    verified zip must not hold another model.onnx in front of the one that was verified."""
    public = load_public_key(keys["public"])
    for name, first in (("twice", "model.onnx"), ("escapes", "../model.onnx")):
        packed = tmp_path / f"{name}.zip"
        source, target = zipfile.ZipFile(signed / "bundle.zip"), zipfile.ZipFile(packed, "w")
        with source as src, target as dst, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
            dst.writestr(first, b"another model")
            for info in src.infolist():
                dst.writestr(info, src.read(info))
        problems = verify_bundle(packed, public)["problems"]
        expected = ("model.onnx occurs 2 times in the zip" if name == "twice"
                    else "member '../model.onnx' would be extracted outside")  # fmt: skip
        assert len(problems) == 1 and expected in problems[0], problems


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


def _reseal(bundle: Path, key: Ed25519PrivateKey | None) -> None:
    """What anyone who can write a copy of the bundle can do: re-hash it, re-sign it with a
    key of their own (or strip the signature)."""
    from sslops.audit.bundle import sign_manifest, write_manifest

    (bundle / "signature.json").unlink(missing_ok=True)
    write_manifest(bundle, key)
    if key is not None:
        sign_manifest(bundle, key)


def test_cli_verify_needs_a_trusted_key_or_an_explicit_integrity_only(
    signed: Path, keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sslops audit verify BUNDLE && file it` exited 0 for a bundle anyone had edited and
    re-sealed: without a trust root, verification is an error unless asked for."""
    assert main(["audit", "verify", str(signed)]) == 2
    captured = capsys.readouterr()
    assert "files intact" in captured.out and "integrity only" in captured.out
    assert captured.err.strip().splitlines() == [
        f"error: {signed}: the signature was not checked against a trusted key, so this does "
        "not show who made it (anyone can re-seal a changed copy): pass --public-key FILE, or "
        "--integrity-only to accept a check of the hashes alone"
    ]
    assert main(["audit", "verify", str(signed), "--integrity-only"]) == 0
    assert "verified with its embedded public key (integrity only" in capsys.readouterr().out
    for resealer in (Ed25519PrivateKey.generate(), None):
        bundle = _copy(signed, tmp_path / str(resealer is None))
        (bundle / "model_card.md").write_text("edited after signing")
        _reseal(bundle, resealer)
        assert main(["audit", "verify", str(bundle)]) == 2
        assert main(["audit", "verify", str(bundle), "--integrity-only"]) == 0
        assert main(["audit", "verify", str(bundle), "--public-key", str(keys["public"])]) == 1
        capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["audit", "verify", str(signed), "--integrity-only", "--public-key",
              str(keys["public"])])  # fmt: skip
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_signature_record_that_names_another_key_fails(
    signed: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    """The record's key_fingerprint was never compared with the key that verified it: a
    record signed with one key could claim another's fingerprint (which four eyes, the
    registry index and --approver-key then believed)."""
    from sslops.audit.bundle import _raw_public, canonical_json, fingerprint, load_private_key

    issuer = load_private_key(keys["private"], "", True, "--key-file", "")
    bundle = _copy(signed, tmp_path)
    record = json.loads((bundle / "signature.json").read_text())
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    other = load_public_key(tmp_path / "other.pub")
    issuer_public = load_public_key(keys["public"])
    claims_other = "signature.json: its key_fingerprint is not that of the key that signed it"
    names_other = "signature.json: it names another public key than the one it was verified with"
    for field, value, expected in (
        ("key_fingerprint", fingerprint(other), {None: claims_other, "issuer": claims_other}),
        ("public_key", base64.b64encode(_raw_public(other)).decode(),
         {None: "signature.json: the signature does not verify with its embedded public key",
          "issuer": names_other}),
    ):  # fmt: skip
        signed_fields = {**record["signed"], field: value}
        signature = issuer.sign(canonical_json(signed_fields))  # by the issuer's own key
        forged = {"signed": signed_fields, "signature": base64.b64encode(signature).decode()}
        (bundle / "signature.json").write_bytes(canonical_json(forged))
        for name, key in ((None, None), ("issuer", issuer_public)):
            [problem] = verify_bundle(bundle, key)["problems"]
            assert problem.startswith(expected[name]), (field, name, problem)


def test_a_symbolic_link_in_a_bundle_folder_fails(signed: Path, tmp_path: Path) -> None:
    """A file replaced by a link to identical bytes elsewhere verified as intact, though
    what it points to is not part of the bundle and can change after verification."""
    bundle = _copy(signed, tmp_path)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy2(bundle / "model.onnx", outside)
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(outside)
    assert verify_bundle(bundle)["problems"] == [
        "model.onnx is a symbolic link (a bundle holds regular files only; what it points to "
        "is not part of the bundle)"
    ]
    (bundle / "model.onnx").unlink()
    shutil.copy2(outside, bundle / "model.onnx")
    shutil.move(bundle / "evidence", tmp_path / "evidence")
    (bundle / "evidence").symlink_to(tmp_path / "evidence")  # a linked folder, too
    assert [p.split(" ")[0] for p in verify_bundle(bundle)["problems"]] == ["evidence"]


def test_a_zip_member_that_is_a_symbolic_link_is_refused(signed: Path, tmp_path: Path) -> None:
    """unzip creates a link for such a member (pointing wherever its bytes say), not a file
    holding the bytes that were hashed."""
    import stat

    packed = tmp_path / "link.zip"
    with zipfile.ZipFile(signed / "bundle.zip") as src, zipfile.ZipFile(packed, "w") as dst:
        for info in src.infolist():
            if info.filename == "model_card.md":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            dst.writestr(info, src.read(info))
    problems = verify_bundle(packed)["problems"]
    assert problems == ["link.zip is damaged (member 'model_card.md' is a symbolic link (an "
                        "extractor would create a link))"], problems  # fmt: skip


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


def test_the_sensitive_reliance_gate_reads_the_counterfactual_test(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    """max_sensitive_reliance: the largest share of the deployed model's test decisions that
    change when only a sensitive attribute is set to another value (shortcuts.json)."""
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    shortcuts = json.loads((upstream["evaluate"] / "shortcuts.json").read_text())
    shares = [c["changed_share"] for c in shortcuts["counterfactual"].values()]
    worst = max(shares)
    assert shortcuts["model"] == small_config.export.model and worst > 0
    with pytest.raises(
        GateError,
        match=r"max_sensitive_reliance: share of decisions changed "
        rf"by setting only a sensitive attribute to another value = {worst:.4g} >",
    ):
        audit(_with(small_config, gates={"max_sensitive_reliance": worst / 2}), upstream,
              tmp_path / "strict")  # fmt: skip
    bundle = audit(_with(small_config, gates={"max_sensitive_reliance": 1.0}), upstream,
                   tmp_path / "audit") / "bundle"  # fmt: skip
    [row] = [r for r in json.loads((bundle / "gates.json").read_text())["results"]
             if r["gate"] == "max_sensitive_reliance"]  # fmt: skip
    assert row["status"] == "passed" and row["value"] == worst


def test_the_card_says_the_sensitive_attributes_are_inputs_and_shows_every_gap(
    signed: Path, small_config: Config
) -> None:
    from sslops.audit.card import _fmt

    card = " ".join((signed / "bundle" / "model_card.md").read_text().split())
    shortcuts = json.loads((signed / "bundle" / "evidence" / "evaluate" / "shortcuts.json")
                           .read_text())  # fmt: skip
    metrics = json.loads((signed / "bundle" / "evidence" / "evaluate" / "metrics.json").read_text())
    assert small_config.prepare.sensitive_as_features
    assert "The deployed model takes the sensitive attributes (sex, race) as inputs" in card
    for column, result in shortcuts["counterfactual"].items():  # the counterfactual test
        assert f"| {column} | " in card and f"{result['changed_share']:.1%}" in card
    deployed = metrics["models"][small_config.export.model]
    for column, gaps in deployed["gaps"].items():  # every column and the crossing
        low, high = (_fmt(v) for v in deployed["gap_intervals"][column]["dp_difference"])
        assert f"| {column} | {_fmt(gaps['dp_difference'])} [{low}, {high}] |" in card, column
    for group, row in deployed["by_group"]["sex"].items():  # per-group rates with intervals
        low, high = (_fmt(v) for v in deployed["group_intervals"]["sex"][group]["tpr"])
        assert f"{_fmt(row['tpr'])} [{low}, {high}]" in card, group
    assert "Policy: demographic_parity difference <= 0.02 on 'sex'" in card
    flagged = metrics["models"]["ssl+threshold_optimizer"]["flag"]  # in the main table too
    assert f"| ssl+threshold_optimizer ({flagged}) |" in card
    assert "The deployed model uses sex, race as inputs" in card  # under Limitations


def test_the_card_shows_the_ood_split_beside_the_test_split_or_says_there_is_none(
    signed: Path, small_config: Config
) -> None:
    from sslops.audit.card import _ood_section
    from sslops.audit.document import Document

    card = " ".join((signed / "bundle" / "model_card.md").read_text().split())
    assert "## Out-of-distribution split Not evaluated: no out-of-distribution split" in card
    metrics = json.loads((signed / "bundle" / "evidence" / "evaluate" / "metrics.json").read_text())
    test = metrics["models"]["mitigated"]
    shifted = {k: test[k] - 0.05 for k in ("accuracy", "roc_auc", "dp_difference", "eo_difference")}
    cfg = small_config.model_copy(update={"prepare": small_config.prepare.model_copy(
        update={"ood": "native-country != United-States"})})  # fmt: skip
    doc = Document("t")
    _ood_section(
        doc, cfg, metrics, {"split": "ood", "rows": 1234, "models": {"mitigated": shifted}}
    )
    text = " ".join(doc.markdown().split())
    assert "1,234 rows (prepare.ood: `native-country != United-States`)" in text
    assert f"| mitigated | {shifted['accuracy']:.4f} (-0.0500) |" in text
    # an undefined gap on the split: n/a with no "(+nan)" change, and why (the recompute review)
    undefined = {**shifted, "eo_difference": float("nan"), "gap_notes": {"sex": {
        "eo_difference": "equalized-odds difference undefined: no group to compare"}}}  # fmt: skip
    doc = Document("t")
    _ood_section(doc, cfg, metrics, {"split": "ood", "rows": 9, "models": {"mitigated": undefined}})
    text = " ".join(doc.markdown().split())
    assert "nan" not in text and f"{undefined['dp_difference']:.4f} (-0.0500) | n/a |" in text
    assert "on this split: mitigated: equalized-odds difference undefined: no group" in text


def test_the_card_rounds_the_threshold_optimizer_s_thresholds_as_its_other_tables(
    signed: Path,
) -> None:
    """Its rules showed fairlearn's text with every digit ('[>0.30711116590620846]') beside
    rounded rates (found by the leftover2 review); the file keeps them exact, for evaluate."""
    bundle = signed / "bundle"
    exact = json.loads((bundle / "evidence" / "finetune" / "postprocessing.json").read_text())
    card = (bundle / "model_card.md").read_text()
    section = card[card.index("## Result: finetune/postprocessing.json") :]
    for group, rule in exact["thresholds"].items():
        row = next(line for line in section.splitlines() if line.startswith(f"| {group} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        op, value = rule["operation0"][1], float(rule["operation0"][2:-1])
        assert cells[1:3] == [f"{rule['p0']:.4f}", f"score {op} {value:.4f}"], row
        assert rule["operation0"] not in card and rule["operation1"] not in card
    assert ("The rules' thresholds are rounded here; evaluate replays the exact ones in "
            "evidence/finetune/postprocessing.json.") in " ".join(card.split())  # fmt: skip


def test_the_card_names_the_groups_left_out_of_the_gaps(small_config: Config) -> None:
    from sslops.audit.card import _fairness_section
    from sslops.audit.document import Document

    model = {"gaps": {"sex": {"dp_difference": 0.01}}, "small_groups": {"sex": ["Nonbinary"]}}
    doc = Document("t")
    _fairness_section(doc, small_config, {"models": {"m": model}, "sensitive": "sex"}, {}, {}, "m")
    text = " ".join(doc.markdown().split())
    assert "Left out of every gap (fewer than 10 test rows" in text
    assert "Nonbinary by sex." in text


def test_the_card_shows_an_undefined_gap_as_such_and_says_why(small_config: Config) -> None:
    """A gap with fewer than two groups to compare was 0 on the card (found by the
    recompute review)."""
    from sslops.audit.card import _fairness_section
    from sslops.audit.document import Document
    from sslops.evaluate import model_metrics

    sex = np.array(["Male"] * 6 + ["Female"] * 4)
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])  # Female: no positive row
    score = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7, 0.2, 0.1, 0.3])
    model = model_metrics(y, score, 0.5, {"sex": sex})
    doc = Document("t")
    _fairness_section(doc, small_config, {"models": {"m": model}, "sensitive": "sex"}, {}, {}, "m")
    text = " ".join(doc.markdown().split())
    row = next(line for line in doc.markdown().splitlines() if line.startswith("| sex |"))
    assert row.split(" | ")[3] == "n/a"  # equal-opportunity difference
    assert "Gaps not measured as such (n/a: fewer than two groups to compare)" in text
    assert "only 'Male' has positive rows" in text


def test_the_card_says_when_the_model_is_no_better_than_the_majority_class() -> None:
    """300 rows: the deployed model scored 0.63 where always predicting the majority class
    scores 0.75, selected on 30 validation rows; the card said nothing."""
    from sslops.audit.card import _baseline_limits

    metrics = {"models": {"m": {"accuracy": 0.6308}}, "majority_class_accuracy": 0.7538}
    limits = _baseline_limits(metrics, {"validation_rows": 30}, "m")
    assert "not above always predicting the majority class (0.7538)" in limits[0]
    assert limits[1].startswith("The fine-tuning selection compared candidates on 30 validation")
    fine = {"models": {"m": {"accuracy": 0.85}}, "majority_class_accuracy": 0.76}
    assert _baseline_limits(fine, {"validation_rows": 2807}, "m") == []


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
    tampered = tmp_path / "tampered"  # a previous bundle whose figures were edited is refused
    shutil.copytree(stage_artifacts["audit"] / "bundle", tampered)
    metrics = tampered / "evidence" / "evaluate" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"accuracy": 0.', '"accuracy": 0.9', 1))
    cfg = _with(small_config, previous_bundle=str(tampered))
    with pytest.raises(
        ArtifactError,
        match=r"previous_bundle .* failed verification \(evidence/"
        r"evaluate/metrics.json was modified",
    ):
        audit(cfg, upstream, tmp_path / "again")
    assert not (tmp_path / "again").exists()


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
    assert frameworks == {"EU AI Act Annex IV", "EU AI Act Articles", "NIST AI RMF"}
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

    from tests.conftest import FAST_OVERRIDES

    args = ["sslops", "run", "--config", str(ROOT / "configs" / "adult.yaml"),
            "--out", str(tmp_path / "run"), "--set", f"data.train={small_data['train']}",
            "--set", f"data.test={small_data['test']}", "--set", "audit.gates.min_auc=0.99"]  # fmt: skip
    for override in FAST_OVERRIDES:
        args += ["--set", override]
    result = subprocess.run(args, capture_output=True, text=True, env=cli_env, timeout=900)
    assert result.returncode == 3  # a failed gate; 2 is bad input
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: policy gate failed") and "min_auc" in last and "0.99" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def _damage_member(archive: Path, member: str, at: int = 50) -> None:
    """Flip byte ``at`` of ``member``'s compressed data (its headers stay intact)."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + at
    data[offset] ^= 0xFF
    archive.write_bytes(bytes(data))


def test_keygen_refuses_one_file_for_both_keys_an_existing_key_or_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def keygen(private: Path, public: Path) -> list[str]:
        assert main(["audit", "keygen", "--private-key", str(private), "--public-key",
                     str(public)]) == 2  # fmt: skip
        return capsys.readouterr().err.strip().splitlines()

    same = tmp_path / "k1.pem"
    assert keygen(same, tmp_path / "." / "k1.pem") == [
        f"error: --private-key and --public-key are the same file ({same})"
    ]
    assert not same.exists()
    generate_keypair(same, tmp_path / "k1.pub.pem")
    before = same.read_bytes()
    err = keygen(same, tmp_path / "k2.pub.pem")
    assert err == [
        f"error: {same} exists; a new key pair would replace that private key: remove it "
        "first or choose another name"
    ]
    assert same.read_bytes() == before and not (tmp_path / "k2.pub.pem").exists()
    err = keygen(tmp_path / "k3.pem", tmp_path / "k1.pub.pem")
    assert len(err) == 1 and "that public key" in err[0] and not (tmp_path / "k3.pem").exists()
    nodir = tmp_path / "nodir"
    assert keygen(tmp_path / "np.pem", nodir / "b.pem") == [
        f"error: --public-key {nodir / 'b.pem'}: folder {nodir} does not exist"
    ]
    assert keygen(nodir / "np.pem", tmp_path / "b.pem") == [
        f"error: --private-key {nodir / 'np.pem'}: folder {nodir} does not exist"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1.pem", "k1.pub.pem"]


def test_keygen_removes_the_private_key_when_the_public_key_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    real_open = os.open

    def failing_open(path: object, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".pub.pem"):
            raise OSError(28, "No space left on device", str(path))
        return real_open(path, flags, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing_open)
    with pytest.raises(OSError, match="No space"):
        generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_zip_member_or_a_cut_short_zip_is_a_named_problem(
    signed: Path, keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "audit"
    shutil.copytree(signed, folder)
    _damage_member(folder / "bundle.zip", "model.onnx")
    public = ["--public-key", str(keys["public"])]
    assert main(["audit", "verify", str(folder), *public]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "  bundle.zip: model.onnx is damaged (Error -3 while decompressing data" in err
    assert main(["audit", "verify", str(folder / "bundle.zip")]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: {folder / 'bundle.zip'} failed verification (1 problem): ")
    assert last.endswith(")") and "model.onnx is damaged (" in last
    for member in ("manifest.json", "signature.json"):  # the seals themselves
        packed = tmp_path / f"{member}.zip"
        shutil.copy2(signed / "bundle.zip", packed)
        _damage_member(packed, member, at=10)
        problems = verify_bundle(packed, load_public_key(keys["public"]))["problems"]
        assert any(p.startswith(f"{member} is damaged (") for p in problems), problems

    cut = tmp_path / "cut"
    shutil.copytree(signed, cut)
    (cut / "bundle.zip").write_bytes((signed / "bundle.zip").read_bytes()[:5000])
    assert main(["audit", "verify", str(cut)]) == 1
    err = capsys.readouterr().err
    assert "  bundle.zip is damaged (not a readable zip archive: File is not a zip file)" in err
    assert main(["audit", "verify", str(cut / "bundle.zip")]) == 1
    assert "bundle.zip is damaged (not a readable zip archive" in capsys.readouterr().err


def test_a_folder_that_is_not_a_bundle_is_an_error(
    stage_artifacts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "links").mkdir()  # no bundle either, whatever it holds (the docs review)
    (tmp_path / "links" / "x").symlink_to(tmp_path / "empty")
    for folder in (tmp_path / "empty", stage_artifacts["export"], tmp_path / "links"):
        assert main(["audit", "verify", str(folder)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: {folder} is not an audit bundle (no manifest.json; expected a bundle "
            "folder, its bundle.zip or the audit artifact folder)"
        ]
    bundle = _copy(stage_artifacts["audit"], tmp_path)  # a real bundle lost its manifest
    (bundle / "manifest.json").unlink()
    assert verify_bundle(bundle)["problems"] == ["manifest.json is missing"]


def _raw(cfg: Config, section: str, **settings: object) -> Config:
    raw = cfg.model_dump(mode="json")
    raw[section].update(settings)
    return Config.model_validate(raw)


def test_audit_refuses_a_config_the_chain_did_not_run_with(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    prepared = stage_artifacts["prepare"]
    ran = small_config.data.sensitive
    sensitive = _raw(small_config, "data", sensitive=["race"])
    with pytest.raises(ConfigError) as info:
        audit(sensitive, upstream, tmp_path / "a")
    assert str(info.value) == (
        f"the config's data.sensitive is ['race'] but {prepared} was prepared with "
        f"{ran!r}; pass the config the chain was prepared with, or prepare the data with this "
        "one first"
    )
    from sslops.config import load_config
    from tests.conftest import ROOT

    gunpoint = load_config(ROOT / "configs" / "gunpoint.yaml")  # another data set's config
    with pytest.raises(DataError) as info:
        audit(gunpoint, upstream, tmp_path / "b")
    assert str(info.value) == (
        f"{prepared} holds tabular data but the config says modality: timeseries; pass the "
        "config the chain was prepared with, or prepare the data with this one first"
    )
    with pytest.raises(ConfigError) as info:
        audit(_raw(small_config, "export", model="ssl"), upstream, tmp_path / "c")
    assert str(info.value) == (
        f"export.model is 'ssl' but {stage_artifacts['export']} holds the 'mitigated' model; "
        "pass the config the chain ran with"
    )
    assert list(tmp_path.iterdir()) == []


def _rehashed_copy(artifact: Path, target: Path, name: str, data: bytes) -> Path:
    """A copy of ``artifact`` with ``name`` replaced and its hash rewritten in meta.json."""
    import hashlib

    shutil.copytree(artifact, target)
    (target / name).write_bytes(data)
    meta = json.loads((target / "meta.json").read_text())
    meta["files"][name] = hashlib.sha256(data).hexdigest()
    (target / "meta.json").write_text(json.dumps(meta, indent=2))
    return target


def test_audit_refuses_a_replaced_model_or_metrics_without_the_deployed_model(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    from sslops.errors import ArtifactError

    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    export = stage_artifacts["export"]
    swapped = _rehashed_copy(export, tmp_path / "export", "model.onnx",
                             (export / "model.int8.onnx").read_bytes())  # fmt: skip
    with pytest.raises(ArtifactError) as info:
        audit(small_config, {**upstream, "export": swapped}, tmp_path / "out")
    recorded = json.loads((export / "export.json").read_text())["onnx_sha256"]
    message = str(info.value)
    assert message.startswith(f"{swapped / 'model.onnx'} has sha256 ")
    assert f"but {swapped / 'export.json'} records {recorded}: the model was replaced" in message
    metrics = json.loads((stage_artifacts["evaluate"] / "metrics.json").read_text())
    del metrics["models"]["mitigated"]
    evaluation = _rehashed_copy(stage_artifacts["evaluate"], tmp_path / "evaluate",
                                "metrics.json", json.dumps(metrics).encode())  # fmt: skip
    with pytest.raises(ArtifactError) as info:
        audit(small_config, {**upstream, "evaluate": evaluation}, tmp_path / "out")
    assert str(info.value).startswith(
        f"{evaluation / 'metrics.json'} has no metrics for the deployed model 'mitigated' (it has: "
    )
    assert not (tmp_path / "out").exists()


def test_model_card_says_what_unlabeled_rows_did_and_what_the_policy_compared(
    tmp_path: Path,
) -> None:
    from sslops.audit.card import build_card
    from sslops.config import load_config

    bundle = tmp_path / "bundle"
    (bundle / "evidence" / "finetune").mkdir(parents=True)
    fairness = {"constraint": "demographic_parity", "sensitive": ["sex"], "max_gap": 0.02,
                "policy_met_on_validation": True, "selected": "evidence+penalty=100",
                "selected_mechanism": "evidence_penalty", "gap_rows": {}}  # fmt: skip
    context = {"gates": {"overall": "pass", "results": []}, "signing": {"signed": False},
               "lineage": {"stages": [], "chain": {}}, "run": {"executed_by": "test"},
               "compliance": []}  # fmt: skip
    cfg = load_config(ROOT / "configs" / "adult.yaml", [])

    def card(**finetune: Any) -> str:
        report = {"labels_used": 260, "label_fraction": 1.0, "train_rows": 260, **finetune}
        (bundle / "evidence" / "finetune" / "finetune.json").write_text(json.dumps(report))
        return " ".join(build_card(cfg, bundle, context, []).markdown().split())

    plain = card(fairness=fairness)
    assert "of 260 training rows)." in plain and "upper confidence" not in plain
    text = card(unlabeled_rows=28000, fairness={**fairness, "gap_confidence": 0.95})
    assert "28,000 rows without a label were used where no label is needed" in text
    assert "Selected on the 95% upper confidence bound of each candidate's gap" in text


def test_model_card_says_pretraining_read_the_training_rows_without_their_labels(
    tmp_path: Path,
) -> None:
    """Not "SCARF on 2,799 unlabeled rows" when every row had a label: pretraining reads the
    training rows (labels unused) and the rows without a label, and the card says which."""
    from sslops.audit.card import build_card
    from sslops.config import load_config

    bundle = tmp_path / "bundle"
    for stage in ("finetune", "pretrain", "prepare"):
        (bundle / "evidence" / stage).mkdir(parents=True)
    context = {"gates": {"overall": "pass", "results": []}, "signing": {"signed": False},
               "lineage": {"stages": [], "chain": {}}, "run": {"executed_by": "test"},
               "compliance": []}  # fmt: skip
    cfg = load_config(ROOT / "configs" / "adult.yaml", [])

    def card(rows: int, datacard: dict[str, Any] | None = None, **finetune: Any) -> str:
        evidence = bundle / "evidence"
        report = {"labels_used": 260, "label_fraction": 0.1, "train_rows": 2799, **finetune}
        (evidence / "finetune" / "finetune.json").write_text(json.dumps(report))
        pretrain = {"objective": "scarf", "rows": rows, "steps": 40, "final_loss": 1.5}
        (evidence / "pretrain" / "summary.json").write_text(json.dumps(pretrain))
        (evidence / "prepare" / "datacard.json").write_text(json.dumps(datacard or {}))
        return " ".join(build_card(cfg, bundle, context, []).markdown().split())

    every = card(2799)
    assert "SCARF on the 2,799 training rows without their labels, 40 steps" in every
    assert "unlabeled rows" not in every
    partly = card(3799, unlabeled_rows=1000)
    assert (
        "SCARF on 3,799 rows (2,799 training rows without their labels and 1,000 rows without "
        "a label), 40 steps" in partly
    )
    assert "SCARF on 5,000 rows without their labels, 40 steps" in card(5000)  # counts disagree
    # a label trained one-vs-rest is named with its values in the Data section
    values = {"positive": {">50K": 501}, "negative": {"<=50K": 1376, "unknown": 196}}
    datacard = {"label": "income", "splits": {"train": {"rows": 2799, "positive_rate": 0.2}},
                "label_values": values}  # fmt: skip
    assert (
        "Label 'income' has 3 values: positive '>50K' (501); negative '<=50K' (1,376), "
        "'unknown' (196)" in card(2799, datacard)
    )
    # a split with fewer than 10 rows of a class is named there too
    datacard["few_class_rows"] = {"validation": {"positive": 4, "negative": 276}}
    assert (
        "Label 'income': few rows of a class (validation 4 positive / 276 negative); the "
        "metrics and fairness gaps measured there" in card(2799, datacard)
    )


def test_a_left_out_groups_selection_rate_in_the_figure_numbers_is_na_and_explained(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    """A group under evaluate.min_group_rows has no rate (NaN): the card's numbers of the
    selection-rate figure printed 'nan' for it (found by the leftovers review); they print
    n/a, as the card does for other undefined values, and say why."""
    from sslops.evaluate import evaluate

    raw = small_config.model_dump(mode="json")
    raw["evaluate"]["min_group_rows"] = 400  # Female has about 330 of the 1,000 test rows
    # sex's gaps are undefined then (one group left): those gates would fail, as they should
    raw["audit"]["gates"].update(max_dp_difference=None, max_eo_difference=None)
    cfg = Config.model_validate(raw)
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    upstream["evaluate"] = evaluate(cfg, upstream["prepare"], upstream["finetune"],
                                    tmp_path / "evaluate")  # fmt: skip
    assert (tmp_path / "evaluate" / "selection_rate.csv").read_text().splitlines()[1] == (
        "Female,nan,nan,nan,nan"  # the data file keeps NaN, as pandas reads it
    )
    out = audit(cfg, upstream, tmp_path / "audit")
    card = (out / "model_card.md").read_text(encoding="utf-8")
    assert "| Female | n/a | n/a | n/a | n/a |" in card and not re.search(r"\bnan\b", card)
    assert ("n/a in these numbers: the group has fewer than 400 test rows "
            "(evaluate.min_group_rows)") in card  # fmt: skip
    html_card = (out / "model_card.html").read_text(encoding="utf-8")
    assert "<td>nan</td>" not in html_card and "<td>n/a</td>" in html_card
