"""`sslops shadow` on the days a monitoring engineer sees: ids reused across days, a Parquet
day among CSV days, a dozen-row day, a new category value, labels that arrive late, a
month of batches; and its drift statistics recomputed with numpy/scipy."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from sslops.cli import main
from sslops.config import KpiConfig, load_config
from sslops.data.canonicalize import canonicalize
from sslops.shadow import shadow
from sslops.shadow.incumbent import logistic_regression_onnx
from sslops.shadow.kpi import decision_costs
from tests.conftest import ADULT, ROOT, fresh_interpreter_loads

COLUMNS = ["age", "hours-per-week", "education", "sex", "workclass", "marital-status"]


def _adult(split: str) -> pd.DataFrame:
    with gzip.open(ADULT / f"{split}.csv.gz", "rt", encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("shadow-review")
    train, _ = canonicalize(_adult("train").sample(800, random_state=0), ["?", ""])
    y = (train["income"] == ">50K").to_numpy().astype(int)
    candidate = logistic_regression_onnx(train, y, COLUMNS, root / "candidate.onnx")
    incumbent = logistic_regression_onnx(train, y, COLUMNS[:4], root / "incumbent.onnx")
    test = _adult("test").sample(2400, random_state=1).reset_index(drop=True)
    test.insert(0, "id", [f"r{i:05d}" for i in range(len(test))])
    config = root / "shadow.yaml"
    raw = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text())
    raw["shadow"] = {"id_column": "id"}
    raw["kpi"] = {"bootstrap": 50}
    config.write_text(yaml.safe_dump(raw))
    return {"root": root, "candidate": candidate, "incumbent": incumbent, "test": test,
            "config": config, "cfg": load_config(config)}  # fmt: skip


def _days(folder: Path, parts: list[pd.DataFrame]) -> Path:
    folder.mkdir()
    for i, part in enumerate(parts):
        part.to_csv(folder / f"day{i:02d}.csv", index=False)
    return folder


def _report(path: Path) -> dict[str, Any]:
    return json.loads((path / "shadow.json").read_text())


def _cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_prediction_log_with_ids_reused_across_days_is_refused(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """day01 reused day00's ids (a replayed extract): the log is looked up by row id, so
    day01 was silently given day00's incumbent scores and decisions."""
    test = setup["test"]
    day0, day1 = test.iloc[:300], test.iloc[300:600].copy()
    day1["id"] = day0["id"].to_numpy()
    data = _days(tmp_path / "batches", [day0, day1])
    log = tmp_path / "predictions.csv"
    pd.DataFrame({"row_id": day0["id"], "score": 0.3}).to_csv(log, index=False)
    out = tmp_path / "report"
    args = ["shadow", "--candidate", str(setup["candidate"]), "--incumbent", str(log),
            "--data", str(data), "--out", str(out), "--config", str(setup["config"])]  # fmt: skip
    err = _cli_error(args, capsys)
    assert f"--data {data / 'day01.csv'}: row id 'r00000' (column 'id') is also in" in err
    assert f"{data / 'day00.csv'} (300 id(s) shared)" in err
    assert not out.exists()
    # The same id twice within one day is refused too.
    day0 = test.iloc[:300].copy()
    day0.loc[5, "id"] = day0.loc[4, "id"]
    single = tmp_path / "one.csv"
    day0.to_csv(single, index=False)
    args[args.index("--data") + 1] = str(single)
    err = _cli_error(args, capsys)
    assert "row id 'r00004' (column 'id') appears more than once" in err
    assert not out.exists()
    # An ONNX incumbent scores every row itself: reused ids are no problem there.
    report = _report(shadow(setup["candidate"], setup["incumbent"], data, out, setup["cfg"]))
    assert report["rows"] == 600


def test_a_parquet_day_in_a_csv_folder_is_named_not_dropped_silently(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """data.format csv reads a folder's CSVs; a Parquet day there was left out and the report
    only said "Batches: 2" of a folder of three days."""
    test = setup["test"]
    data = _days(tmp_path / "batches", [test.iloc[:300], test.iloc[300:600]])
    test.iloc[600:900].to_parquet(data / "day02.parquet", index=False)
    out = shadow(setup["candidate"], setup["incumbent"], data, tmp_path / "report", setup["cfg"])
    report = _report(out)
    assert len(report["batches"]) == 2
    assert report["files_not_read"] == {"data_format": "csv", "files": ["day02.parquet"]}
    assert (
        "Not read (data.format: csv reads only its own files in a folder): day02.parquet."
        in (out / "shadow.md").read_text()
    )


def test_a_dozen_row_day_is_too_small_for_psi_and_its_agreement_has_an_interval(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """A 12-row day had PSI 1-3 on every feature (the largest in the table and the darkest
    cells of the heatmap, whose colour scale it set) and agreement 0.75 with no interval."""
    test = setup["test"]
    parts = [test.iloc[:600], test.iloc[600:1200], test.iloc[1200:1212]]
    data = _days(tmp_path / "batches", parts)
    out = shadow(setup["candidate"], setup["incumbent"], data, tmp_path / "report", setup["cfg"])
    report = _report(out)
    drift = report["drift"]["batches"]
    assert drift["day01"]["psi_meaningful"] and not drift["day02"]["psi_meaningful"]
    assert drift["day02"]["rows"] == 12 and not drift["day02"]["drifted"]
    # psi_noise = (k - 1)(1/n + 1/m), k the categories either sample has.
    ref, cur = parts[0]["education"], parts[2]["education"]
    k = len(set(ref) | set(cur))
    education = drift["day02"]["features"]["education"]
    assert education["psi_noise"] == pytest.approx((k - 1) * (1 / 600 + 1 / 12))
    assert drift["day02"]["psi_noise"] >= education["psi_noise"] > 0.2
    markdown = (out / "shadow.md").read_text()
    assert "Too few rows for PSI" in markdown and "day02 (12 rows, noise up to" in markdown
    # Agreement intervals: Wilson, as scipy computes it.
    for name, part in (("day01", 600), ("day02", 12)):
        entry = report["agreement"]["by_batch"][name]
        hits = round(entry["agreement"] * part)
        ci = stats.binomtest(hits, part).proportion_ci(method="wilson")
        assert entry["agreement_interval_95"] == pytest.approx([ci.low, ci.high], abs=1e-9)
    assert (
        report["agreement"]["by_batch"]["day02"]["agreement_interval_95"][1]
        - report["agreement"]["by_batch"]["day02"]["agreement_interval_95"][0]
        > 0.3
    )


def test_psi_noise_matches_the_psi_of_days_without_drift(setup: dict[str, Any]) -> None:
    """The noise level is calibrated: on same-population days, the mean PSI of a feature is
    close to its psi_noise (the approximation PSI * nm/(n+m) ~ chi-square(k - 1))."""
    from sslops.shadow.drift import column_drift

    test = setup["test"]
    frame, _ = canonicalize(test, ["?", ""])
    ratios = []
    for feature in ("age", "education", "occupation", "hours-per-week"):
        results = [column_drift(frame[feature].iloc[:1200], frame[feature].iloc[s : s + 200], 10)
                   for s in range(1200, 2400, 200)]  # fmt: skip
        ratios.append(
            np.mean([r["psi"] for r in results]) / np.mean([r["psi_noise"] for r in results])
        )
    assert 0.5 < float(np.mean(ratios)) < 2.0, ratios


def test_drift_statistics_match_an_independent_computation(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """PSI (quantile bins of the reference, right-closed, a missing bin, shares floored at
    1e-4), KS and chi-square of one numeric and one categorical feature, from numpy/scipy."""
    test = setup["test"]
    day0, day1 = test.iloc[:800], test.iloc[800:1600].copy()
    day1["age"] = (day1["age"].astype(int) + 7).astype(str)
    day1.loc[day1.index[:40], "workclass"] = "Gig-economy"  # a level the reference lacks
    data = _days(tmp_path / "batches", [day0, day1])
    report = _report(shadow(setup["candidate"], setup["incumbent"], data, tmp_path / "r"))
    got = report["drift"]["batches"]["day01"]["features"]

    def psi(e: np.ndarray, a: np.ndarray) -> float:
        pe, pa = np.maximum(e / e.sum(), 1e-4), np.maximum(a / a.sum(), 1e-4)
        return float(np.sum((pa - pe) * np.log(pa / pe)))

    ref, cur = day0["age"].astype(float).to_numpy(), day1["age"].astype(float).to_numpy()
    edges = np.unique(np.quantile(ref, np.arange(1, 10) / 10))
    e = np.append(np.bincount(np.digitize(ref, edges, right=True), minlength=len(edges) + 1), 0)
    a = np.append(np.bincount(np.digitize(cur, edges, right=True), minlength=len(edges) + 1), 0)
    assert got["age"]["psi"] == pytest.approx(psi(e, a), rel=1e-9)
    assert got["age"]["p_value"] == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=1e-6)
    table = pd.crosstab(
        np.r_[np.zeros(len(day0)), np.ones(len(day1))],
        np.r_[
            day0["workclass"].replace("?", "<missing>"), day1["workclass"].replace("?", "<missing>")
        ],
    ).to_numpy()
    assert got["workclass"]["psi"] == pytest.approx(psi(table[0], table[1]), rel=1e-9)
    chi = stats.chi2_contingency(table).pvalue
    assert got["workclass"]["p_value"] == pytest.approx(chi, rel=1e-6)


def test_new_category_values_and_late_labels_are_reported_per_day(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """A day with a workclass no model saw (both scored it as their 'other' level) was only
    visible as workclass drift; a day whose labels had only partly arrived showed an
    accuracy without saying it was on a third of its rows."""
    test = setup["test"]
    day0, day1 = test.iloc[:300], test.iloc[300:600].copy()
    day1.loc[day1.index[:30], "workclass"] = "Gig-economy"
    day1.loc[day1.index[100:], "income"] = ""  # labels of 100 rows arrived
    data = _days(tmp_path / "batches", [day0, day1])
    out = shadow(setup["candidate"], setup["incumbent"], data, tmp_path / "report", setup["cfg"])
    entry = _report(out)["agreement"]["by_batch"]["day01"]
    assert entry["unseen_levels"]["candidate"]["workclass"] == 30
    assert "unseen_levels" not in _report(out)["agreement"]["by_batch"]["day00"]
    assert entry["labelled_rows"] == 100
    rows = pd.read_csv(out / "scores.csv")
    known = rows[(rows["batch"] == "day01") & rows["label"].notna()]
    assert entry["candidate_accuracy"] == pytest.approx(
        (known["candidate_decision"] == known["label"]).mean()
    )
    markdown = (out / "shadow.md").read_text()
    assert "day01 candidate workclass 30" in markdown
    assert "| day01 | 300 |" in markdown and "| 100 |" in markdown


def test_decision_cost_intervals_keep_memory_flat() -> None:
    """Every bootstrap draw was held at once: resamples x rows x 8 bytes (3.8 GB for 30 days
    of 16,000 rows, the report's peak). Same draws, same numbers, one at a time."""
    rng = np.random.default_rng(3)
    n = 200_000
    y, cand, inc = (rng.integers(0, 2, n) for _ in range(3))
    kpi = KpiConfig(costs={"false_positive": 10, "false_negative": 25}, bootstrap=200)
    tracemalloc.start()
    try:
        result = decision_costs(y, cand, inc, kpi, seed=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak  # was 200 x 200,000 x 8 bytes = 320 MB
    # The intervals are those of the same paired draws, taken from the same generator.
    small = decision_costs(y[:500], cand[:500], inc[:500], kpi, seed=5)
    draws = np.random.default_rng(5)
    c = np.where((cand[:500] == 1) & (y[:500] == 0), 10.0, 0.0)
    c += np.where((cand[:500] == 0) & (y[:500] == 1), 25.0, 0.0)
    means = [1000 * c[draws.integers(0, 500, 500)].mean() for _ in range(200)]
    assert small["candidate"]["interval_95"] == pytest.approx(
        [np.percentile(means, 2.5), np.percentile(means, 97.5)]
    )
    assert result["difference"]["interval_95"][0] <= result["difference"]["per_1000"]


def test_the_report_opens_with_what_the_cost_interval_says(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """The cost difference, its interval and whether it excludes 0 were at the bottom of the
    report, after the fairness tables; nothing said what they meant for the decision."""
    test = setup["test"]
    data = _days(tmp_path / "batches", [test.iloc[:1200], test.iloc[1200:2400]])
    out = shadow(setup["candidate"], setup["incumbent"], data, tmp_path / "report", setup["cfg"])
    report = _report(out)
    low, high = report["kpi"]["decision_costs"]["difference"]["interval_95"]
    expected = (
        "candidate_costlier" if low > 0 else "candidate_cheaper" if high < 0
        else "no_difference_shown"
    )  # fmt: skip
    assert report["kpi"]["cost_verdict"] == expected
    markdown = (out / "shadow.md").read_text()
    summary = markdown[markdown.index("## Summary") : markdown.index("## Agreement")]
    assert "Cost, candidate - incumbent:" in summary and f"{low:+,.1f} to {high:+,.1f}" in summary
    assert "No input drift flagged." in summary
    # The candidate against itself: no difference, and the report says the interval holds 0.
    same = shadow(setup["candidate"], setup["candidate"], data, tmp_path / "same", setup["cfg"])
    assert _report(same)["kpi"]["cost_verdict"] == "no_difference_shown"
    assert "no cost difference shown" in (same / "shadow.md").read_text()
    # Without labels: said, not a verdict.
    unlabelled = tmp_path / "unlabelled.csv"
    test.iloc[:300].drop(columns="income").to_csv(unlabelled, index=False)
    bare = shadow(
        setup["candidate"], setup["incumbent"], unlabelled, tmp_path / "bare", setup["cfg"]
    )
    assert _report(bare)["kpi"]["cost_verdict"] is None
    assert (
        "No labelled rows: cost and quality cannot be compared" in (bare / "shadow.md").read_text()
    )


def test_quality_deltas_get_paired_intervals_on_the_resamples_of_the_cost_interval(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """Only the cost difference had an interval; the accuracy and ROC AUC deltas the
    summary names had none. With a cost of 1 per wrong decision and 0 per right one, the
    cost difference per 1,000 is -1,000 x the accuracy delta on every resample: the two
    intervals must mirror each other exactly when the deltas are paired and drawn on the
    same rows as the costs."""
    raw = yaml.safe_load(setup["config"].read_text())
    raw["kpi"] = {"bootstrap": 80, "costs": {"false_positive": 1.0, "false_negative": 1.0}}
    config = tmp_path / "unit-costs.yaml"
    config.write_text(yaml.safe_dump(raw))
    data = _days(tmp_path / "batches", [setup["test"].iloc[:900], setup["test"].iloc[900:1500]])
    out = shadow(setup["candidate"], setup["incumbent"], data, tmp_path / "report",
                 load_config(config))  # fmt: skip
    report = _report(out)
    overall = report["metrics"]["overall"]
    low, high = overall["accuracy"]["delta_interval_95"]
    cost_low, cost_high = report["kpi"]["decision_costs"]["difference"]["interval_95"]
    assert [cost_low, cost_high] == pytest.approx([-1000 * high, -1000 * low], abs=1e-9)
    assert low < high
    for key, entry in overall.items():
        interval = entry["delta_interval_95"]
        assert len(interval) == 2 and interval[0] <= interval[1], key
    auc = overall["roc_auc"]
    assert auc["delta_interval_95"][0] <= auc["delta"] <= auc["delta_interval_95"][1]
    markdown = (out / "shadow.md").read_text()
    summary = markdown[markdown.index("## Summary") : markdown.index("## Agreement")]
    assert f"Accuracy {overall['accuracy']['delta']:+.4f} [{low:+.4f}, {high:+.4f}]" in summary
    assert "no intervals" not in summary
    assert "delta [paired 95% interval]" in markdown


def test_the_shadow_stage_starts_without_importing_torch() -> None:
    """A shadow test scores ONNX models; importing it pulled in torch and torchvision through
    sslops.evaluate's package import and the label-efficiency constants (19 s of a
    480,000-row run on the shared machine, before a row was read)."""
    code = "from sslops.cli import main\nimport sslops.shadow.stage"
    assert fresh_interpreter_loads(code, {"torch", "torchvision"}) == ("", [])


def test_a_category_value_few_rows_hold_is_not_quoted_in_drift_or_the_profile() -> None:
    """A value one patient holds (a name typed into a category column) is the largest share
    change of a small day, or what tells disagreeing rows apart: shadow.json names the rule,
    not the value (found by the privacy review); values enough rows hold are still named."""
    from sslops.shadow.drift import MIN_NAMED_ROWS, categorical_drift
    from sslops.shadow.stage import _profile

    reference = pd.Series(["A"] * 60 + ["B"] * 40)
    rare = categorical_drift(reference, pd.Series(["Jane Doe"] * (MIN_NAMED_ROWS - 1)))
    assert rare["largest_share_change"]["level"] == "(a value in fewer than 5 rows)"
    assert rare["largest_share_change"]["change"] == pytest.approx(1.0)
    common = categorical_drift(reference, pd.Series(["Jane Doe"] * MIN_NAMED_ROWS))
    assert common["largest_share_change"]["level"] == "Jane Doe"

    n = 40
    frame = pd.DataFrame({"name": ["Jane Doe"] * 2 + ["A"] * (n - 2),
                          "ward": ["W1"] * 10 + ["W2"] * (n - 10)})  # fmt: skip
    disagree = np.zeros(n, dtype=int)
    disagree[:10] = 1  # the disagreeing rows: both of Jane's, the rest of ward W1
    rows = pd.DataFrame({"candidate_decision": disagree, "incumbent_decision": 0})
    profile = {p["feature"]: p for p in _profile(rows, frame, ["name", "ward"])}
    assert profile["name"]["level"] == "(a value in fewer than 5 rows)"
    assert profile["ward"]["level"] == "W1"  # held by 10 rows: named
    assert "Jane Doe" not in json.dumps(profile)
