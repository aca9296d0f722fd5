"""The Python API a notebook uses (``import sslops``; docs/python-api.md, whose code blocks
run here on a sample of Adult). Found by the pyapi review: ``sslops`` offered only
``__version__``, a dict of overrides failed, a DataFrame could not be scored without
writing a file, and ``sslops.run``'s task lines went to the process's stderr, which a
notebook never shows."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import sslops
from sslops.config import Config
from tests.conftest import FAST_OVERRIDES, ROOT, fresh_interpreter_loads, small_config_dict

DOC = ROOT / "docs" / "python-api.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def small_yaml(small_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pyapi") / "small.yaml"
    path.write_text(yaml.safe_dump(small_config_dict(small_data)))
    return path


def _run_block(code: str, namespace: dict[str, Any]) -> None:
    """Run a doc block as a script with ``namespace`` as its globals, which it updates (a
    file run by runpy: the source scan refuses ``exec`` anywhere in the tree)."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "doc_block.py"
        script.write_text(code, encoding="utf-8")
        namespace.update(runpy.run_path(str(script), init_globals=namespace))


def _doc_namespace(small_yaml: Path, blocks: list[str]) -> dict[str, Any]:
    """Run doc blocks in order, the shipped config swapped for the small sample's."""
    namespace: dict[str, Any] = {}
    for block in blocks:
        _run_block(block.replace('"package:adult.yaml"', repr(str(small_yaml))), namespace)
    return namespace


def test_import_sslops_lists_the_api_and_imports_no_torch() -> None:
    code = (
        "import sslops\n"
        "print([n for n in sslops.__all__ if n not in dir(sslops)])\n"
        "for name in sslops.__all__:\n"
        "    getattr(sslops, name)"
    )
    assert fresh_interpreter_loads(code, {"torch", "onnx"}) == ("[]", [])
    for name in ("load_config", "run", "run_stage", "predict_frame", "read_metrics", "api"):
        assert name in sslops.__all__
    assert sslops.load_config.__doc__ and "Parameters" in sslops.load_config.__doc__
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        sslops.nothing  # noqa: B018


def test_overrides_as_a_dict_a_nested_dict_or_set_strings_give_one_config(
    small_yaml: Path,
) -> None:
    strings = sslops.load_config(small_yaml, ["pretrain.epochs=2", "data.sensitive=[sex]",
                                              "data.positive=>50K"])  # fmt: skip
    flat = sslops.load_config(
        small_yaml, {"pretrain.epochs": 2, "data.sensitive": ["sex"], "data.positive": ">50K"}
    )
    nested = sslops.load_config(
        small_yaml, {"pretrain": {"epochs": 2}, "data": {"sensitive": ["sex"], "positive": ">50K"}}
    )
    assert isinstance(flat, Config)
    assert strings == flat == nested
    assert flat.pretrain.epochs == 2 and flat.data.sensitive == ["sex"]
    # text stays text (written unquoted on a command line, YAML reads `yes` as true)
    assert sslops.load_config(small_yaml, {"data.positive": "yes"}).data.positive == "yes"
    # a stage's cfg: a Config, a file, or the file's content as a dict, validated the same
    from sslops.api import _config

    raw = yaml.safe_load(small_yaml.read_text())
    assert _config(raw) == _config(small_yaml) == sslops.load_config(small_yaml)
    raw["pretrain"]["epochs"] = "many"
    with pytest.raises(sslops.ConfigError, match=r"pretrain\.epochs"):
        _config(raw)
    assert (
        sslops.load_config(
            small_yaml, {"evaluate.label_efficiency": None}
        ).evaluate.label_efficiency
        is None
    )


def test_bad_config_input_raises_a_clear_exception_not_system_exit(small_yaml: Path) -> None:
    with pytest.raises(sslops.ConfigError, match="one string"):
        sslops.load_config(small_yaml, "pretrain.epochs=2")  # type: ignore[arg-type]
    with pytest.raises(sslops.ConfigError, match=r"pretrain\.epochs"):
        sslops.load_config(small_yaml, {"pretrain.epochs": "many"})
    with pytest.raises(sslops.ConfigError, match="config file not found"):
        sslops.load_config("nowhere.yaml")
    with pytest.raises(sslops.ConfigError, match="expected a Config"):
        sslops.run(42, "runs/x")  # type: ignore[arg-type]
    with pytest.raises(sslops.ConfigError, match="stage 'train'"):
        sslops.run_stage("train", small_yaml, "x", {})
    with pytest.raises(sslops.ConfigError, match=r"needs the artifact.*prepared"):
        sslops.api.pretrain(small_yaml, "", "x")


def test_a_stage_refused_for_bad_data_leaves_no_empty_folders(
    small_data: dict[str, Path], tmp_path: Path
) -> None:
    """Refused under its output lock (the label column is missing), a stage left the folders
    it made for ``out`` behind, empty; folders that were there before stay."""
    no_label = tmp_path / "no_label.csv"
    pd.read_csv(small_data["train"]).drop(columns="income").to_csv(no_label, index=False)
    cfg = sslops.load_config("package:adult.yaml", {"data.train": str(no_label)})
    (tmp_path / "kept").mkdir()
    with pytest.raises(sslops.DataError, match="income"):
        sslops.api.prepare(cfg, tmp_path / "kept" / "new" / "deeper" / "prepare")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == []
    assert (tmp_path / "kept").is_dir()


def test_a_stage_from_python_refuses_an_out_inside_its_input(
    small_config: Config, stage_artifacts: dict[str, Path]
) -> None:
    inside = stage_artifacts["prepare"] / "pretrain"
    with pytest.raises(sslops.ArtifactError, match="inside"):
        sslops.api.pretrain(small_config, stage_artifacts["prepare"], inside)
    assert not inside.exists()


def test_run_task_lines_go_to_the_callers_stderr() -> None:
    """A notebook's cell output is ``sys.stderr``; the process's own stderr shows nowhere."""
    from sslops.pipeline.local import _ConsoleFilter

    cell = io.StringIO()
    with contextlib.redirect_stderr(cell):
        console = _ConsoleFilter(io.StringIO())
        console.write("Task 'prepare' finished with status SUCCESS\nerror: bad row\n")
    assert cell.getvalue() == "  [ok] prepare\n  error: bad row\n"


def test_predict_frame_scores_as_the_file_path_does(
    small_config: Config, stage_artifacts: dict[str, Path], small_data: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    from sslops.predict import predict

    model = stage_artifacts["export"] / "model.onnx"
    frame = pd.read_csv(small_data["test"], dtype=str, keep_default_na=False).head(40)
    frame.index = [f"p{i}" for i in range(40)]
    frame.iloc[3] = ""  # a row with no value: not scored
    frame.iloc[5, frame.columns.get_loc("age")] = "?"  # missing, as data.na_values says
    frame.to_csv(tmp_path / "rows.csv", index=False)
    predict(model, tmp_path / "rows.csv", tmp_path / "p.csv", small_config)
    from_file = pd.read_csv(tmp_path / "p.csv")

    scores = sslops.predict_frame(model, frame, small_config)
    assert list(scores.index) == list(frame.index)
    assert list(scores.columns) == ["score", "label"]
    assert np.isnan(scores.loc["p3", "score"]) and pd.isna(scores.loc["p3", "label"])
    kept = scores.drop(index="p3")
    np.testing.assert_allclose(kept["score"], from_file["score"], rtol=1e-6)
    assert kept["label"].tolist() == from_file["label"].tolist()
    assert scores.attrs["threshold_from"] == "the model's decision_threshold metadata"
    # numbers as numbers (pd.read_csv's defaults) score the same
    typed = pd.read_csv(tmp_path / "rows.csv", na_values=["?"])
    np.testing.assert_allclose(sslops.predict_frame(model, typed, small_config)["score"].dropna(),
                               from_file["score"], rtol=1e-6)  # fmt: skip
    everyone = sslops.predict_frame(model, frame, small_config, threshold=0.01)
    assert everyone.attrs["threshold"] == 0.01 and everyone["label"].sum() >= kept["label"].sum()


def test_predict_frame_bad_input_raises_data_error(
    small_config: Config, stage_artifacts: dict[str, Path], small_data: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    from tests.test_predict import _array_model

    model = stage_artifacts["export"] / "model.onnx"
    frame = pd.read_csv(small_data["test"], dtype=str, keep_default_na=False).head(5)
    with pytest.raises(sslops.DataError, match=r"img\.onnx is an image or series model; predict_f"):
        sslops.predict_frame(_array_model(tmp_path / "img.onnx"), frame)
    with pytest.raises(sslops.DataError, match="missing column 'age'"):
        sslops.predict_frame(model, frame.drop(columns="age"))
    with pytest.raises(sslops.DataError, match="expected a pandas DataFrame"):
        sslops.predict_frame(model, frame.to_dict())  # type: ignore[arg-type]
    with pytest.raises(sslops.DataError, match=r"expected sslops export's model\.onnx"):
        sslops.predict_frame(stage_artifacts["export"], frame)
    with pytest.raises(sslops.DataError, match="between 0 and 1") as raised:
        sslops.predict_frame(model, frame, threshold=1.5)
    messages = [str(raised.value)]
    bad = frame.copy()
    bad.loc[2, "age"] = "forty"
    for args in ((model, frame.drop(columns="age")), (stage_artifacts["export"], frame),
                 (model, bad)):  # fmt: skip
        with pytest.raises(sslops.DataError) as raised:
            sslops.predict_frame(*args)
        messages.append(str(raised.value))
    assert "non-numeric value" in messages[-1]
    # a notebook's errors name its arguments (model, frame, threshold), not the CLI's flags
    assert not [m for m in messages if "--" in m], messages


def test_read_metrics_from_the_artifact_or_a_run_folder(
    stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    metrics = sslops.read_metrics(stage_artifacts["evaluate"])
    assert 0.5 < metrics["models"]["ssl"]["accuracy"] <= 1
    assert sslops.read_metrics(stage_artifacts["evaluate"].parent) == metrics
    with pytest.raises(sslops.ArtifactError, match=r"no metrics\.json"):
        sslops.read_metrics(tmp_path)


def test_the_docs_stage_by_stage_example_runs(
    small_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/python-api.md's blocks as written (the config a sample of Adult), twice in one
    process: the second call into the same folders replaces the first's artifacts, and
    nothing the first left behind (seeds, torch threads) changes the second's numbers."""
    monkeypatch.chdir(tmp_path)
    config, stages, metrics, scoring = _blocks()[:4]
    runs = []
    for _ in range(2):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            namespace = _doc_namespace(small_yaml, [config, stages, metrics, scoring])
        assert (tmp_path / "work" / "audit" / "bundle" / "manifest.json").is_file()
        assert re.search(r"SSL accuracy 0\.\d{3}, ROC AUC 0\.\d{3}", out.getvalue())
        scores = namespace["scores"]
        assert len(scores) == 5 and scores["score"].between(0, 1).all()
        runs.append((namespace["metrics"]["models"], scores["score"].tolist()))
    assert runs[0] == runs[1]


def test_the_doc_config_is_the_fast_settings() -> None:
    """The doc's small settings are those the test suite runs (a subset of FAST_OVERRIDES),
    so its "minutes" holds."""
    namespace: dict[str, Any] = {}
    _run_block(_blocks()[0].split("cfg =")[0], namespace)
    from sslops.api import _override_strings

    fast = {text.split("=")[0] for text in FAST_OVERRIDES}
    doc = {text.split("=")[0] for text in _override_strings(namespace["fast"])}
    assert doc <= fast


@pytest.mark.slow
def test_the_docs_whole_pipeline_examples_run(
    small_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    namespace = _doc_namespace(small_yaml, [blocks[0], blocks[4]])
    summary = namespace["summary"]
    assert isinstance(summary, dict) and Path(summary["onnx"]["path"]).is_file()
    assert "[ok] audit" in capsys.readouterr().err  # task lines reach the caller's stderr
    _run_block(blocks[5], namespace)  # the same run again, silenced
    assert capsys.readouterr().err == ""
    assert namespace["summary"].keys() == summary.keys()


def test_training_stages_leave_the_callers_random_stream_alone(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """pretrain and finetune seed torch from the config, and gave the caller's global
    generator back reseeded: a notebook's own draws after a stage changed (found in the
    stop checklist's list of what was left). Their weights still follow the config's seed."""
    import torch

    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    pre = sslops.api.pretrain(small_config, stage_artifacts["prepare"], tmp_path / "pretrain")
    fine = sslops.api.finetune(small_config, stage_artifacts["prepare"], pre, tmp_path / "finetune")
    assert torch.equal(torch.rand(4), expected)
    for stage, folder in (("pretrain", pre), ("finetune", fine)):
        for file in sorted(p.name for p in folder.glob("*.safetensors")):
            assert (folder / file).read_bytes() == (stage_artifacts[stage] / file).read_bytes()


def test_evaluate_and_export_leave_the_callers_random_stream_alone(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """The docs say a stage leaves the process as it found it; evaluate and export drew the
    initial weights of the modules they load the fine-tuned weights into from the caller's
    global generator, so a notebook's next draw changed (found by the tests review)."""
    import torch

    torch.manual_seed(7)
    expected = torch.rand(4)
    for stage in (sslops.api.evaluate, sslops.api.export):
        torch.manual_seed(7)
        stage(small_config, stage_artifacts["prepare"], stage_artifacts["finetune"],
              tmp_path / stage.__name__)  # fmt: skip
        assert torch.equal(torch.rand(4), expected), stage.__name__


def _draw_each_stages_figures(out: Path) -> None:
    """One figure from each module that draws (plots, datacard, pareto, arrays, shadow)."""
    from types import SimpleNamespace

    from sslops.data.datacard import datacard_figures
    from sslops.finetune.pareto import Candidate, mark_front, plot_front, select
    from sslops.plots import line_plot
    from sslops.prepare.arrays import _figure
    from sslops.shadow.report import plot_agreement

    line_plot(out / "line.png", {"ssl": ([1.0, 2.0], [0.7, 0.8])}, "labels", "AUC", "efficiency")
    plot_agreement(out / "agreement.png", {"drift": {"drifted_batches": ["b2"]}, "agreement": {
        "overall": 0.9, "by_batch": {"b1": {"agreement": 0.95}, "b2": {"agreement": 0.8}}}})  # fmt: skip
    candidates = [Candidate("ssl", "none", 0.0, 0.85, {"dp": 0.2}),
                  Candidate("a", "penalty", 0.0, 0.83, {"dp": 0.01})]  # fmt: skip
    mark_front(candidates, "dp")
    plot_front(out / "front.png", candidates, "dp", 0.02, select(candidates, "dp", 0.02)[0])
    datacard_figures({"sensitive_groups_train": {"sex": [{"group": "F", "positive_rate": 0.1}]},
                      "missing_share_train": {"age": 0.2}}, out)  # fmt: skip
    _figure(SimpleNamespace(modality="timeseries"), np.sin(np.arange(40.0)).reshape(2, 20),  # type: ignore[arg-type]
            out / "samples.png")  # fmt: skip


def test_figures_do_not_depend_on_the_programs_matplotlib_settings(tmp_path: Path) -> None:
    """The figures took the program's rcParams (a style, a dpi, a matplotlibrc), so their
    bytes, which the audit bundle compares, depended on it (found by the order review)."""
    import matplotlib

    pngs = {}
    for name, settings in (("as set", {}), ("program's", {"savefig.dpi": 30, "font.size": 20,
                                                          "axes.facecolor": "black"})):  # fmt: skip
        (tmp_path / name).mkdir()
        with matplotlib.rc_context(settings):
            _draw_each_stages_figures(tmp_path / name)
        pngs[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name).glob("*.png"))}
    assert len(pngs["as set"]) == 6
    assert pngs["program's"] == pngs["as set"]


def test_drawing_leaves_the_programs_matplotlib_backend_and_settings_alone() -> None:
    """Importing sslops.plots (any stage that draws) called matplotlib.use("Agg"), so a
    notebook's inline backend was switched off for the rest of the session (found by the
    order review). In a fresh interpreter: a backend and rcParams the program set stay set;
    with none set, none is picked (no pyplot)."""
    code = """
import sys, tempfile
from pathlib import Path
import matplotlib
from sslops.plots import line_plot
from sslops.shadow.report import plot_agreement
def settings():  # reading rcParams["backend"] unset would pick one (importing pyplot)
    return {k: matplotlib.rcParams[k] for k in matplotlib.rcParams if k != "backend"}
with tempfile.TemporaryDirectory() as out:
    before = settings()
    line_plot(Path(out) / "a.png", {"s": ([1.0, 2.0], [0.7, 0.8])}, "x", "y", "t")
    print(before == settings(), "matplotlib.pyplot" in sys.modules)
    matplotlib.use("svg")
    matplotlib.rcParams.update({"savefig.dpi": 30, "font.size": 20})
    before = settings()
    plot_agreement(Path(out) / "b.png", {"drift": {"drifted_batches": []}, "agreement": {
        "overall": 0.9, "by_batch": {"b1": {"agreement": 0.95}}}})
    print(before == settings(), matplotlib.get_backend())
"""
    printed, _ = fresh_interpreter_loads(code, set())
    assert printed == "True False\nTrue svg"
