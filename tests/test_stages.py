"""Finetune, export and audit on the shared small artifacts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sslops.artifacts import hash_tree, read_meta, sha256_file
from sslops.audit import audit
from sslops.config import Config
from sslops.errors import ArtifactError, ConfigError
from sslops.finetune import finetune, stratified_label_subset
from sslops.models import load_classifier
from sslops.prepare import PreparedData, prepare


def test_label_subset_is_stratified_and_seeded() -> None:
    target = np.array([0] * 900 + [1] * 100)
    subset = stratified_label_subset(target, 0.1, seed=3)
    assert len(subset) == 100 and target[subset].sum() == 10
    assert np.array_equal(subset, stratified_label_subset(target, 0.1, seed=3))
    assert not np.array_equal(subset, stratified_label_subset(target, 0.1, seed=4))


def test_finetune_uses_only_the_label_budget(
    stage_artifacts: dict[str, Path], small_config
) -> None:
    report = json.loads((stage_artifacts["finetune"] / "finetune.json").read_text())
    labeled = np.load(stage_artifacts["finetune"] / "labeled_rows.npy")
    assert report["labels_used"] == len(labeled)
    assert len(labeled) == pytest.approx(
        report["train_rows"] * small_config.finetune.label_fraction, abs=2
    )


def test_mitigated_model_has_a_smaller_parity_gap(stage_artifacts: dict[str, Path]) -> None:
    metrics = json.loads((stage_artifacts["evaluate"] / "metrics.json").read_text())["models"]
    assert metrics["mitigated"]["dp_difference"] < metrics["ssl"]["dp_difference"] - 0.05
    fairness = json.loads((stage_artifacts["finetune"] / "finetune.json").read_text())["fairness"]
    penalties = [c for c in fairness["candidates"] if c["mechanism"] in ("none", "penalty")]
    gaps = [c["demographic_parity_difference"] for c in penalties]
    assert gaps[-1] < gaps[0], "a stronger penalty must shrink the estimated gap"


def test_onnx_matches_torch_at_several_batch_sizes(stage_artifacts: dict[str, Path]) -> None:
    """The ONNX model takes raw columns; torch scores the encoded features of the same rows."""
    from sslops.export import raw_inputs

    data = PreparedData(stage_artifacts["prepare"])
    model, _ = load_classifier(stage_artifacts["finetune"], "mitigated")
    session = ort.InferenceSession(str(stage_artifacts["export"] / "model.onnx"))
    feed = raw_inputs(data.encoding, data.test.frame)
    for batch in (1, 7, 256):
        got = session.run(None, {k: v[:batch] for k, v in feed.items()})[0]
        with torch.no_grad():
            expected = model(torch.from_numpy(data.test.features[:batch])).numpy()
        assert got.shape == (batch,)
        assert np.max(np.abs(got - expected)) <= 1e-4
    report = json.loads((stage_artifacts["export"] / "export.json").read_text())
    assert report["parity"]["labels_identical"] and report["parity"]["rows"] == len(
        data.test.target
    )


def test_onnx_metadata_names_threshold_and_weights(stage_artifacts: dict[str, Path]) -> None:
    proto = onnx.load(str(stage_artifacts["export"] / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["decision_threshold"] == "0.5"
    finetune_meta = read_meta(stage_artifacts["finetune"], "finetune")
    assert props["finetune_weights_sha256"] == finetune_meta["files"]["mitigated.safetensors"]
    assert proto.opset_import[0].version >= 18


def test_audit_manifest_hashes_every_file(stage_artifacts: dict[str, Path]) -> None:
    bundle = stage_artifacts["audit"] / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())["files"]
    on_disk = {
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name not in {"manifest.json", "signature.json"}
    }
    assert set(manifest) == on_disk
    for name, digest in manifest.items():
        assert sha256_file(bundle / name) == digest


def test_audit_lineage_reaches_from_raw_data_to_onnx_bytes(
    stage_artifacts: dict[str, Path], small_data: dict[str, Path]
) -> None:
    lineage = json.loads((stage_artifacts["audit"] / "bundle" / "lineage.json").read_text())
    stages = {s["stage"]: s for s in lineage["stages"]}
    assert stages["prepare"]["sources"]["data.train"] == sha256_file(small_data["train"])
    assert stages["pretrain"]["inputs"]["prepared"] == stages["prepare"]["meta_sha256"]
    assert stages["finetune"]["inputs"]["pretrained"] == stages["pretrain"]["meta_sha256"]
    assert stages["export"]["inputs"]["finetuned"] == stages["finetune"]["meta_sha256"]
    onnx_hash = sha256_file(stage_artifacts["audit"] / "bundle" / "model.onnx")
    assert stages["export"]["files"]["model.onnx"] == onnx_hash


def test_artifacts_of_different_runs_are_refused_before_any_work(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    other = prepare(small_config.model_copy(update={"seed": 1}), tmp_path / "other-prepare")
    with pytest.raises(ArtifactError, match="made from another prepare artifact"):
        finetune(small_config, other, stage_artifacts["pretrain"], tmp_path / "finetune")
    with pytest.raises(ArtifactError, match="made from another prepare artifact"):
        stages = {k: v for k, v in stage_artifacts.items() if k != "audit"}
        audit(small_config, {**stages, "prepare": other}, tmp_path / "audit")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-prepare"]


def test_a_stage_refuses_a_config_of_another_modality_and_an_out_inside_an_input(
    stage_artifacts: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from sslops.cli import main
    from tests.conftest import ROOT

    a = {k: str(v) for k, v in stage_artifacts.items()}
    before = {stage: hash_tree(Path(path)) for stage, path in a.items()}
    mnist = str(ROOT / "configs" / "mnist.yaml")
    commands = {
        "finetune": ["--prepared", a["prepare"], "--pretrained", a["pretrain"]],
        "evaluate": ["--prepared", a["prepare"], "--finetuned", a["finetune"]],
        "export": ["--prepared", a["prepare"], "--finetuned", a["finetune"]],
    }
    for command, inputs in commands.items():  # a tabular chain, an image config
        out = tmp_path / command
        assert main([command, "--config", mnist, *inputs, "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert error == (
            f"error: {a['prepare']} holds tabular data but the config says modality: image; pass "
            "the config the chain was prepared with, or prepare the data with this one first\n"
        )
        assert not out.exists()
    for command, inputs in commands.items():  # --out inside the artifact it reads
        out = Path(inputs[-1]) / "out"
        assert main([command, "--config", mnist, *inputs, "--out", str(out)]) == 2
        assert f"error: {out} is inside {inputs[-1]}, an input of the {command} artifact" in (
            capsys.readouterr().err
        )
    assert {stage: hash_tree(Path(path)) for stage, path in a.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_stage_refuses_data_settings_its_prepare_artifact_was_not_made_with(
    stage_artifacts: dict[str, Path], small_config: Config, tmp_path: Path
) -> None:
    from sslops.evaluate import evaluate
    from sslops.export import export
    from sslops.pretrain import pretrain

    a = stage_artifacts
    data = small_config.data.model_copy(update={"sensitive": ["race"]})  # the chain used sex
    other = small_config.model_copy(update={"data": data})
    for run in (
        lambda: pretrain(other, a["prepare"], tmp_path / "pre"),
        lambda: finetune(other, a["prepare"], a["pretrain"], tmp_path / "ft"),
        lambda: evaluate(other, a["prepare"], a["finetune"], tmp_path / "ev"),
        lambda: export(other, a["prepare"], a["finetune"], tmp_path / "ex"),
    ):
        with pytest.raises(ConfigError) as info:
            run()
        assert str(info.value).startswith(
            f"the config's data.sensitive is ['race'] but {a['prepare']} was prepared with "
            f"{list(small_config.data.sensitive)!r}"
        )
    assert list(tmp_path.iterdir()) == []


def test_model_card_html_is_self_contained(stage_artifacts: dict[str, Path]) -> None:
    bundle = stage_artifacts["audit"] / "bundle"
    html = (bundle / "model_card.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    assert html.count("data:image/png;base64,") == len(list(bundle.rglob("*.png"))) >= 3
    markdown = (bundle / "model_card.md").read_text()
    for needle in ("Test metrics", "DP diff. (sex)", "EO diff. (sex)", "Lineage", "mitigated"):
        assert needle in markdown
    assert len(html.encode()) < 1_000_000


def test_full_labels_leave_no_unlabeled_rows_and_still_mitigate() -> None:
    """label_fraction=1.0: the demographic-parity penalty runs on labeled rows alone."""
    from sslops.finetune.estimators import FairnessPenalizedLogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    groups = np.where(rng.random(400) < 0.5, "a", "b")
    x[:, 0] += groups == "a"
    y = (x[:, 0] + rng.normal(0, 0.5, 400) > 0.5).astype(int)
    plain = FairnessPenalizedLogisticRegression(penalty=0.0).fit(x, y, sensitive_features=groups)
    fair = FairnessPenalizedLogisticRegression(penalty=100.0).fit(
        x, y, sensitive_features=groups, X_unlabeled=x[:0], sensitive_features_unlabeled=groups[:0]
    )

    def gap(model: FairnessPenalizedLogisticRegression) -> float:
        p = model.predict(x)
        return abs(p[groups == "a"].mean() - p[groups == "b"].mean())

    assert gap(fair) < gap(plain) / 2


def test_threshold_optimizer_unfittable_groups() -> None:
    from sslops.finetune.estimators import GroupThresholdPostprocessor

    y = np.array([1, 0, 1, 0, 0, 0])
    groups = np.array([["a", "x"], ["a", "x"], ["b", "x"], ["b", "x"], ["c", "x"], ["c", "y"]])
    assert GroupThresholdPostprocessor.unfittable_groups(y, groups[:, 0]) == ["c"]
    assert GroupThresholdPostprocessor.unfittable_groups(y, groups) == ["c|x", "c|y"]


def test_small_groups_skip_threshold_optimizer_not_the_stage(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """Fairness on `race` with few labels: a group with one class among the labeled rows
    leaves ThresholdOptimizer unfitted (said in finetune.json); everything else runs."""
    from sslops.finetune import finetune
    from sslops.finetune.estimators import GroupThresholdPostprocessor

    cfg = small_config.model_copy(deep=True)
    cfg.finetune.label_fraction = 0.02
    cfg.finetune.fairness.sensitive = ["race"]
    out = finetune(cfg, stage_artifacts["prepare"], stage_artifacts["pretrain"], tmp_path / "ft")
    report = json.loads((out / "finetune.json").read_text())["fairness"]
    train = PreparedData(stage_artifacts["prepare"]).train
    labeled = np.load(out / "labeled_rows.npy")
    single = GroupThresholdPostprocessor.unfittable_groups(
        train.target[labeled], train.groups("race").to_numpy()[labeled]
    )
    assert single, "this sample was chosen to have a one-class group among its labels"
    assert report["postprocessing_skipped"].startswith("ThresholdOptimizer not fitted")
    assert all(repr(g) in report["postprocessing_skipped"] for g in single)
    assert not (out / "postprocessing.json").exists()
    assert "ssl+threshold_optimizer" not in {c["name"] for c in report["candidates"]}
    assert report["selected"] in {c["name"] for c in report["candidates"]}


def test_policy_on_upper_confidence_bounds(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """finetune.fairness.gap_confidence: every candidate reports its bound beside its gap, and
    the deployed model is the most accurate whose bound (not its gap) is within max_gap."""
    from sslops.finetune import finetune

    cfg = small_config.model_copy(deep=True)
    cfg.finetune.fairness.gap_confidence = 0.9
    cfg.finetune.fairness.max_gap = 0.1
    out = finetune(cfg, stage_artifacts["prepare"], stage_artifacts["pretrain"], tmp_path / "ft")
    report = json.loads((out / "finetune.json").read_text())["fairness"]
    rows = report["candidates"]
    dp = "demographic_parity"
    assert all(r[f"{dp}_upper_bound"] > r[f"{dp}_difference"] for r in rows)
    within = [r for r in rows if r["deployable"] and r[f"{dp}_upper_bound"] <= 0.1]
    assert within, "this sample has candidates whose 90% bound is within 0.1"
    best = max(within, key=lambda r: r["validation_accuracy"])
    assert report["selected"] == best["name"] and report["policy_met_on_validation"]
    assert "90% upper confidence bound" in report["selection_rule"]
    tighter = [r for r in rows if r["deployable"] and r[f"{dp}_difference"] <= 0.1]
    assert len(tighter) > len(within), "the bound must rule out some measured-gap qualifiers"


def test_threshold_optimizer_is_fitted_on_out_of_fold_scores(
    stage_artifacts: dict[str, Path],
) -> None:
    """ThresholdOptimizer fitted on the scores of the rows ssl was fitted on equalizes rates
    there and not on new rows (DP 0.000 in-sample, 0.03 on validation): out of fold now."""
    post = json.loads((stage_artifacts["finetune"] / "postprocessing.json").read_text())
    assert post["fitted_on"] == "out-of-fold scores of the labeled rows"
    assert post["flag"].startswith("needs the sensitive attribute at prediction time")
    # group thresholds are not a ranking: the base score's ROC AUC is not shown as theirs
    metrics = json.loads((stage_artifacts["evaluate"] / "metrics.json").read_text())
    row = metrics["models"]["ssl+threshold_optimizer"]
    assert row["roc_auc"] is None and row["rows_in_groups_without_threshold"] == 0
    # its rates have intervals like every other row's (of its own decisions), its ROC AUC none
    low, high = row["intervals"]["accuracy"]
    assert 0 < low < high < 1
    assert "roc_auc" not in row["intervals"] and "sex" in row["gap_intervals"]
    assert all("roc_auc" not in b for b in row["group_intervals"]["sex"].values())
    assert "randomized decision kept as drawn" in row["intervals_note"]
    assert (
        "| ssl+threshold_optimizer (needs sensitive attribute at prediction) | "
        in (stage_artifacts["evaluate"] / "metrics.md").read_text()
    )


def test_metrics_md_shows_the_deployed_models_groups_with_intervals(
    stage_artifacts: dict[str, Path], small_config: Config
) -> None:
    """The report KFP shows (metrics.md) has the per-group tables with their intervals; a
    crossing's name stays one cell."""
    from sslops.evaluate.report import group_markdown

    text = (stage_artifacts["evaluate"] / "metrics.md").read_text()
    deployed = small_config.export.model
    model = json.loads((stage_artifacts["evaluate"] / "metrics.json").read_text())["models"][
        deployed
    ]
    assert (
        f"Per-group metrics of '{deployed}' by sex (95% bootstrap intervals in brackets):" in text
    )
    row = model["by_group"]["sex"]["Female"]
    low, high = model["group_intervals"]["sex"]["Female"]["tpr"]
    assert (
        f"| Female | {int(row['count'])} | " in text
        and f"{row['tpr']:.4f} [{low:.3f}, {high:.3f}]" in text
    )
    assert "| Female \\| White |" in text  # the crossing "sex x race"
    from sslops.prepare.dataset import PreparedData

    positives = PreparedData(stage_artifacts["prepare"]).test.target.mean()
    metrics = json.loads((stage_artifacts["evaluate"] / "metrics.json").read_text())
    assert metrics["majority_class_accuracy"] == pytest.approx(max(positives, 1 - positives))
    assert (
        f"Always predicting the majority class: accuracy {metrics['majority_class_accuracy']:.4f}."
        in text
    )
    finetune = json.loads((stage_artifacts["finetune"] / "finetune.json").read_text())
    assert finetune["validation_rows"] > 0
    hidden = group_markdown("m", {"by_group": {"race": {"Z": {"count": 3.0, "accuracy": 1.0}}}}, 10)
    assert "| Z | 3 | not shown (< 10 rows) |" in hidden
