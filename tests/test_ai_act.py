"""The EU AI Act / NIST AI RMF map (compliance.json) read as an assessor would: every file it
cites is in the bundle and says what the map claims, nothing is marked evidenced that the
bundle does not show, and what only the provider can write is marked as the provider's."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from sslops.audit.compliance import ABSENT_WHY, ANNEX_IV, ARTICLES, ITEMS, NIST, compliance_map
from sslops.config import Config
from tests.conftest import ROOT

# Every file sslops can put in a bundle that the map cites: signed, with an OOD split and a
# change log.
EVERY_FILE = {
    "model_card.md", "model_card.html", "model_card.pdf", "compliance.json", "manifest.json",
    "signature.json", "config.json", "lineage.json", "environment.json", "sbom.cdx.json",
    "run.json", "gates.json", "changelog.json", "evidence/evaluate/metrics.json",
    "evidence/evaluate/ood.json", "evidence/evaluate/shortcuts.json",
    "evidence/export/export.json", "evidence/prepare/datacard.md",
    "evidence/prepare/datacard.json", "evidence/pretrain/summary.json",
    "evidence/finetune/finetune.json",
}  # fmt: skip
# Items only the provider can write, whatever the bundle holds.
PROVIDER_ONLY = {"5", "7", "8", "9", "Art. 12", "Art. 14", "MEASURE 1.3", "MEASURE 2.13",
                 "MEASURE 4.2"}  # fmt: skip
# Items that ask for a person's signature or judgment: never 'evidenced' by files alone.
NEEDS_A_PERSON = {"1", "2(b)", "2(e)", "2(g)", "3", "4", "6", "Art. 10", "Art. 13", "Art. 15",
                  "MEASURE 2.5", "MEASURE 2.9"}  # fmt: skip


@pytest.fixture(scope="module")
def bundle(stage_artifacts: dict[str, Path]) -> Path:
    return stage_artifacts["audit"] / "bundle"


@pytest.fixture(scope="module")
def rows(bundle: Path) -> list[dict[str, Any]]:
    return list(json.loads((bundle / "compliance.json").read_text(encoding="utf-8")))


def test_every_cited_file_is_in_the_bundle_and_not_empty(
    bundle: Path, rows: list[dict[str, Any]]
) -> None:
    for row in rows:
        assert set(row["evidence"]) == set(row["evidence_shows"]), row["id"]
        for name in row["evidence_files"]:
            # compliance.json is written before the manifest, and the manifest before the
            # signature: both exist by the time the bundle is read.
            assert (bundle / name).is_file(), (row["id"], name)
            assert (bundle / name).stat().st_size > 0, (row["id"], name)
        for pattern in row["evidence"]:
            assert any(fnmatch(f, pattern) for f in row["evidence_files"]), (
                row["id"], pattern)  # fmt: skip


def test_no_row_claims_more_than_its_files(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row["coverage"] == "evidenced":
            assert row["evidence_files"] and not row["absent"], row["id"]
            assert not row["provider_supplies"], row["id"]
        if row["coverage"] in ("partial", "missing", "provider"):
            assert row["provider_supplies"] or row["absent"], row["id"]
        if row["coverage"] == "missing":
            assert not row["evidence_files"], row["id"]
        if not row["evidence_files"]:
            assert row["coverage"] in ("missing", "provider"), row["id"]


def test_the_files_say_what_the_map_claims(bundle: Path, rows: list[dict[str, Any]]) -> None:
    """The claims of 2(g), 3, 2(d)/Art. 10 and 2(a) checked against the files' content."""
    shows = {r["id"]: r["evidence_shows"] for r in rows}
    metrics = json.loads((bundle / "evidence/evaluate/metrics.json").read_text())
    exported = json.loads((bundle / "evidence/export/export.json").read_text())
    deployed = metrics["models"][exported["model"]]
    assert "per-group" in shows["2(g)"]["evidence/evaluate/metrics.json"]
    assert isinstance(deployed["accuracy"], float) and "accuracy" in deployed["intervals"]
    assert all("accuracy" in g for groups in deployed["by_group"].values() for g in groups.values())
    assert isinstance(deployed["dp_difference"], float)
    assert isinstance(deployed["eo_difference"], float)
    shortcuts = json.loads((bundle / "evidence/evaluate/shortcuts.json").read_text())
    assert (
        "only a sensitive or group attribute" in shows["2(g)"]["evidence/evaluate/shortcuts.json"]
    )
    assert shortcuts["model"] == exported["model"] and shortcuts["counterfactual"]
    assert "input" in shows["3"]["evidence/export/export.json"]
    assert exported["inputs"] and exported["parity"]["rows"] > 0
    card = json.loads((bundle / "evidence/prepare/datacard.json").read_text())
    assert {"train", "test"} <= set(card["splits"])
    datacard = (bundle / "evidence/prepare/datacard.md").read_text()
    assert "missing" in datacard.lower() and "sex" in datacard
    lineage = json.loads((bundle / "lineage.json").read_text())
    assert "when each stage ran" in shows["2(g)"]["lineage.json"]
    assert all(s["started"] and s["ended"] for s in lineage["stages"])
    # Each time from the stage's own clock (its start, not its artifact's write; found by
    # the logs review), with its duration.
    for stage in lineage["stages"]:
        assert stage["time_source"] == "stage", stage
        assert isinstance(stage["seconds"], float) and stage["seconds"] >= 0
        assert stage["started"] <= stage["ended"]
    assert list(lineage["chain"]) == [
        "raw data", "prepared splits", "SSL checkpoint", "fine-tuned model", "ONNX"
    ]  # fmt: skip


def test_robustness_is_not_claimed_without_an_ood_evaluation(
    bundle: Path, rows: list[dict[str, Any]]
) -> None:
    """The test config holds no OOD split: 2(g) used to read 'covered' (any evaluate file
    matched) while the card said 'Out-of-distribution split: not evaluated'."""
    assert not (bundle / "evidence/evaluate/ood.json").exists()
    by_id = {r["id"]: r for r in rows}
    for ident in ("2(g)", "Art. 15", "MEASURE 2.5"):
        assert by_id[ident]["coverage"] == "partial"
        assert by_id[ident]["absent"]["evidence/evaluate/ood.json"] == ABSENT_WHY[
            "evidence/evaluate/ood.json"]  # fmt: skip
    card = " ".join((bundle / "model_card.md").read_text().split())
    assert "absent: evidence/evaluate/ood.json (no out-of-distribution split" in card


def test_what_only_the_provider_can_write_is_marked_as_the_provider_s() -> None:
    rows = {r["id"]: r for r in compliance_map(EVERY_FILE)}
    assert {i for i, r in rows.items() if r["coverage"] == "provider"} == PROVIDER_ONLY
    for ident in PROVIDER_ONLY | NEEDS_A_PERSON:
        assert rows[ident]["coverage"] != "evidenced", ident
        assert rows[ident]["provider_supplies"], ident
    # With every file present, what is evidenced is what a pipeline alone can show.
    assert {i for i, r in rows.items() if r["coverage"] == "evidenced"} == {
        "2(a)", "MEASURE 2.1", "MEASURE 2.11"}  # fmt: skip
    # The signature is a key's, not a responsible person's.
    assert "not who" in rows["2(g)"]["evidence_shows"]["signature.json"]
    assert "responsible persons" in rows["2(g)"]["provider_supplies"]


def test_the_map_covers_annex_iv_and_the_articles_behind_it() -> None:
    idents = [item.ident for item in ITEMS]
    assert len(idents) == len(set(idents))  # rebuild keys rows by id
    annex = [i.ident for i in ITEMS if i.framework == ANNEX_IV]
    assert annex == ["1", *(f"2({c})" for c in "abcdefgh"), *map(str, range(3, 10))]
    articles = [i.ident for i in ITEMS if i.framework == ARTICLES]
    assert articles == ["Art. 10", "Art. 12", "Art. 13", "Art. 14", "Art. 15"]
    assert {i.framework for i in ITEMS} == {ANNEX_IV, ARTICLES, NIST}


def test_an_unsigned_first_bundle_names_what_is_absent() -> None:
    rows = {r["id"]: r for r in compliance_map(EVERY_FILE - {"signature.json", "changelog.json"})}
    assert rows["6"]["coverage"] == "missing" and not rows["6"]["evidence_shows"]
    assert "previous bundle" in rows["6"]["absent"]["changelog.json"]
    assert "not signed" in rows["2(g)"]["absent"]["signature.json"]
    assert rows["MEASURE 2.13"]["coverage"] == "provider"


def test_the_card_states_the_map_is_no_conformity_finding(bundle: Path) -> None:
    card = " ".join((bundle / "model_card.md").read_text().split())
    assert "it is not a conformity assessment" in card
    assert "to be provided by the provider" in card
    assert "Annex IV 8: EU declaration of conformity (Art. 47) | provider |" in card
    # The test config keeps sslops' default intended-use text: the card says it is not the
    # provider's statement of intended purpose.
    assert "sslops' default text: set audit.intended_use" in card


def test_the_card_says_when_the_intended_use_is_sslops_default(tmp_path: Path) -> None:
    """Annex IV 1(a) asks for the intended purpose: a card that printed the config's default
    text read as the provider's statement of it."""
    from sslops.audit.card import build_card
    from sslops.config import load_config

    context = {"gates": {"overall": "pass", "results": []}, "signing": {"signed": False},
               "lineage": {"stages": [], "chain": {}}, "run": {"executed_by": "test"},
               "compliance": compliance_map(EVERY_FILE)}  # fmt: skip

    def card(*overrides: str) -> str:
        cfg = load_config(ROOT / "configs" / "adult.yaml", list(overrides))
        return " ".join(build_card(cfg, tmp_path, context, []).markdown().split())

    assert "sslops' default text: set audit.intended_use" in card()
    own = card("audit.intended_use=Ranks loan files for a credit officer to review")
    assert "Intended use: Ranks loan files for a credit officer to review" in own
    assert "default text" not in own
    assert "| Annex IV 2(a): Development methods" in own


def test_the_docs_table_matches_the_map() -> None:
    """docs/audit.md lists every item with the status it has when every file is present."""
    text = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    section = text.split("## Mapping to the EU AI Act", 1)[1].split("\n## ", 1)[0]
    status = {}
    for line in section.splitlines():
        found = re.match(r"\| (?:Annex IV )?((?:Art\. |MEASURE )?[\d.]+(?:\([a-h]\))?): .*? \| "
                         r"(\w+) \|", line)  # fmt: skip
        if found:
            status[found[1]] = found[2]
    assert status == {r["id"]: r["coverage"] for r in compliance_map(EVERY_FILE)}


def test_a_signed_bundle_and_its_unsigned_rebuild_differ_only_where_explained(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """docs/audit.md rebuilds a filed bundle without the issuer's key; the card's table rows
    citing signature.json then differ ('signature.json: ...' vs 'absent: signature.json'),
    and the comparison called the card unexplained."""
    from sslops.audit import audit, generate_keypair
    from sslops.audit.rebuild import compare_bundles

    generate_keypair(tmp_path / "issuer.pem", tmp_path / "issuer.pub.pem")
    # The key from the environment (audit.signing.key_env): the config stays the stages' own.
    monkeypatch.setenv(small_config.audit.signing.key_env,
                       (tmp_path / "issuer.pem").read_text())  # fmt: skip
    upstream = {s: stage_artifacts[s] for s in ("prepare", "pretrain", "finetune", "evaluate",
                                                "export")}  # fmt: skip
    signed = audit(small_config, upstream, tmp_path / "signed")
    assert (signed / "bundle" / "signature.json").is_file()
    report = compare_bundles(signed, stage_artifacts["audit"])
    assert report["unexplained"] == [], report["unexplained"]
    assert report["result"] == "identical but for the fields explained"
