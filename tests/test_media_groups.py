"""A hospital's own fairness groups for images and series: ``data.attributes_file``, a CSV of
its records keyed by file (or series), names sex, site, scanner or age band for each item;
``data.sensitive`` names its columns. Prepare joins it (refusing what cannot be joined),
and finetune, evaluate and the model card measure those groups as they measure MNIST's
stroke thickness."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from PIL import Image

from sslops.artifacts import null_as_nan
from sslops.config import Config, load_config, validate_config
from sslops.errors import ConfigError, DataError, GateError
from sslops.prepare import PreparedData, prepare
from tests.conftest import ROOT

MNIST = ROOT / "src" / "sslops" / "datasets" / "mnist" / "mnist_5k.csv.gz"
GUNPOINT = ROOT / "src" / "sslops" / "datasets" / "gunpoint"
FAST = [
    "pretrain.threads=1", "pretrain.knn_every=0", "evaluate.bootstrap=10", "pretrain.epochs=1",
    "finetune.fairness.penalties=[0.0,2.0]", "finetune.fairness.reductions=[]",
    "evaluate.label_efficiency=null",
    "audit.gates.min_auc=null", "audit.gates.max_int8_accuracy_drop=null",
]  # fmt: skip


def _scans(root: Path, n: int = 120) -> list[str]:
    """MNIST digits 0 and 1 as grey PNG scans under ``root/<digit>/``; their relative paths."""
    with gzip.open(MNIST, "rt") as fh:
        rows = [r.split(",") for r in fh.read().splitlines()]
    zeros, ones = ([r for r in rows if r[-1] == d][: n // 2] for d in ("0", "1"))
    chosen = [r for pair in zip(zeros, ones, strict=True) for r in pair]  # 0, 1, 0, 1, ...
    paths = []
    for i, row in enumerate(chosen):
        pixels = np.array(row[:-1], dtype=np.uint8).reshape(28, 28)
        relative = f"{row[-1]}/scan_{i:03d}.png"
        (root / row[-1]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / relative)
        paths.append(relative)
    return paths


def _records(keys: list[str]) -> pd.DataFrame:
    """Records as a hospital exports them: sex coded 1/2, site with leading zeros, age."""
    n = len(keys)
    return pd.DataFrame({
        "file": keys,
        "sex": [str(1 + i // 2 % 2) for i in range(n)],  # both digits in each group
        "site": ["007" if i % 3 else "012" for i in range(n)],
        "age": [str(20 + i) for i in range(n)],  # years: a quantity, not a grouping
    })  # fmt: skip


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _config(root: Path, records: Path, *overrides: str) -> Config:
    """A plain image config; with ``overrides``, the MNIST recipe on these scans."""
    if overrides:
        return load_config(
            ROOT / "configs" / "mnist.yaml",
            [f"data.train={root}", "data.format=image_folder", f"data.attributes_file={records}",
             "data.sensitive=[sex,site]", "prepare.image_size=[16,16]", *overrides],
        )  # fmt: skip
    data = {"train": str(root), "format": "image_folder", "label": "label",
            "attributes_file": str(records), "sensitive": ["sex", "site"]}  # fmt: skip
    prepare_options = {"test_fraction": 0.2, "image_size": [16, 16]}
    return validate_config({"modality": "image", "data": data, "prepare": prepare_options})


@pytest.fixture
def scans(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "scans"
    return root, _scans(root, 60)


def test_groups_of_the_records_are_stored_beside_each_image_as_written(
    scans: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, paths = scans
    records = _write(_records(paths), tmp_path / "records.csv")
    data = PreparedData(prepare(_config(root, records), tmp_path / "out"))
    assert data.schema["group_columns"] == ["sex", "site"]
    frames = [data.split(s).frame for s in ("train", "validation", "test")]
    both = pd.concat(frames)
    assert set(both["sex"]) == {"1", "2"} and set(both["site"]) == {"007", "012"}  # not 7, 12
    assert len(both) == 60
    card = json.loads((data.path / "datacard.json").read_text(encoding="utf-8"))
    assert sum(card["groups"]["site"]["train"].values()) == len(frames[0])
    assert "Groups of site (data.attributes_file)" in (data.path / "datacard.md").read_text()
    # keyed by bare file name (unique in the folder), by Windows paths or ./: the same groups
    for keys in ([Path(p).name for p in paths], [".\\" + p.replace("/", "\\") for p in paths]):
        again = PreparedData(prepare(_config(root, _write(_records(keys), records)),
                                     tmp_path / f"out{len(keys[0])}"))  # fmt: skip
        assert again.train.frame[["sex", "site"]].equals(data.train.frame[["sex", "site"]])


def test_each_scans_group_is_the_one_its_row_names(tmp_path: Path) -> None:
    """Rows in another order than the files, and each image's group follows its own row:
    a scan's group is told apart by its pixels (digit 0 vs 1 here), so a shifted join
    would show."""
    root = tmp_path / "scans"
    paths = _scans(root, 60)
    frame = _records(paths).iloc[::-1]
    frame["sex"] = ["F" if p.startswith("0/") else "M" for p in frame["file"]]
    data = PreparedData(prepare(_config(root, _write(frame, tmp_path / "r.csv")), tmp_path / "o"))
    for name in ("train", "validation", "test"):
        split = data.split(name).frame
        assert ((split["label"] == "0") == (split["sex"] == "F")).all()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda f: f.rename(columns={"file": "path"}),
         "data.attributes_key: column 'file' not found in data.attributes_file"),
        (lambda f: f.drop(columns="site"),
         "data.sensitive: column(s) 'site' not found in data.attributes_file"),
        (lambda f: f.iloc[3:],
         "3 of 60 labeled items have no row (first: '0/scan_000.png', '0/scan_002.png', "
         "'1/scan_001.png'); expected one row per item, with 'file' holding its path under "
         "the data folder"),
        (lambda f: f.assign(file=[Path(p).stem for p in f["file"]]),  # no suffix: no match
         "60 of 60 labeled items have no row"),
        (lambda f: pd.concat([f, f.iloc[:2]]), "'file' '0/scan_000.png' is on 2 rows"),
        (lambda f: f.assign(file=["", *f["file"][1:]]), "1 row(s) have an empty 'file'"),
    ],
)  # fmt: skip
def test_records_that_cannot_be_joined_are_refused_before_any_output(
    scans: tuple[Path, list[str]], tmp_path: Path, change, needle: str
) -> None:
    root, paths = scans
    records = _write(change(_records(paths)), tmp_path / "records.csv")
    with pytest.raises(DataError) as info:
        prepare(_config(root, records), tmp_path / "out")
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_missing_records_file_fails_before_work(
    scans: tuple[Path, list[str]], tmp_path: Path
) -> None:
    from sslops.prepare import check_inputs

    with pytest.raises(DataError, match=r"data.attributes_file: file not found: .*nowhere.csv"):
        check_inputs(_config(scans[0], tmp_path / "nowhere.csv"))


def test_a_file_name_in_two_folders_cannot_be_keyed_by_name_alone(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    paths = _scans(root, 40)
    Image.open(root / paths[1]).save(root / "0" / "twin.png")
    Image.open(root / paths[-1]).rotate(90).save(root / "1" / "twin.png")
    records = _write(_records([*paths, "twin.png"]), tmp_path / "r.csv")
    with pytest.raises(DataError, match=r"the row file = 'twin.png' matches 2 items "
                                        r"\(0/twin.png, 1/twin.png\)"):  # fmt: skip
        prepare(_config(root, records), tmp_path / "out")
    _write(_records([*paths, "0/twin.png", "1/twin.png"]), records)  # their paths: read
    assert PreparedData(prepare(_config(root, records), tmp_path / "ok")).train


def test_rows_without_a_file_are_counted_in_a_note(
    scans: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The export covers the whole ward, this data set a part of it: the other rows are
    left out and said to be."""
    root, paths = scans
    records = _write(_records([*paths, "0/gone_1.png", "1/gone_2.png"]), tmp_path / "r.csv")
    out = prepare(_config(root, records), tmp_path / "out")
    needle = ("data.attributes_file: 2 of 62 rows name no image or series of "
              "data.train/data.test and were not used (first: '0/gone_1.png', '1/gone_2.png')")  # fmt: skip
    assert f"note: {needle}" in capsys.readouterr().err
    assert needle in json.loads((out / "datacard.json").read_text(encoding="utf-8"))["notes"]


def test_an_age_in_years_is_refused_as_a_grouping_with_the_banding(
    tmp_path: Path,
) -> None:
    root = tmp_path / "scans"
    paths = _scans(root, 120)
    records = _write(_records(paths), tmp_path / "r.csv")
    cfg = _config(root, records).model_copy(deep=True)
    cfg.data.sensitive = ["age"]
    with pytest.raises(DataError, match=r"column 'age' has \d+ distinct values in the training "
                                        r"split; fairness groups need at most 50: add a banded"):  # fmt: skip
        prepare(cfg, tmp_path / "out")
    frame = _records(paths).assign(sex="1")  # one group only: nothing to compare
    cfg.data.sensitive = ["sex"]
    _write(frame, records)
    with pytest.raises(DataError, match="column 'sex' has 1 distinct value"):
        prepare(cfg, tmp_path / "out")


def test_empty_group_cells_are_the_missing_group(
    scans: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, paths = scans
    frame = _records(paths)
    frame.loc[:9, "site"] = ""
    data = PreparedData(prepare(_config(root, _write(frame, tmp_path / "r.csv")), tmp_path / "o"))
    groups = pd.concat([data.split(s).groups("site") for s in ("train", "validation", "test")])
    assert (groups == "(missing)").sum() == 10


def test_config_rules_for_the_records_file() -> None:
    image = {"train": "x", "format": "image_folder", "label": "label", "attributes_file": "r.csv"}
    with pytest.raises(ConfigError, match=r"data\.attributes_file needs data\.sensitive"):
        validate_config({"modality": "image", "data": image})
    with pytest.raises(ConfigError, match=r"data.sensitive \['cluster'\] cannot be group"):
        validate_config({"modality": "image", "data": {**image, "sensitive": ["cluster"]}})
    with pytest.raises(ConfigError, match=r"finetune.fairness.sensitive \['site'\] must also"):
        validate_config({"modality": "image", "data": {**image, "sensitive": ["sex"]},
                         "finetune": {"fairness": {"sensitive": ["site"]}}})  # fmt: skip
    tabular = {"train": "t.csv", "label": "y", "positive": 1, "sensitive": ["sex"],
               "attributes_file": "r.csv"}  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.attributes_file is for images and series"):
        validate_config({"data": tabular})
    # the records' column names are free: not checked against the computed attributes
    assert validate_config({"modality": "image", "data": {**image, "sensitive": ["sex"]}})


def test_pixel_csv_rows_are_keyed_by_number_and_unlabeled_ones_need_no_row(
    tmp_path: Path,
) -> None:
    """Images of one file are keyed '<file name>:<n>'; items without a label (pretraining
    only) are never scored, so they need no row."""
    with gzip.open(MNIST, "rt") as fh:
        rows = fh.read().splitlines()[::50][:60]
    rows[-5:] = [",".join(r.split(",")[:-1]) + "," for r in rows[-5:]]  # no label
    (tmp_path / "digits.csv").write_text("\n".join(rows) + "\n")
    keys = [f"digits.csv:{n}" for n in range(1, 56)]
    records = _write(_records(keys), tmp_path / "r.csv")
    cfg = validate_config({
        "modality": "image",
        "data": {"train": str(tmp_path / "digits.csv"), "format": "pixel_csv", "label": "label",
                 "attributes_file": str(records), "sensitive": ["site"]},
        "prepare": {"test_fraction": 0.2, "near_duplicates": {"enabled": False}},
    })  # fmt: skip
    data = PreparedData(prepare(cfg, tmp_path / "out"))
    unlabeled = pd.read_parquet(data.path / "unlabeled.parquet")
    assert len(unlabeled) == 5 and unlabeled["site"].isna().all()
    scored = pd.concat([data.split(s).frame for s in ("train", "validation", "test")])
    assert len(scored) == 55 and set(scored["site"]) == {"007", "012"}
    card = json.loads((data.path / "datacard.json").read_text(encoding="utf-8"))["groups"]
    assert sum(sum(c.values()) for c in card["site"].values()) == 55  # scored splits only


def _gunpoint_records(tmp_path: Path) -> Path:
    """Records of GunPoint's series keyed '<file name>:<n>': the actor (two of them, as in
    the recording) by series number."""
    keys = [f"GunPoint_TRAIN.ts:{n}" for n in range(1, 51)]
    keys += [f"GunPoint_TEST.ts:{n}" for n in range(1, 151)]
    frame = pd.DataFrame({"file": keys, "actor": ["A" if i % 2 else "B" for i in range(200)]})
    return _write(frame, tmp_path / "actors.csv")


def test_series_are_keyed_by_file_and_number(tmp_path: Path) -> None:
    records = _gunpoint_records(tmp_path)
    cfg = load_config(ROOT / "configs" / "gunpoint.yaml",
                      [f"data.attributes_file={records}", "data.sensitive=[actor]"])  # fmt: skip
    data = PreparedData(prepare(cfg, tmp_path / "out"))
    test = data.test.frame
    assert len(test) == 150 and list(test["actor"][:4]) == ["B", "A", "B", "A"]
    _write(pd.read_csv(records).iloc[:-1], records)
    with pytest.raises(DataError, match=r"1 of 200 labeled items have no row \(first: "
                                        r"'GunPoint_TEST.ts:150'\).*'<file name>:<n>'"):  # fmt: skip
        prepare(cfg, tmp_path / "again")


def test_a_site_held_out_as_the_ood_split(tmp_path: Path) -> None:
    """prepare.ood names a column of the records (a site the model never trains on); a
    column that is neither the label nor in the records is one line, not a KeyError."""
    records = _gunpoint_records(tmp_path)
    frame = pd.read_csv(records)
    frame["site"] = ["s2" if i % 5 == 0 else "s1" for i in range(len(frame))]
    _write(frame, records)

    def config(*overrides: str) -> Config:
        return load_config(ROOT / "configs" / "gunpoint.yaml", [
            f"data.attributes_file={records}", "data.sensitive=[actor]", *overrides])  # fmt: skip

    data = PreparedData(prepare(config("prepare.ood=site == s2"), tmp_path / "out"))
    ood = data.split("ood").frame
    assert len(ood) >= 40 and "site" not in ood  # read for the predicate only
    kept = sum(len(data.split(s).frame) for s in ("train", "validation", "test"))
    assert kept + len(ood) <= 200 and kept <= 160
    # a group column held out: the training split keeps one site, refused with the cause
    with pytest.raises(DataError, match=r"'site' has 1 distinct value.*after prepare.ood removed"):
        prepare(config("prepare.ood=site == s2", "data.sensitive=[site]"), tmp_path / "again")
    with pytest.raises(DataError, match=r"prepare\.ood: column\(s\) 'ward' not found in "
                                        r"data\.attributes_file"):  # fmt: skip
        prepare(config("prepare.ood=ward == 3"), tmp_path / "bad")
    without = load_config(ROOT / "configs" / "gunpoint.yaml", ["prepare.ood=ward == 3"])
    with pytest.raises(DataError, match=r"prepare\.ood: column 'ward' is not a column of "
                                        r"timeseries data; the predicate can name 'label' "
                                        r"\(or data\.label 'class'\)"):  # fmt: skip
        prepare(without, tmp_path / "bad")
    # the label by its data.label name ('class'), as by 'label': it selects the class's items
    # (here all of them, which leaves train one class: refused, naming where they went)
    with pytest.raises(DataError, match=r"no item of class '2' \(\d+ in ood\) is in the train "
                                        r"split.*prepare\.ood 'class == 2' took it"):  # fmt: skip
        prepare(config("prepare.ood=class == 2"), tmp_path / "cls")
    assert not (tmp_path / "cls").exists()


def _stages(cfg: Config, root: Path, audit: bool) -> dict[str, Path]:
    from sslops.evaluate import evaluate
    from sslops.finetune import finetune
    from sslops.pretrain import pretrain

    a = {"prepare": prepare(cfg, root / "prepare")}
    a["pretrain"] = pretrain(cfg, a["prepare"], root / "pretrain")
    a["finetune"] = finetune(cfg, a["prepare"], a["pretrain"], root / "finetune")
    a["evaluate"] = evaluate(cfg, a["prepare"], a["finetune"], root / "evaluate")
    if audit:
        from sslops.audit import audit as run_audit
        from sslops.export import export

        a["export"] = export(cfg, a["prepare"], a["finetune"], root / "export")
        a["audit"] = run_audit(cfg, dict(a), root / "audit")
    return a


def _check_groups_measured(a: dict[str, Path], column: str) -> dict:
    """The evaluation's groups are the records' groups of the test items, for every model."""
    data = PreparedData(a["prepare"])
    expected = data.test.groups(column).value_counts().to_dict()
    metrics = json.loads((a["evaluate"] / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["sensitive"] == column and metrics["group_edges"][column] is None
    for name in ("ssl", "mitigated", "baseline"):
        model = metrics["models"][name]
        found = {g: v["count"] for g, v in model["by_group"][column].items()}
        assert found == expected, (name, found, expected)
        assert 0 <= model["dp_difference"] <= 1 and 0 <= model["eo_difference"] <= 1
    report = json.loads((a["finetune"] / "finetune.json").read_text(encoding="utf-8"))
    assert report["groups"][column]["source"] == f"data.attributes_file column {column!r}"
    assert report["fairness"]["sensitive"] == [column]
    shortcuts = json.loads((a["evaluate"] / "shortcuts.json").read_text(encoding="utf-8"))
    (edit,) = [e for e in shortcuts["counterfactual"].values() if e["attribute"] == column]
    assert edit["applicable"] is False and edit["flagged"] is None
    assert "comes from data.attributes_file" in shortcuts["not_applicable"][
        f"counterfactual: {column}"]  # fmt: skip
    assert not shortcuts["flagged"]
    text = (a["evaluate"] / "metrics.md").read_text(encoding="utf-8")
    assert f"DP diff. ({column})" in text and "comes from data.attributes_file" in text
    return metrics


def test_image_groups_from_records_reach_evaluation_and_the_model_card(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    records = _write(_records(_scans(root, 160)), tmp_path / "records.csv")
    cfg = _config(root, records, *FAST, "pretrain.batch_size=32", "finetune.label_fraction=1.0")
    a = _stages(cfg, tmp_path / "run", audit=True)
    metrics = _check_groups_measured(a, "sex")
    assert set(metrics["models"]["mitigated"]["by_group"]["site"]) == {"007", "012"}
    card = (a["audit"] / "bundle" / "model_card.html").read_text(encoding="utf-8")
    assert "DP diff. (sex)" in card and "Per-group metrics of &#x27;mitigated&#x27; by site" in card
    assert "sex comes from data.attributes_file" in card  # why no counterfactual edit
    assert (
        "data.attributes_file"
        in json.loads((a["audit"] / "bundle" / "lineage.json").read_text(encoding="utf-8"))[
            "stages"
        ][0]["sources"]
    )  # the records are part of the lineage, hashed
    props = {p.key: p.value for p in onnx.load(str(a["export"] / "model.onnx")).metadata_props}
    assert "read from the records file records.csv" in props["sensitive_attribute_policy"]


def test_series_groups_from_records_reach_evaluation(tmp_path: Path) -> None:
    records = _gunpoint_records(tmp_path)
    cfg = load_config(
        ROOT / "configs" / "gunpoint.yaml",
        [*FAST, f"data.attributes_file={records}", "data.sensitive=[actor]"],
    )  # fmt: skip
    _check_groups_measured(_stages(cfg, tmp_path / "run", audit=False), "actor")


def test_a_gap_with_one_test_group_is_undefined_in_metrics_report_gates_and_card(
    tmp_path: Path,
) -> None:
    """Every test series from one site: no gap by site can be measured. It was 0.0, which
    read as no gap and passed max_dp_difference (found by the leftovers review); now it is
    null, 'undefined' in metrics.md, n/a on the card, each with why, and a gate on it fails."""
    from sslops.audit.gates import evaluate_gates, measured_values

    records = _gunpoint_records(tmp_path)
    frame = pd.read_csv(records)
    frame["site"] = ["s1" if k.startswith("GunPoint_TEST") or i % 2 else "s2"
                     for i, k in enumerate(frame["file"])]  # fmt: skip
    _write(frame, records)
    cfg = load_config(ROOT / "configs" / "gunpoint.yaml", [
        *FAST, f"data.attributes_file={records}", "data.sensitive=[site,actor]",
        "audit.gates.max_dp_difference=null", "audit.gates.max_eo_difference=null"])  # fmt: skip
    a = _stages(cfg, tmp_path / "run", audit=True)
    metrics = json.loads((a["evaluate"] / "metrics.json").read_text(encoding="utf-8"))
    deployed = metrics["models"][cfg.export.model]
    assert deployed["dp_difference"] is None and deployed["eo_difference"] is None
    assert deployed["gaps"]["site"]["eopp_difference"] is None
    assert deployed["gaps"]["actor"]["dp_difference"] is not None  # two actors in the test
    why = "demographic-parity difference undefined: it compares the groups' selection rates"
    assert deployed["gap_notes"]["site"]["dp_difference"].startswith(why)
    report = (a["evaluate"] / "metrics.md").read_text(encoding="utf-8")
    assert "| undefined | undefined |" in report and f"site: {why}" in report
    card = (a["audit"] / "bundle" / "model_card.md").read_text(encoding="utf-8")
    assert "Gaps not measured as such (n/a: fewer than two groups to compare): site: " in card
    raw = cfg.model_dump(mode="json")
    raw["audit"]["gates"]["max_dp_difference"] = 0.2
    gated = Config.model_validate(raw)
    exported = json.loads((a["export"] / "export.json").read_text(encoding="utf-8"))
    with pytest.raises(GateError, match="demographic-parity difference is undefined"):
        evaluate_gates(gated, measured_values(null_as_nan(metrics), exported))
