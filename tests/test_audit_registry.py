"""The audit registry: filing is verified, content-addressed, idempotent and atomic; every
later change to a filed bundle or an index entry is found by ``sslops audit list --verify``."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sslops.audit import audit, generate_keypair
from sslops.audit.registry import check_registry, file_bundle, list_registry, model_slug
from sslops.cli import main
from sslops.config import Config
from sslops.errors import ArtifactError, ConfigError
from tests.test_audit import _UPSTREAM, _with


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("registry-keys")
    paths = {"private": root / "issuer.pem", "public": root / "issuer.pub.pem"}
    generate_keypair(paths["private"], paths["public"])
    generate_keypair(root / "other.pem", root / "other.pub.pem")
    paths["other_public"] = root / "other.pub.pem"
    return paths


@pytest.fixture(scope="module")
def bundles(
    stage_artifacts: dict[str, Path], small_config: Config, keys: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:  # fmt: skip
    """Two audit artifacts of the same run: one unsigned, one signed (different manifests)."""
    root = tmp_path_factory.mktemp("registry-bundles")
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    signed = _with(small_config, signing={"key_file": str(keys["private"])})
    return {
        "unsigned": audit(small_config, upstream, root / "unsigned"),
        "signed": audit(signed, upstream, root / "signed"),
    }


def _sha(audit_dir: Path) -> str:
    return hashlib.sha256((audit_dir / "bundle" / "manifest.json").read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_filing_is_content_addressed_read_only_and_idempotent(
    bundles: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    source = bundles["unsigned"]
    assert (
        main(["audit", "file", str(source), "--registry", str(registry), "--model", "income"]) == 0
    )
    sha = _sha(source)
    filed = registry / "bundles" / f"{sha}.zip"
    assert (
        f"filed: {source} as {filed} (model income, NOT signed, gates passed)"
        in capsys.readouterr().out
    )
    # The bundle's own deterministic zip, byte for byte, and read-only.
    assert filed.read_bytes() == (source / "bundle.zip").read_bytes()
    assert not filed.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    index = json.loads((registry / "models" / "income" / "index.json").read_text())
    [entry] = index["entries"]
    gates = json.loads((source / "bundle" / "gates.json").read_text())
    measured = {r["gate"]: r["value"] for r in gates["results"]}
    assert entry["manifest_sha256"] == sha and entry["previous"] is None
    assert entry["gates"] == gates["overall"] and entry["deployed"] == gates["model"]
    assert entry["metrics"]["accuracy"] == measured["min_accuracy"]
    assert entry["metrics"]["eo_difference"] == measured["max_eo_difference"]
    export = json.loads((source / "bundle" / "evidence" / "export" / "export.json").read_text())
    assert entry["onnx_sha256"] == export["onnx_sha256"]
    before = _tree(registry)
    # Again, from the folder and from the zip: the same bundle, one entry, nothing rewritten.
    for again in (source / "bundle", source / "bundle.zip"):
        assert (
            main(["audit", "file", str(again), "--registry", str(registry), "--model", "income"])
            == 0
        )
        assert "already filed:" in capsys.readouterr().out
    assert _tree(registry) == before
    assert main(["audit", "list", "--registry", str(registry), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["model"] == "income" and row["manifest_sha256"] == sha


def test_default_model_name_is_the_configured_one_else_the_title(
    bundles: dict[str, Path], stage_artifacts: dict[str, Path], small_config: Config,
    tmp_path: Path,
) -> None:  # fmt: skip
    configured = small_config.audit.model_name
    assert configured and file_bundle(bundles["unsigned"], tmp_path / "a")["model"] == configured
    untitled = _with(small_config, model_name=None, title="Income classifier (UCI Adult), v2")
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    source = audit(untitled, upstream, tmp_path / "untitled")
    assert file_bundle(source, tmp_path / "b")["model"] == "income-classifier-uci-adult-v2"
    assert model_slug("  --  ") == "model" and len(model_slug("x" * 100)) == 64


def test_list_prints_a_row_a_bundle_and_verify_passes_on_an_intact_registry(
    bundles: dict[str, Path], keys: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    registry = tmp_path / "registry"
    for name in ("unsigned", "signed"):
        file_bundle(bundles[name], registry, model="income")
    capsys.readouterr()
    assert main(["audit", "list", "--registry", str(registry), "--verify"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split()[:3] == ["FILED", "MODEL", "MANIFEST"] and len(lines) == 3
    assert lines[1].split()[2] == _sha(bundles["unsigned"])[:12]
    assert lines[2].split()[-2:] == ["yes", "pending"]
    assert "verified: 2 filed bundle(s) intact" in captured.err
    # Every bundle must be signed by the issuer: the unsigned one is named.
    public = str(keys["public"])
    assert (
        main(["audit", "list", "--registry", str(registry), "--verify", "--public-key", public])
        == 1
    )
    assert f"{_sha(bundles['unsigned'])}.zip: signature.json is missing" in capsys.readouterr().err


def test_signature_requirements_refuse_before_anything_is_written(
    bundles: dict[str, Path], keys: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    registry = tmp_path / "registry"
    unsigned = ["audit", "file", str(bundles["unsigned"]), "--registry", str(registry)]
    assert main([*unsigned, "--require-signed"]) == 2
    assert "is not signed and signed bundles are required" in capsys.readouterr().err
    assert main([*unsigned, "--public-key", str(keys["public"])]) == 2
    assert "signature.json is missing" in capsys.readouterr().err
    wrong = ["audit", "file", str(bundles["signed"]), "--registry", str(registry)]
    assert main([*wrong, "--public-key", str(keys["other_public"])]) == 2
    assert "nothing was filed" in capsys.readouterr().err
    assert not registry.exists()
    assert main([*wrong, "--public-key", str(keys["public"]), "--require-signed"]) == 0
    out = capsys.readouterr().out
    assert ", signed with key SHA256:" in out and "not checked" not in out


def test_a_tampered_bundle_is_not_filed(bundles: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundles["unsigned"] / "bundle", copy)
    gates = copy / "gates.json"
    gates.write_text(gates.read_text().replace('"failed"', '"passed"').replace("0.", "1.", 1))
    registry = tmp_path / "registry"
    with pytest.raises(
        ArtifactError, match=r"failed verification .*gates.json was modified.*nothing was filed"
    ):
        file_bundle(copy, registry)
    assert not registry.exists()


def test_a_folder_that_is_not_a_registry_is_refused(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "not-a-registry"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match=r"is not an sslops audit registry .* not empty"):
        file_bundle(bundles["unsigned"], folder)
    assert _tree(folder) == {"notes.txt": b"mine"}
    with pytest.raises(ArtifactError, match="not a registry model name"):
        file_bundle(bundles["unsigned"], tmp_path / "registry", model="Income Model")
    assert not (tmp_path / "registry").exists()


def _tampered(bundles: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    registry = tmp_path / "registry"
    for name in ("unsigned", "signed"):
        file_bundle(bundles[name], registry, model="income")
    index = registry / "models" / "income" / "index.json"
    assert check_registry(registry) == []
    return registry, index


def test_verify_finds_a_removed_or_changed_index_entry(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    registry, index = _tampered(bundles, tmp_path)
    original = json.loads(index.read_text())
    # The first entry removed: the chain breaks, and its bundle is in no index.
    index.write_text(json.dumps({**original, "entries": original["entries"][1:]}))
    problems = check_registry(registry)
    assert any("entry 1: the chain of digests breaks" in p for p in problems)
    assert any(
        f"{_sha(bundles['unsigned'])}.zip is filed in no model's index" in p for p in problems
    )
    # The last entry's figures changed (no entry after it to carry its digest).
    changed = json.loads(json.dumps(original))
    changed["entries"][-1]["metrics"]["eo_difference"] = 0.001
    changed["entries"][-1]["gates"] = (
        "passed" if changed["entries"][-1]["gates"] != "passed" else "x"
    )
    index.write_text(json.dumps(changed))
    assert check_registry(registry) == [
        "models/income/index.json entry 2: gates, metrics differ from the filed bundle"
    ]
    # The first entry's figures changed: it differs, and the chain breaks after it.
    changed = json.loads(json.dumps(original))
    changed["entries"][0]["filed"] = "2020-01-01T00:00:00+00:00"
    index.write_text(json.dumps(changed))
    assert check_registry(registry) == ["models/income/index.json entry 2: the chain of digests breaks "
                                        "(an entry before it was removed, changed or moved)"]  # fmt: skip


def test_a_checkpoint_kept_elsewhere_finds_entries_removed_from_the_end(
    bundles: dict[str, Path], approver: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry, index = _tampered(bundles, tmp_path)
    file_bundle(bundles["unsigned"], registry, model="other")
    point = tmp_path / "kept-elsewhere" / "checkpoint.json"
    point.parent.mkdir()
    assert main(["audit", "checkpoint", "--registry", str(registry), "--out", str(point)]) == 0
    assert "2 model(s), 3 index entries" in capsys.readouterr().out
    recorded = json.loads(point.read_text())
    assert {m: h["entries"] for m, h in recorded["models"].items()} == {"income": 2, "other": 1}
    check = ["audit", "list", "--registry", str(registry), "--checkpoint", str(point)]
    assert main(check) == 0
    assert "every entry of the checkpoint of" in capsys.readouterr().err
    # Entries appended since (a decision) are fine.
    sha = _sha(bundles["signed"])
    assert main(["audit", "reject", sha, "--registry", str(registry), "--by", "K. Roe",
                 "--key-file", str(approver)]) == 0  # fmt: skip
    assert main(check) == 0
    capsys.readouterr()
    # The chain cannot see its last entry removed; the checkpoint can.
    original = json.loads(index.read_text())
    index.write_text(json.dumps({**original, "entries": original["entries"][:1]}))
    assert check_registry(registry) == [
        f"bundles/{sha}.zip is filed in no model's index (a filing interrupted before its "
        "entry: file it again; or an entry removed)"
    ]
    assert main(check) == 1
    assert ("models/income/index.json holds 1 entries, the checkpoint of "
            f"{recorded['taken']} recorded 2: the last 1 were removed") in capsys.readouterr().err  # fmt: skip
    # The entry it ended on rewritten (and re-chained: the chain alone is satisfied).
    from sslops.audit.registry import entry_digest

    forged = json.loads(json.dumps(original))
    forged["entries"][1]["filed"] = "2020-01-01T00:00:00+00:00"
    forged["entries"][2]["previous"] = entry_digest(forged["entries"][1])
    index.write_text(json.dumps(forged))
    assert main(check) == 1
    assert "income/index.json entry 2 is not the one the checkpoint" in capsys.readouterr().err
    # A model's whole index gone, with its bundle: nothing left in the registry shows it.
    index.write_text(json.dumps(original))
    shutil.rmtree(registry / "models" / "other")
    assert check_registry(registry) == []
    assert main(check) == 1
    assert "models/other/index.json is gone" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{", "not readable JSON"),
        ('{"registry_checkpoint": 1, "models": {"m": {"entries": 0, "head": "ab"}}}',
         "not a registry checkpoint"),
        ('[1, 2]', "not a registry checkpoint"),
    ],
)  # fmt: skip
def test_a_bad_checkpoint_is_one_clear_error(
    bundles: dict[str, Path], content: str | None, message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    registry, _ = _tampered(bundles, tmp_path)
    point = tmp_path / "checkpoint.json"
    if content is not None:
        point.write_text(content)
    assert main(["audit", "list", "--registry", str(registry), "--checkpoint", str(point)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"checkpoint {point}: {message}" in line
    missing = tmp_path / "nowhere" / "checkpoint.json"
    assert main(["audit", "checkpoint", "--registry", str(registry), "--out", str(missing)]) == 2
    assert "folder" in capsys.readouterr().err and not missing.parent.exists()


def test_verify_finds_a_changed_or_swapped_bundle_file(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    registry, _ = _tampered(bundles, tmp_path)
    first, second = (
        registry / "bundles" / f"{_sha(bundles[n])}.zip" for n in ("unsigned", "signed")
    )
    saved = first.read_bytes()
    first.chmod(0o644)
    first.write_bytes(second.read_bytes())  # another (intact) bundle under the first one's name
    assert check_registry(registry) == [
        f"bundles/{first.name} holds another bundle than its name says"
    ]
    damaged = bytearray(saved)
    damaged[len(damaged) // 2] ^= 0xFF
    first.write_bytes(bytes(damaged))
    [problem] = check_registry(registry)
    assert problem.startswith(f"bundles/{first.name}: ")
    first.unlink()
    assert check_registry(registry) == [
        f"models/income/index.json entry 1: bundle bundles/{first.name} is missing"
    ]


def _file_in_process(args: tuple[str, str, str]) -> str:
    source, registry, model = args
    return file_bundle(Path(source), Path(registry), model=model)["status"]


def test_concurrent_filings_all_land_in_one_unbroken_chain(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    jobs = [(str(bundles[name]), str(registry), "income") for name in ("unsigned", "signed")] * 3
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        statuses = pool.map(_file_in_process, jobs)
    assert sorted(statuses) == ["already filed"] * 4 + ["filed"] * 2
    assert len(list_registry(registry, "income")) == 2 and check_registry(registry) == []


def test_the_audit_stage_files_its_bundle_and_logs_against_the_last_one(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    cfg = _with(small_config, registry=str(registry), model_name="small-adult",
                previous_bundle="registry:latest")  # fmt: skip
    first = audit(cfg, upstream, tmp_path / "first")
    assert not (first / "bundle" / "changelog.json").exists()  # nothing filed before it
    [entry] = list_registry(registry, "small-adult")
    assert entry["manifest_sha256"] == _sha(first)
    second = audit(cfg, upstream, tmp_path / "second")
    changelog = json.loads((second / "bundle" / "changelog.json").read_text())
    assert changelog["previous"]["manifest_sha256"] == _sha(first)
    rows = list_registry(registry, "small-adult")
    assert [r["manifest_sha256"] for r in rows] == [_sha(first), _sha(second)]
    assert check_registry(registry) == []


def test_the_audit_stage_checks_the_registry_before_writing(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    upstream = {s: stage_artifacts[s] for s in _UPSTREAM}
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b\n")
    with pytest.raises(ArtifactError, match="not an sslops audit registry"):
        audit(_with(small_config, registry=str(folder)), upstream, tmp_path / "out")
    inside = tmp_path / "out" / "registry"
    with pytest.raises(ConfigError, match="lies inside the audit artifact"):
        audit(_with(small_config, registry=str(inside)), upstream, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"set audit\.registry too"):
        _with(small_config, previous_bundle="registry:latest")


def test_on_a_cluster_the_registry_lies_on_the_mounted_workspace_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from sslops.config import load_config
    from sslops.pipeline.ssl_pipeline import compile_pipeline
    from sslops.pipeline.tasks import check_on_volume
    from tests.conftest import ROOT

    volume = ["platform.storage.workspace_pvc=sslops-workspace"]
    path = compile_pipeline(
        tmp_path / "pipeline.yaml", load_config(ROOT / "configs" / "adult.yaml", volume)
    )
    _, platform = yaml.safe_load_all(path.read_text())
    [mount] = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-audit"][
        "pvcMount"
    ]
    assert (mount["constant"], mount["mountPath"]) == ("sslops-workspace", "/workspace")

    def config(*overrides: str) -> Config:
        return load_config(ROOT / "configs" / "adult.yaml", list(overrides))

    off_volume = config(*volume, "audit.registry=/tmp/registry")
    check_on_volume(off_volume)  # not in a pod: any path
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(ConfigError, match=r"not on the workspace volume \(mounted at /workspace"):
        check_on_volume(off_volume)
    with pytest.raises(ConfigError, match=r"set platform\.storage\.workspace_pvc"):
        check_on_volume(config("audit.registry=/workspace/registry"))
    check_on_volume(config(*volume, "audit.registry=/workspace/audit-registry"))
    check_on_volume(config(*volume))


@pytest.fixture(scope="module")
def approver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("approver")
    generate_keypair(root / "approver.pem", root / "approver.pub.pem")
    return root / "approver.pem"


def test_approve_and_reject_are_signed_chained_and_the_latest_is_the_status(
    bundles: dict[str, Path], approver: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    file_bundle(bundles["unsigned"], registry, model="income")
    sha = _sha(bundles["unsigned"])
    assert [r["decision"] for r in list_registry(registry)] == ["pending"]
    decide = ["--registry", str(registry), "--key-file", str(approver)]
    assert main(["audit", "approve", sha[:10], *decide, "--by", "J. Doe, model risk",
                 "--note", "MR-2026-118"]) == 0  # fmt: skip
    assert (
        f"approved: bundle {sha[:12]} (model income) by J. Doe, model risk"
        in capsys.readouterr().out
    )
    [row] = list_registry(registry)
    assert (row["decision"], row["decided_by"]) == ("approved", "J. Doe, model risk")
    assert main(["audit", "reject", sha, *decide, "--by", "K. Roe, compliance"]) == 0
    capsys.readouterr()
    assert list_registry(registry)[0]["decision"] == "rejected"
    assert check_registry(registry) == []
    assert main(["audit", "list", "--registry", str(registry)]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("rejected (K. Roe, compliance)")
    # registry:latest and filing again ignore decisions: one filed entry, three in the index
    index = json.loads((registry / "models" / "income" / "index.json").read_text())
    assert [e["kind"] for e in index["entries"]] == ["filed", "decision", "decision"]
    assert file_bundle(bundles["unsigned"], registry, model="income")["status"] == "already filed"


def test_a_decision_names_one_filed_bundle_and_needs_a_second_key(
    bundles: dict[str, Path], keys: dict[str, Path], approver: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    registry = tmp_path / "registry"
    file_bundle(bundles["signed"], registry, model="income")
    sha = _sha(bundles["signed"])
    issuer = ["--registry", str(registry), "--by", "the issuer", "--key-file", str(keys["private"])]
    for argv, message in (
        (["approve", sha, *issuer], "approval needs a second person's key (four eyes)"),
        (["approve", "0123", *issuer], "expected its manifest sha256 (or its first 8+"),
        (["approve", "0" * 12, *issuer], f"no bundle {'0' * 12} is filed in {registry}"),
        (["approve", sha, "--registry", str(registry), "--by", " ", "--key-file", str(approver)],
         "--by: say who decides"),
    ):  # fmt: skip
        before = (registry / "models" / "income" / "index.json").read_bytes()
        assert main(["audit", *argv]) == 2
        assert message in capsys.readouterr().err
        assert (registry / "models" / "income" / "index.json").read_bytes() == before
    # The issuer may reject its own bundle; another key approves it.
    assert main(["audit", "reject", sha, *issuer]) == 0
    assert main(["audit", "approve", sha[:8], *issuer[:4], "--key-file", str(approver)]) == 0
    [row] = list_registry(registry)
    assert row["decision"] == "approved" and check_registry(registry) == []
    assert row["key_fingerprint"].startswith("SHA256:") and row["signed"]


def test_verify_finds_a_changed_or_forged_decision(
    bundles: dict[str, Path], approver: Path, tmp_path: Path
) -> None:
    from sslops.audit.bundle import load_private_key
    from sslops.audit.registry import decide

    registry = tmp_path / "registry"
    file_bundle(bundles["unsigned"], registry, model="income")
    key = load_private_key(approver, "", True, "--key-file", "")
    decide(registry, _sha(bundles["unsigned"]), "rejected", key, by="K. Roe", note="EO too high")
    index = registry / "models" / "income" / "index.json"
    original = json.loads(index.read_text())
    # "rejected" made "approved" in the entry (the last one: no chain after it to break)
    changed = json.loads(json.dumps(original))
    changed["entries"][-1]["decision"] = "approved"
    index.write_text(json.dumps(changed))
    assert check_registry(registry) == [
        "models/income/index.json entry 2: decision differ from the signed decision"
    ]
    # ... and in its signed record too: the signature no longer verifies
    changed["entries"][-1]["record"]["signed"]["decision"] = "approved"
    index.write_text(json.dumps(changed))
    [problem] = check_registry(registry)
    assert "the signature does not verify with its embedded public key" in problem
    assert list_registry(registry)[0]["decision"] == "approved"  # what list shows, but ...
    from sslops.audit.registry import approval_of

    onnx = list_registry(registry)[0]["onnx_sha256"]
    with pytest.raises(
        ArtifactError, match=r"the approval of bundle \w+ does not verify: .*signature"
    ):
        approval_of(registry, onnx)  # ... predict --registry checks the approval's signature


def test_predict_scores_only_with_an_approved_model(
    stage_artifacts: dict[str, Path], approver: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from sslops.audit.bundle import load_private_key
    from sslops.audit.registry import decide
    from sslops.prepare.dataset import PreparedData

    rows = tmp_path / "rows.csv"
    PreparedData(stage_artifacts["prepare"]).test.frame.iloc[:40].to_csv(rows, index=False)
    registry = tmp_path / "registry"
    model = stage_artifacts["audit"] / "bundle" / "model.onnx"
    out = tmp_path / "p.csv"
    command = ["predict", "--model", str(model), "--data", str(rows), "--out", str(out),
               "--registry", str(registry)]  # fmt: skip
    assert main(command) == 2  # no registry there yet
    entry = file_bundle(stage_artifacts["audit"], registry, model="income")
    assert main(command) == 2
    assert f"is not approved in the audit registry {registry}: bundle " in capsys.readouterr().err
    assert not out.exists()
    key = load_private_key(approver, "", True, "--key-file", "")
    decide(registry, entry["manifest_sha256"], "approved", key, by="J. Doe")
    assert main(command) == 0
    approval = json.loads((tmp_path / "p.meta.json").read_text())["model"]["approval"]
    assert approval["bundle_manifest_sha256"] == entry["manifest_sha256"]
    assert approval["approved_by"] == "J. Doe" and approval["model"] == "income"
    assert not approval["key_trusted"]  # any key: integrity only
    approver_public = approver.with_name("approver.pub.pem")
    trusted = ["--out", str(tmp_path / "t.csv"), "--approver-key", str(approver_public)]
    assert main([*command[:5], *trusted, *command[7:]]) == 0
    assert json.loads((tmp_path / "t.meta.json").read_text())["model"]["approval"]["key_trusted"]
    generate_keypair(tmp_path / "x.pem", tmp_path / "x.pub.pem")
    untrusted = ["--out", str(tmp_path / "u.csv"), "--approver-key", str(tmp_path / "x.pub.pem")]
    capsys.readouterr()
    assert main([*command[:5], *untrusted, *command[7:]]) == 2
    assert "which is not one of the approver keys given" in capsys.readouterr().err
    assert not (tmp_path / "u.csv").exists()
    int8 = ["--model", str(stage_artifacts["audit"] / "bundle" / "model.int8.onnx")]
    assert (
        main([*command[:1], *int8, *command[3:5], "--out", str(tmp_path / "q.csv"), *command[7:]])
        == 0
    )  # fmt: skip  (the bundle's int8 copy is approved with it)
    decide(registry, entry["manifest_sha256"], "rejected", key, by="K. Roe", note="withdrawn")
    out.unlink()
    capsys.readouterr()
    assert main(command) == 2
    assert "is rejected by K. Roe on " in capsys.readouterr().err and not out.exists()
    other = tmp_path / "other.onnx"
    other.write_bytes(model.read_bytes() + b"\0")  # not what was filed
    assert main(["predict", "--model", str(other), *command[3:]]) == 2
    assert "no bundle filed there holds it" in capsys.readouterr().err


def test_a_later_approval_by_an_untrusted_key_does_not_hide_a_trusted_one(
    bundles: dict[str, Path],
    approver: Path,
    keys: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two bundles of one model: approved by a trusted key, then the other by anyone who can
    write the registry. Scoring with --approver-key keeps using the trusted approval."""
    from sslops.artifacts import sha256_file
    from sslops.audit.bundle import load_private_key, load_public_key
    from sslops.audit.registry import approval_of, decide

    registry = tmp_path / "registry"
    first = file_bundle(bundles["unsigned"], registry, model="income")
    second = file_bundle(bundles["signed"], registry, model="income")
    trusted_key = load_private_key(approver, "", True, "--key-file", "")
    other_key = load_private_key(keys["private"].with_name("other.pem"), "", True, "--key-file", "")
    decide(registry, first["manifest_sha256"], "approved", trusted_key, by="J. Doe")
    decide(registry, second["manifest_sha256"], "approved", other_key, by="J. Doe (forged)")
    onnx = sha256_file(bundles["unsigned"] / "bundle" / "model.onnx")
    trusted = [load_public_key(approver.with_name("approver.pub.pem"))]
    found = approval_of(registry, onnx, trusted)
    assert found["bundle_manifest_sha256"] == first["manifest_sha256"]
    assert found["approved_by"] == "J. Doe" and found["key_trusted"]
    assert approval_of(registry, onnx)["bundle_manifest_sha256"] == second["manifest_sha256"]
    with pytest.raises(ArtifactError, match=r"J\. Doe \(forged\) with key .* not one of the"):
        approval_of(registry, onnx, [load_public_key(keys["public"])])  # neither: the latest
    # audit list --approver-key: the name typed in --by is not who decided, the key is
    listing = ["audit", "list", "--registry", str(registry), "--approver-key",
               str(approver.with_name("approver.pub.pem"))]  # fmt: skip
    capsys.readouterr()
    assert main(listing) == 0
    lines = capsys.readouterr().out.splitlines()
    forged = next(line for line in lines if second["manifest_sha256"][:12] in line)
    genuine = next(line for line in lines if first["manifest_sha256"][:12] in line)
    assert "approved (J. Doe (forged); key SHA256:" in forged and "not trusted)" in forged
    assert genuine.endswith("approved (J. Doe)")
    assert main([*listing, "--json"]) == 0
    rows = {r["manifest_sha256"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[first["manifest_sha256"]]["decided_key_trusted"] is True
    assert rows[second["manifest_sha256"]]["decided_key_trusted"] is False


def _forged_record(
    key: Ed25519PrivateKey, fields: dict[str, object], claimed: str
) -> dict[str, object]:
    """A record signed with ``key`` whose key_fingerprint claims the key ``claimed``."""
    import base64

    from sslops.audit.bundle import _raw_public, canonical_json

    public = key.public_key()
    signed = {"algorithm": "Ed25519", **fields, "key_fingerprint": claimed,
              "public_key": base64.b64encode(_raw_public(public)).decode()}  # fmt: skip
    signature = key.sign(canonical_json(signed))
    return {"signed": signed, "signature": base64.b64encode(signature).decode()}


def test_a_decision_that_claims_a_trusted_key_s_fingerprint_is_refused(
    bundles: dict[str, Path], approver: Path, tmp_path: Path
) -> None:
    """Anyone who can write the index signed an approval with a key of their own and wrote
    the trusted approver's fingerprint into it: check_registry found nothing and
    `predict --registry --approver-key` scored with it."""
    from sslops.audit.bundle import fingerprint, load_public_key
    from sslops.audit.registry import approval_of, entry_digest

    registry = tmp_path / "registry"
    entry = file_bundle(bundles["unsigned"], registry, model="income")
    trusted = load_public_key(approver.with_name("approver.pub.pem"))
    index_path = registry / "models" / "income" / "index.json"
    index = json.loads(index_path.read_text())
    fields = {"manifest_sha256": entry["manifest_sha256"], "decision": "approved",
              "by": "J. Doe", "note": "", "decided": "2026-01-01T00:00:00+00:00",
              "model": "income", "previous": entry_digest(index["entries"][-1])}  # fmt: skip
    record = _forged_record(Ed25519PrivateKey.generate(), fields, fingerprint(trusted))
    index["entries"].append({"kind": "decision", **{k: v for k, v in fields.items()
                                                    if k not in ("model", "previous")},
                             "key_fingerprint": fingerprint(trusted), "record": record,
                             "previous": fields["previous"]})  # fmt: skip
    index_path.write_text(json.dumps(index))
    [problem] = check_registry(registry)
    assert "key_fingerprint is not that of the key that signed it" in problem
    with pytest.raises(ArtifactError, match="key_fingerprint is not that of the key"):
        approval_of(registry, entry["onnx_sha256"], [trusted])


def test_the_issuer_cannot_approve_its_own_bundle_by_naming_another_key(
    bundles: dict[str, Path], keys: dict[str, Path], tmp_path: Path
) -> None:
    """Four eyes read the signer from signature.json's key_fingerprint, which the signer
    wrote: a bundle signed with the issuer's key but naming another verified, and its
    issuer could then approve it."""
    from sslops.audit.bundle import canonical_json, load_private_key, load_public_key

    issuer = load_private_key(keys["private"], "", True, "--key-file", "")
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles["signed"] / "bundle", bundle)
    fields = {"signed_file": "manifest.json", "manifest_sha256":
              hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()}  # fmt: skip
    forged = _forged_record(issuer, fields, "SHA256:" + "0" * 64)
    (bundle / "signature.json").write_bytes(canonical_json(forged))
    with pytest.raises(ArtifactError, match="key_fingerprint is not that of the key"):
        file_bundle(bundle, tmp_path / "registry", model="income",
                    public_key=load_public_key(keys["public"]))  # fmt: skip
    assert not (tmp_path / "registry" / "models").exists()


def test_a_signed_decision_holds_only_where_it_was_made(
    bundles: dict[str, Path], approver: Path, tmp_path: Path
) -> None:
    """A decision's signature covers the entry it follows: an old approval appended again
    after a rejection (or copied anywhere else) no longer verifies, in check_registry and in
    predict's approval_of, and a checkpoint taken after the rejection no longer lets it by."""
    from sslops.audit.bundle import load_private_key, load_public_key
    from sslops.audit.registry import (
        approval_of,
        check_checkpoint,
        checkpoint,
        decide,
        entry_digest,
    )

    registry = tmp_path / "registry"
    entry = file_bundle(bundles["unsigned"], registry, model="income")
    key = load_private_key(approver, "", True, "--key-file", "")
    trusted = [load_public_key(approver.with_name("approver.pub.pem"))]
    decide(registry, entry["manifest_sha256"], "approved", key, by="J. Doe")
    decide(registry, entry["manifest_sha256"], "rejected", key, by="J. Doe", note="EO gap")
    point = checkpoint(registry)
    index_path = registry / "models" / "income" / "index.json"
    index = json.loads(index_path.read_text())
    assert index["entries"][1]["record"]["signed"]["previous"] == entry_digest(index["entries"][0])
    replay = json.loads(json.dumps(index["entries"][1]))  # the approval, genuinely signed
    replay["previous"] = entry_digest(index["entries"][-1])
    index["entries"].append(replay)
    index_path.write_text(json.dumps(index))
    assert check_checkpoint(registry, point) == []  # entries added since the checkpoint
    assert check_registry(registry) == [
        "models/income/index.json entry 4: the decision was signed for another place in the "
        "index (the entry before it is not the one it was signed after: replayed, moved, or "
        "an entry before it removed or changed)"
    ]
    with pytest.raises(ArtifactError, match=r"approval of bundle .* signed for another place"):
        approval_of(registry, entry["onnx_sha256"], trusted)
    # The rejection removed from the end (nothing after it carries its digest): only a
    # checkpoint kept elsewhere shows that.
    index["entries"] = [index["entries"][0], index["entries"][1]]
    index_path.write_text(json.dumps(index))
    assert approval_of(registry, entry["onnx_sha256"], trusted)["approved_by"] == "J. Doe"
    assert check_checkpoint(registry, point) != []  # the tail removed: only a checkpoint sees it


def test_decisions_signed_before_their_place_was_covered_still_verify_until_a_newer_one(
    bundles: dict[str, Path], approver: Path, tmp_path: Path
) -> None:
    """An index written by an earlier sslops holds decisions whose records do not name their
    place; they stay valid, but not after a decision that does (an old one replayed)."""
    from sslops.audit.bundle import load_private_key, signature_record
    from sslops.audit.registry import decide, entry_digest

    registry = tmp_path / "registry"
    entry = file_bundle(bundles["unsigned"], registry, model="income")
    key = load_private_key(approver, "", True, "--key-file", "")
    decide(registry, entry["manifest_sha256"], "approved", key, by="J. Doe")
    index_path = registry / "models" / "income" / "index.json"
    index = json.loads(index_path.read_text())
    old = index["entries"][1]  # re-signed as an earlier sslops did: no "previous"
    fields = {k: v for k, v in old["record"]["signed"].items()
              if k in ("manifest_sha256", "decision", "by", "note", "decided", "model")}  # fmt: skip
    old["record"] = signature_record(key, fields)
    index_path.write_text(json.dumps(index))
    assert check_registry(registry) == []
    decide(registry, entry["manifest_sha256"], "rejected", key, by="J. Doe")
    index = json.loads(index_path.read_text())
    replay = json.loads(json.dumps(old))
    replay["previous"] = entry_digest(index["entries"][-1])
    index["entries"].append(replay)
    index_path.write_text(json.dumps(index))
    assert check_registry(registry) == [
        "models/income/index.json entry 4: the decision's signature does not cover its place "
        "in the index, though an earlier decision's does (an old decision replayed?)"
    ]
