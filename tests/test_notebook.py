"""What a notebook session keeps after calling sslops (docs/python-api.md, "In a notebook").
Found by the notebook review, running the API in a Jupyter kernel through nbclient: export
(onnxruntime's quantizer) and ``sslops.run`` (kfp.local) left a stderr handler on the root
logger, so the notebook's own ``logging.basicConfig(...)`` afterwards did nothing; an
interrupt that reached the kernel alone left ``sslops.run``'s running task behind.

Each check runs without Jupyter (CI has no ipykernel); the same checks in a real kernel run
where ipykernel and nbclient are importable, and skip elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import sslops
from sslops.config import Config


def test_a_stage_leaves_the_root_logger_as_it_found_it(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A notebook's root logger has no handler (pytest's has its own: taken off here). The
    quantizer's ``logging.warning`` ran ``logging.basicConfig()``: a handler stayed."""
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.WARNING)
    sslops.api.export(small_config, stage_artifacts["prepare"], stage_artifacts["finetune"],
                      tmp_path / "export")  # fmt: skip
    assert logging.root.handlers == []
    assert logging.root.level == logging.WARNING


def test_run_leaves_the_root_logger_as_it_found_it(
    small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kfp.local logs "Cleaned up workspace" with the module-level ``logging.info`` as a
    pipeline ends, outside its own logging set-up: ``logging.basicConfig()`` ran. The whole
    pipeline takes minutes, so the run here only logs as kfp.local does; the test in a
    kernel below runs it for real where Jupyter is installed."""
    import sslops.pipeline.local

    def logs_as_kfp_local_does(cfg: Config, out: Path) -> dict[str, str]:
        logging.info("Cleaned up workspace: %s", out)
        return {"out": str(out)}

    monkeypatch.setattr(sslops.pipeline.local, "run_local", logs_as_kfp_local_does)
    monkeypatch.setattr(logging.root, "handlers", [])
    assert sslops.run(small_config, tmp_path / "run") == {"out": str(tmp_path / "run")}
    assert logging.root.handlers == []


def test_a_stage_gives_back_a_handler_the_program_set(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The program's own handler and level stay; nothing is added beside them."""
    mine = logging.NullHandler()
    monkeypatch.setattr(logging.root, "handlers", [mine])
    monkeypatch.setattr(logging.root, "level", logging.DEBUG)
    sslops.api.evaluate(small_config, stage_artifacts["prepare"], stage_artifacts["finetune"],
                        tmp_path / "evaluate")  # fmt: skip
    assert logging.root.handlers == [mine]
    assert logging.root.level == logging.DEBUG


def _run_notebook(cells: list[str], folder: Path) -> list[dict[str, str]]:
    """Run ``cells`` in a Python kernel (this interpreter's ipykernel); each cell's outputs
    as {"stdout": ..., "stderr": ..., "error": ...}."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(code) for code in cells]
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})  # fmt: skip
    client.execute()
    shown = []
    for cell in notebook.cells:
        out: dict[str, str] = {"stdout": "", "stderr": "", "error": ""}
        for output in cell.outputs:
            if output.output_type == "stream":
                out[output.name] += output.text
            elif output.output_type == "error":
                out["error"] += f"{output.ename}: {output.evalue}"
        shown.append(out)
    return shown


def test_in_a_kernel_the_notebooks_logging_set_up_works_after_a_stage(
    small_config: Config, stage_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """In a Jupyter kernel (whose thread runs an asyncio loop, which the stages do not mind):
    after export, ``logging.basicConfig`` sets the notebook's logging up."""
    artifacts = {k: str(v) for k, v in stage_artifacts.items()}
    cells = [
        "import asyncio, json, logging\nimport sslops\n"
        "print(asyncio.get_running_loop().is_running(), logging.root.handlers)",
        f"cfg = json.loads({small_config.to_json()!r})\n"
        f"a = {artifacts!r}\n"
        "sslops.api.export(cfg, a['prepare'], a['finetune'], 'export')",
        "print(logging.root.handlers)\n"
        "logging.basicConfig(level=logging.INFO, format='mine: %(message)s')\n"
        "logging.getLogger('notebook').info('shown')",
    ]
    shown = _run_notebook(cells, tmp_path)
    assert shown[0]["stdout"] == "True []\n"
    assert shown[1]["error"] == ""
    assert shown[2]["stdout"] == "[]\n"
    assert shown[2]["stderr"] == "mine: shown\n"


def test_an_interrupted_run_stops_its_task_and_no_other_child(
    small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel interrupted alone (a frontend's stop button signalling its process, or
    ``kill -INT``): KeyboardInterrupt reached ``sslops.run`` while kfp.local waited for a
    task, and the task ran on as an orphan, writing into the removed staging folder. Here the
    pipeline starts a task process as kfp.local does (it inherits the run's environment)
    and is interrupted; the notebook's own child, started before the run, runs on."""
    import subprocess
    import sys

    import sslops.pipeline.ssl_pipeline

    sleep = [sys.executable, "-c", "import time; time.sleep(300)"]
    tasks: list[subprocess.Popen[bytes]] = []

    def interrupted_while_a_task_runs(config_json: str) -> None:
        tasks.append(subprocess.Popen(sleep))
        raise KeyboardInterrupt

    monkeypatch.setattr(sslops.pipeline.ssl_pipeline, "ssl_pipeline",
                        interrupted_while_a_task_runs)  # fmt: skip
    notebooks_own = subprocess.Popen(sleep)
    try:
        with pytest.raises(KeyboardInterrupt):
            sslops.run(small_config, tmp_path / "run")
        assert tasks[0].wait(timeout=60) == -15  # SIGTERM; before: still running
        assert notebooks_own.poll() is None
    finally:
        for process in (*tasks, notebooks_own):
            process.kill()
            process.wait()
    assert not (tmp_path / "run").exists()
