"""`sslops shadow`: read-only scoring, agreement, drift flags, KPIs, bad inputs, the KFP
shadow pipeline (compiled YAML) and its recurring run against a stand-in KFP API."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import yaml

from sslops.cli import main
from sslops.config import KpiConfig, load_config
from sslops.data.canonicalize import canonicalize
from sslops.data.encoding import TabularEncoding
from sslops.errors import ConfigError
from sslops.export.graph import raw_inputs
from sslops.k8s.schedule import schedule_shadow
from sslops.shadow import shadow
from sslops.shadow.drift import numeric_drift, psi_from_counts
from sslops.shadow.incumbent import logistic_regression_onnx
from sslops.shadow.kpi import decision_costs, labels_saved, labels_to_reach
from sslops.shadow.scoring import OnnxClassifier, read_batch
from tests.conftest import ADULT, ROOT
from tests.test_k8s_submit import FakeKfp, _uploaded_spec

COLUMNS = ["age", "hours-per-week", "education", "sex", "workclass", "marital-status"]
CONFIG = ROOT / "configs" / "adult.yaml"


def _adult(split: str, rows: int, seed: int) -> pd.DataFrame:
    with gzip.open(ADULT / f"{split}.csv.gz", "rt", encoding="utf-8") as fh:
        frame = pd.read_csv(fh, dtype=str, keep_default_na=False)
    return frame.sample(n=rows, random_state=seed).reset_index(drop=True)


def _drifted(part: pd.DataFrame) -> pd.DataFrame:
    """An older population and a different employer mix."""
    part = part.copy()
    part["age"] = (part["age"].astype(int) + 15).astype(str)
    part.loc[part.index[: len(part) // 2], "workclass"] = "Self-emp-inc"
    return part


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("shadow")
    train, _ = canonicalize(_adult("train", 800, 0), ["?", ""])
    y = (train["income"] == ">50K").to_numpy().astype(int)
    candidate = logistic_regression_onnx(train, y, COLUMNS, root / "candidate.onnx")
    incumbent = logistic_regression_onnx(
        train, y, COLUMNS[:4], root / "incumbent.onnx", regularization=0.003
    )
    test = _adult("test", 1200, 1)
    clean, drift = root / "clean", root / "drift"
    clean.mkdir()
    drift.mkdir()
    for i in range(4):
        part = test.iloc[i * 300 : (i + 1) * 300]
        part.to_csv(clean / f"day{i:02d}.csv", index=False)
        (_drifted(part) if i == 2 else part).to_csv(drift / f"day{i:02d}.csv", index=False)
    config = root / "shadow.yaml"
    raw = yaml.safe_load(CONFIG.read_text())
    raw["kpi"] = {"currency": "USD", "cost_per_label": 2.5, "bootstrap": 200,
                  "costs": {"false_positive": 5.0, "false_negative": 20.0}}  # fmt: skip
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(config)
    report_dir = shadow(candidate, incumbent, drift, root / "report", cfg)
    return {
        "root": root, "train": train, "cfg": cfg, "config": config, "candidate": candidate,
        "incumbent": incumbent, "clean": clean, "drift": drift, "report": report_dir,
    }  # fmt: skip


def _report(path: Path) -> dict[str, Any]:
    return json.loads((path / "shadow.json").read_text())


def test_injected_drift_is_flagged_and_only_there(setup: dict[str, Any]) -> None:
    drift = _report(setup["report"])["drift"]
    assert drift["reference"] == "first batch (day00)"
    assert drift["drifted_batches"] == ["day02"]
    assert set(drift["batches"]["day02"]["drifted_features"]) == {"age", "workclass"}
    assert drift["batches"]["day02"]["features"]["age"]["test"] == "ks"
    assert drift["batches"]["day02"]["features"]["workclass"]["test"] == "chi-square"
    for batch in ("day01", "day03"):
        assert not drift["batches"][batch]["drifted"]


def test_no_drift_flags_nothing_even_against_an_external_reference(
    setup: dict[str, Any],
) -> None:
    reference = setup["root"] / "reference.csv"
    _adult("test", 600, 7).to_csv(reference, index=False)
    out = shadow(
        setup["candidate"], setup["incumbent"], setup["clean"], setup["root"] / "clean-report",
        setup["cfg"], reference=reference,
    )  # fmt: skip
    drift = _report(out)["drift"]
    assert drift["reference"] == str(reference)
    assert list(drift["batches"]) == ["day00", "day01", "day02", "day03"]  # all vs the reference
    assert drift["drifted_batches"] == []


def test_scores_agreement_metrics_and_costs_match_hand_computation(
    setup: dict[str, Any],
) -> None:
    report = _report(setup["report"])
    rows = pd.read_csv(setup["report"] / "scores.csv")
    # Candidate scores equal an independent onnxruntime run on a hand-made feed ("?" = missing).
    batch = pd.read_csv(setup["drift"] / "day02.csv", dtype=str, keep_default_na=False)
    session = ort.InferenceSession(str(setup["candidate"]), providers=["CPUExecutionProvider"])
    feed = {c: batch[c].astype(np.float32).to_numpy() for c in ("age", "hours-per-week")}
    feed |= {c: batch[c].replace("?", "").to_numpy(dtype=object) for c in COLUMNS[2:]}
    expected = session.run(None, feed)[0]
    got = rows.loc[rows["batch"] == "day02", "candidate_score"].to_numpy()
    assert np.max(np.abs(got - expected)) < 1e-6
    # Agreement, accuracy, metric deltas.
    same = rows["candidate_decision"] == rows["incumbent_decision"]
    assert report["agreement"]["overall"] == pytest.approx(same.mean())
    for name, b in report["agreement"]["by_batch"].items():
        here = rows["batch"] == name
        assert b["agreement"] == pytest.approx(same[here].mean())
        assert b["candidate_accuracy"] == pytest.approx(
            (rows.loc[here, "candidate_decision"] == rows.loc[here, "label"]).mean()
        )
    y = rows["label"].to_numpy().astype(int)
    overall = report["metrics"]["overall"]
    accuracy = {m: float((rows[f"{m}_decision"] == y).mean()) for m in ("candidate", "incumbent")}
    assert overall["accuracy"]["delta"] == pytest.approx(
        accuracy["candidate"] - accuracy["incumbent"]
    )
    female = (batch_all := pd.concat(
        pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(setup["drift"].iterdir())
    ))["sex"].to_numpy() == "Female"  # fmt: skip
    assert len(batch_all) == len(rows)
    rates = {g: rows["candidate_decision"][mask].mean() for g, mask in
             (("Female", female), ("Male", ~female))}  # fmt: skip
    sex = report["metrics"]["fairness"]["sex"]
    assert sex["by_group"]["Female"]["selection_rate"]["candidate"] == pytest.approx(
        rates["Female"]
    )
    assert sex["gaps"]["dp_difference"]["candidate"] == pytest.approx(
        abs(rates["Male"] - rates["Female"])
    )
    # Cost per 1,000 decisions: FP 5, FN 20 (the test config).
    for model in ("candidate", "incumbent"):
        d = rows[f"{model}_decision"].to_numpy()
        hand = 1000 * (5 * np.sum((d == 1) & (y == 0)) + 20 * np.sum((d == 0) & (y == 1))) / len(y)
        cost = report["kpi"]["decision_costs"][model]
        assert cost["per_1000"] == pytest.approx(hand)
        assert cost["interval_95"][0] <= hand <= cost["interval_95"][1]
    assert report["kpi"]["decision_costs"]["currency"] == "USD"
    assert report["read_only"] is True


def test_report_is_self_contained_and_says_it_is_read_only(setup: dict[str, Any]) -> None:
    html = (setup["report"] / "shadow.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # agreement, PSI heatmap, scores
    assert "http://" not in html and "https://" not in html
    assert "no decision was changed" in html
    markdown = (setup["report"] / "shadow.md").read_text()
    assert "Flagged batches: day02." in markdown
    assert json.loads((setup["report"] / "meta.json").read_text())["stage"] == "shadow"


def test_feed_matches_the_export_helper(setup: dict[str, Any]) -> None:
    """The shadow feed is what sslops.export.graph.raw_inputs gives for the same encoding."""
    model = OnnxClassifier(setup["candidate"], 0.5, "--candidate")
    batch = read_batch(setup["drift"] / "day01.csv", ["?", ""], None, "--data")
    encoding = TabularEncoding.fit(setup["train"], COLUMNS, 64)
    ours, theirs = model.feed(batch), raw_inputs(encoding, batch.frame)
    assert set(ours) == set(theirs)
    for name, values in theirs.items():
        assert ours[name].dtype == values.dtype and np.array_equal(ours[name], values), name


def test_prediction_log_incumbent_gives_the_same_report(setup: dict[str, Any]) -> None:
    rows = pd.read_csv(setup["report"] / "scores.csv")
    log = setup["root"] / "predictions.csv"
    rows[["row_id", "incumbent_score"]].rename(columns={"incumbent_score": "score"}).to_csv(
        log, index=False
    )
    out = shadow(
        setup["candidate"], log, setup["drift"], setup["root"] / "log-report", setup["cfg"]
    )
    report, before = _report(out), _report(setup["report"])
    assert report["incumbent"]["kind"] == "predictions"
    assert report["agreement"] == before["agreement"]
    assert report["drift"]["drifted_batches"] == ["day02"]


def test_a_spreadsheet_batch_skips_empty_rows_and_keeps_row_numbers(setup: dict[str, Any]) -> None:
    """Excel's CSV: a byte-order mark, an empty trailing column and rows of commas. Empty rows
    were scored as rows of missing values; now skipped, counted, and the other rows keep the
    ids they have in the file, so a prediction log still matches."""
    folder = setup["root"] / "excel"
    folder.mkdir()
    part = _adult("test", 300, 1)
    lines = [line + "," for line in part.to_csv(index=False).splitlines()]
    blank = "," * part.shape[1]
    lines = [*lines[:101], blank, *lines[101:], blank]  # after data row 99, and at the end
    (folder / "day00.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))
    out = shadow(setup["candidate"], setup["incumbent"], folder, setup["root"] / "xl", setup["cfg"])
    report = _report(out)
    assert report["rows"] == 300
    assert report["agreement"]["by_batch"]["day00"]["empty_rows_skipped"] == 2
    ids = pd.read_csv(out / "scores.csv")["row_id"].tolist()
    assert ids[99:101] == ["day00:99", "day00:101"] and ids[-1] == "day00:300"
    assert "were skipped (not scored): day00 2." in (out / "shadow.md").read_text()


def test_psi_and_cost_formulas_by_hand() -> None:
    hand = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi_from_counts(np.array([50, 50]), np.array([25, 75])) == pytest.approx(hand)
    same = np.arange(500, dtype=float)
    assert numeric_drift(same, same.copy(), 10)["psi"] == pytest.approx(0.0, abs=1e-12)
    kpi = KpiConfig(costs={"false_positive": 2, "false_negative": 10}, bootstrap=0)
    y, cand, inc = np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0]), np.zeros(4, dtype=int)
    costs = decision_costs(y, cand, inc, kpi)
    assert costs["candidate"]["per_1000"] == pytest.approx(1000 * (2 + 10) / 4)
    assert costs["incumbent"]["per_1000"] == pytest.approx(1000 * 20 / 4)
    assert costs["difference"] == {"per_1000": pytest.approx(-2000.0), "interval_95": None}


def _curve(ssl: list[float], baseline: list[float]) -> dict[str, Any]:
    fractions, labels = [0.01, 0.1, 1.0], [100, 1000, 10000]
    rows = [
        {"fraction": f, "labels": n, "draw": 0, "model": m, "roc_auc": v}
        for m, values in (("ssl_linear_probe", ssl), ("logistic_regression", baseline))
        for f, n, v in zip(fractions, labels, values, strict=True)
    ]
    mean = {m: {str(f): v for f, v in zip(fractions, vals, strict=True)}
            for m, vals in (("ssl_linear_probe", ssl), ("logistic_regression", baseline))}  # fmt: skip
    return {"rows": rows, "mean": mean, "crossings": {}}


def test_labels_saved_interpolates_on_a_log_axis_and_says_when_never() -> None:
    kpi = KpiConfig(cost_per_label=3.0)
    saved = labels_saved(_curve([0.80, 0.86, 0.88], [0.70, 0.84, 0.87]), kpi)
    # 0.87 lies between SSL's 0.86 (1,000 labels) and 0.88 (10,000): halfway on log10.
    needed = math.ceil(10 ** (3 + 0.5))
    head = saved["headline"]
    assert head["ssl_labels_needed"] == needed == labels_to_reach_ceil([0.80, 0.86, 0.88], 0.87)
    assert head["labels_saved"] == 10000 - needed
    assert head["cost_saved"] == pytest.approx(3.0 * (10000 - needed))
    assert saved["by_baseline_budget"][0]["ssl_labels_needed"] == 100  # already better at 1%
    never = labels_saved(_curve([0.80, 0.82, 0.85], [0.70, 0.84, 0.87]), kpi)
    assert never["headline"]["reached"] is False and never["headline"]["labels_saved"] is None
    from sslops.shadow.kpi import describe_labels_saved

    assert "never reaches" in describe_labels_saved(never)


def labels_to_reach_ceil(values: list[float], target: float) -> int:
    found = labels_to_reach(list(zip([100.0, 1000.0, 10000.0], values, strict=True)), target)
    assert found is not None
    return math.ceil(found)


def test_label_efficiency_from_a_file_reaches_the_report(setup: dict[str, Any]) -> None:
    curve = setup["root"] / "label_efficiency.json"
    curve.write_text(json.dumps(_curve([0.80, 0.86, 0.88], [0.70, 0.84, 0.87])))
    out = shadow(setup["candidate"], setup["incumbent"], setup["drift"] / "day00.csv",
                 setup["root"] / "le-report", setup["cfg"], label_efficiency=curve)  # fmt: skip
    saved = _report(out)["kpi"]["labels_saved"]
    assert saved["headline"]["labels_saved"] == 10000 - math.ceil(10**3.5)
    assert "labels saved" in (out / "shadow.md").read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        ("empty_dir", "the folder holds no .csv files"),
        ("bad_onnx", "not a readable ONNX model"),
        ("missing_column", "missing column 'age' that --candidate candidate.onnx needs"),
        ("log_without_rows", "no prediction for"),
    ],
)
def test_bad_inputs_are_one_line_and_leave_no_output(
    setup: dict[str, Any], tmp_path: Path, capsys, change: str, message: str
) -> None:
    candidate, incumbent, data = setup["candidate"], setup["incumbent"], setup["drift"]
    if change == "empty_dir":
        data = tmp_path / "empty"
        data.mkdir()
    elif change == "bad_onnx":
        candidate = tmp_path / "broken.onnx"
        candidate.write_bytes(b"not a protobuf")
    elif change == "missing_column":
        data = tmp_path / "no-age.csv"
        pd.read_csv(setup["drift"] / "day00.csv").drop(columns="age").to_csv(data, index=False)
    else:
        incumbent = tmp_path / "log.csv"
        incumbent.write_text("row_id,score\nday00:0,0.3\n")
    out = tmp_path / "out" / "report"
    args = ["shadow", "--candidate", str(candidate), "--incumbent", str(incumbent),
            "--data", str(data), "--out", str(out), "--config", str(setup["config"])]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def _cli_error(args: list[str], capsys) -> str:
    """The one line `sslops` prints for bad input (exit status 2)."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def _shadow_args(setup: dict[str, Any], data: Path, out: Path, *extra: str) -> list[str]:
    return ["shadow", "--candidate", str(setup["candidate"]), "--incumbent",
            str(setup["incumbent"]), "--data", str(data), "--out", str(out),
            "--config", str(setup["config"]), *extra]  # fmt: skip


def test_a_sensitive_column_in_no_batch_is_refused(
    setup: dict[str, Any], tmp_path: Path, capsys
) -> None:
    """data.sensitive naming a column no batch has was dropped without a word: the fairness
    section became one group "all rows"."""
    out = tmp_path / "report"
    args = _shadow_args(setup, setup["drift"], out, "--set", "data.sensitive=[gender]")
    err = _cli_error(args, capsys)
    assert "data.sensitive column 'gender' is in none of the batches" in err
    assert "(columns: age, workclass, fnlwgt, education," in err
    assert not out.exists()


def test_a_sensitive_column_missing_from_one_batch_names_that_batch(
    setup: dict[str, Any], tmp_path: Path, capsys
) -> None:
    data = tmp_path / "batches"
    data.mkdir()
    for name in ("day00", "day01", "day02"):
        part = pd.read_csv(setup["drift"] / f"{name}.csv", dtype=str, keep_default_na=False)
        (part if name == "day00" else part.drop(columns="sex")).to_csv(
            data / f"{name}.csv", index=False
        )
    out = tmp_path / "report"
    err = _cli_error(_shadow_args(setup, data, out), capsys)
    assert f"data.sensitive column 'sex' is missing from batch {data / 'day01.csv'}" in err
    assert f"expected it in every batch, as in {data / 'day00.csv'}" in err
    assert not out.exists()


def test_without_a_config_there_are_no_sensitive_columns_and_that_is_fine(
    setup: dict[str, Any],
) -> None:
    out = shadow(setup["candidate"], setup["incumbent"], setup["drift"] / "day00.csv",
                 setup["root"] / "no-config")  # fmt: skip
    report = _report(out)
    assert list(report["metrics"]["fairness"]) == ["all rows"]
    assert report["metrics"]["labelled_rows"] == 0  # no config: no label column known


@pytest.mark.parametrize("positive", ["yes", ">50k"])
def test_a_positive_value_absent_from_the_labels_is_refused(
    setup: dict[str, Any], tmp_path: Path, capsys, positive: str
) -> None:
    """Every label was read as negative: accuracy, costs and TPR were wrong without a word."""
    out = tmp_path / "report"
    args = _shadow_args(setup, setup["drift"], out, "--set", f"data.positive={positive!r}")
    err = _cli_error(args, capsys)
    assert (
        f"data.positive {positive!r} does not occur in label column 'income' of the batches; "
        "values seen: '<=50K', '>50K'"
    ) in err
    assert not out.exists()


def test_a_batch_of_negatives_only_or_without_labels_is_still_fine(
    setup: dict[str, Any], tmp_path: Path, capsys
) -> None:
    """The positive value has to occur in the labelled batches taken together, not in each:
    one day of only negatives, or a day without the label column, is a legitimate batch."""
    data = tmp_path / "batches"
    data.mkdir()
    part = pd.read_csv(setup["drift"] / "day00.csv", dtype=str, keep_default_na=False)
    part[part["income"] == ">50K"].to_csv(data / "day00.csv", index=False)
    part[part["income"] != ">50K"].to_csv(data / "day01.csv", index=False)
    part.drop(columns="income").to_csv(data / "day02.csv", index=False)
    report = _report(shadow(setup["candidate"], setup["incumbent"], data, tmp_path / "ok",
                            setup["cfg"]))  # fmt: skip
    assert report["metrics"]["labelled_rows"] == len(part)
    assert "candidate_accuracy" in report["agreement"]["by_batch"]["day01"]
    assert "candidate_accuracy" not in report["agreement"]["by_batch"]["day02"]
    # The negatives-only day alone is refused: the value occurs in none of the labels.
    err = _cli_error(_shadow_args(setup, data / "day01.csv", tmp_path / "neg"), capsys)
    assert "data.positive '>50K' does not occur in label column 'income'" in err
    assert "values seen: '<=50K'" in err and not (tmp_path / "neg").exists()


@pytest.mark.parametrize("inside", ["candidate", "data", "label_efficiency"])
def test_out_inside_an_input_is_refused_before_any_scoring(
    setup: dict[str, Any], tmp_path: Path, capsys, monkeypatch, inside: str
) -> None:
    """--out inside the export artifact holding --candidate added the report to it (its hash
    check then failed); refused up front, for every input, before a model is even loaded."""
    export = tmp_path / "export"
    export.mkdir()
    candidate = export / "model.onnx"
    candidate.write_bytes(setup["candidate"].read_bytes())
    (export / "meta.json").write_text(json.dumps({"stage": "export"}))
    data = tmp_path / "batches"
    data.mkdir()
    (data / "day00.csv").write_bytes((setup["drift"] / "day00.csv").read_bytes())
    evaluate = tmp_path / "evaluate"
    evaluate.mkdir()
    (evaluate / "label_efficiency.json").write_text(json.dumps(_curve([0.8] * 3, [0.7] * 3)))
    out = {"candidate": export, "data": data, "label_efficiency": evaluate}[inside] / "shadow"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def no_scoring(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before --out was checked")

    monkeypatch.setattr("sslops.shadow.stage.OnnxClassifier", no_scoring)
    monkeypatch.setattr("sslops.shadow.stage.load_model", no_scoring)
    args = ["shadow", "--candidate", str(candidate), "--incumbent", str(setup["incumbent"]),
            "--data", str(data), "--out", str(out), "--config", str(setup["config"]),
            "--label-efficiency", str(evaluate)]  # fmt: skip
    err = _cli_error(args, capsys)
    folder = {"candidate": export, "data": data, "label_efficiency": evaluate}[inside]
    assert f"{out} is inside {folder}, an input of the shadow artifact" in err
    assert "nothing was written" in err
    assert not out.exists()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


class FakeKfpWithSchedules(FakeKfp):
    """The stand-in KFP API of test_k8s_submit plus the recurring-run endpoint."""

    def __init__(self) -> None:
        self.recurring: list[dict[str, Any]] = []
        super().__init__()

    def _handler(self) -> type:
        base, kfp = super()._handler(), self

        class Handler(base):  # type: ignore[misc,valid-type]
            def do_POST(self) -> None:
                if self.path.startswith("/apis/v2beta1/recurringruns"):
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    kfp.recurring.append(body)
                    return self._send({"recurring_run_id": f"rr{len(kfp.recurring)}"})
                return super().do_POST()

        return Handler


@pytest.fixture
def kfp_api():
    server = FakeKfpWithSchedules()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_schedule_shadow_creates_a_cron_recurring_run(kfp_api: FakeKfpWithSchedules) -> None:
    cfg = load_config(CONFIG)
    done = schedule_shadow(
        cfg, kfp_api.host, "0 0 6 * * *", candidate="/workspace/model.onnx",
        incumbent="/workspace/incumbent.onnx", data="/workspace/batches",
    )  # fmt: skip
    assert kfp_api.pipelines == {"sslops-shadow-pipeline": "p1"}
    spec = _uploaded_spec(kfp_api.uploads[0][2])
    assert list(spec["deploymentSpec"]["executors"]) == ["exec-shadow"]
    job = kfp_api.recurring[0]
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * *"
    assert job["mode"] == "ENABLE" and job["no_catchup"] is True
    assert job["pipeline_version_reference"] == {
        "pipeline_id": "p1",
        "pipeline_version_id": "p1-v1",
    }
    params = job["runtime_config"]["parameters"]
    assert params["data"] == "/workspace/batches" and params["reference"] == ""
    assert json.loads(params["config_json"]) == json.loads(cfg.to_json())
    assert done.recurring_run_id == "rr1"
    assert done.url == f"{kfp_api.host}/#/recurringrun/details/rr1"
    with pytest.raises(ConfigError, match="6 space-separated fields"):
        schedule_shadow(cfg, kfp_api.host, "0 6 * * *", candidate="c", incumbent="i", data="d")


def test_cli_schedule_shadow(kfp_api: FakeKfpWithSchedules, capsys) -> None:
    args = ["schedule-shadow", "--config", str(CONFIG), "--host", kfp_api.host,
            "--cron", "0 30 5 * * 1-5", "--candidate", "c.onnx", "--incumbent", "i.csv",
            "--data", "d/", "--name", "weekday-shadow"]  # fmt: skip
    assert main(args) == 0
    assert "recurring run rr1 (0 30 5 * * 1-5)" in capsys.readouterr().out
    assert kfp_api.recurring[0]["display_name"] == "weekday-shadow"


def assert_committed(fresh: list[Path], stem: str, script: Any) -> None:
    """A one-task pipeline's fresh compile (IR, Kubernetes-native, the chart's copy) equals
    what is committed."""
    assert [p.name for p in fresh] == [f"{stem}.yaml", f"{stem}.k8s.yaml", f"{stem}.yaml"]
    chart = ROOT / "helm" / "sslops" / "files" / "pipelines"
    for path in fresh:
        committed = (chart if path.parent.name == "chart" else script.COMPILED) / path.name
        assert committed.is_file(), f"{committed} is missing: run `make compile` and commit it"
        assert path.read_text() == committed.read_text(), f"{committed} is stale: `make compile`"


def test_committed_shadow_pipeline_matches_a_fresh_compile(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SSLOPS_IMAGE_REGISTRY", raising=False)
    spec = importlib.util.spec_from_file_location(
        "shadow_compile_script", ROOT / "pipelines" / "shadow_pipeline.py"
    )
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert_committed(script.compile_shadow(tmp_path, tmp_path / "chart"), "shadow_pipeline", script)
    ir = next(yaml.safe_load_all((script.COMPILED / "shadow_pipeline.yaml").read_text()))
    task = ir["root"]["dag"]["tasks"]["shadow"]
    assert not task.get("cachingOptions", {}).get("enableCache")  # new data, same paths
    platform = list(yaml.safe_load_all((script.COMPILED / "shadow_pipeline.yaml").read_text()))[1]
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-shadow"]
    assert mounts["pvcMount"][0]["mountPath"] == "/workspace"


def test_component_file_exposes_the_shadow_component() -> None:
    spec = importlib.util.spec_from_file_location(
        "component_shadow", ROOT / "components" / "shadow" / "component.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.component.name == "shadow"


def test_help_documents_the_predictions_format(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["shadow", "--help"])
    out = capsys.readouterr().out
    assert "PREDICTIONS.csv" in out and "row_id" in out and "--label-efficiency" in out


@pytest.mark.slow
def test_shadow_of_the_exported_sslops_model(
    stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """The candidate straight from `sslops export` (string inputs, threshold in its metadata)
    against a prediction log, on the raw test rows the run was evaluated on."""
    from sslops.prepare import PreparedData

    data = PreparedData(stage_artifacts["prepare"])
    frame = data.test.frame.copy()
    frame["income"] = np.where(data.test.target == 1, ">50K", "<=50K")
    batches = tmp_path / "batches"
    batches.mkdir()
    halves = np.array_split(np.arange(len(frame)), 2)
    for i, rows in enumerate(halves):
        frame.iloc[rows].to_csv(batches / f"day{i}.csv", index=False)
    log = tmp_path / "predictions.csv"
    ids = [f"day{i}:{j}" for i, rows in enumerate(halves) for j in range(len(rows))]
    pd.DataFrame({"row_id": ids, "score": np.full(len(ids), 0.2)}).to_csv(log, index=False)
    candidate = stage_artifacts["export"] / "model.onnx"
    out = shadow(candidate, log, batches, tmp_path / "report", load_config(CONFIG))
    report = _report(out)
    metrics = json.loads((stage_artifacts["evaluate"] / "metrics.json").read_text())
    deployed = metrics["models"]["mitigated"]["accuracy"]
    assert report["metrics"]["overall"]["accuracy"]["candidate"] == pytest.approx(
        deployed, abs=1e-3
    )
    assert report["metrics"]["overall"]["selection_rate"]["incumbent"] == 0.0
    assert report["drift"]["drifted_batches"] == []


def test_a_score_at_the_threshold_is_a_positive_decision_from_the_class_1_column(
    tmp_path: Path,
) -> None:
    """A [batch, 2] probability output (skl2onnx's) scores with its class-1 column, and a
    score equal to the threshold is decided positive, in shadow as in predict's label
    (``score >= threshold``). Left by the mutation review: taking column 0, or deciding
    ``score > threshold``, passed every test (no sslops model gives a score on the cut)."""
    from onnx import TensorProto, helper, save

    from sslops.predict import predict_frame
    from sslops.shadow.scoring import Batch

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])
    y = helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 2])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Sub", ["one", "x"], ["other"]),  # [1 - x, x]
         helper.make_node("Concat", ["other", "x"], ["probability"], axis=1)],
        "identity", [x], [y], [one],
    )  # fmt: skip
    path = tmp_path / "identity.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    frame = pd.DataFrame({"x": [0.25, 0.5, 0.75]})
    batch = Batch("rows", tmp_path / "rows.csv", frame, np.array(["rows:0", "rows:1", "rows:2"]))
    scores = OnnxClassifier(path, 0.5, "--candidate").score(batch)
    assert scores.score.tolist() == [0.25, 0.5, 0.75]
    assert scores.decision.tolist() == [0, 1, 1]
    labelled = predict_frame(path, frame, threshold=0.5)
    assert labelled["label"].tolist() == [0, 1, 1]
