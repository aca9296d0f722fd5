"""The CLI on a machine that is not the developer's: paths with accents, spaces, ``~`` or
bytes that are not UTF-8, an ASCII locale, a run started from another folder. Each case
either works as on the developer's machine or ends with one error line and no output."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sslops.data.readers import resolve_path, resolve_sources
from sslops.errors import DataError
from tests.conftest import ROOT, small_config_dict


def _prepare(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sslops", "prepare", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)  # fmt: skip


@pytest.fixture
def config_file(small_data: dict[str, Path], tmp_path: Path) -> Path:
    path = tmp_path / "small config.yaml"
    path.write_text(yaml.safe_dump(small_config_dict(small_data)), encoding="utf-8")
    return path


def _ascii_locale(cli_env: dict[str, str]) -> dict[str, str]:
    """LANG=C as Python sees it when neither its UTF-8 mode nor locale coercion steps in."""
    env = {k: v for k, v in cli_env.items() if k != "PYTHONIOENCODING" and not k.startswith("LC_")}
    env |= {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    probe = [sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"]
    if subprocess.run(probe, capture_output=True, text=True, env=env).stdout.strip() != "ascii":
        pytest.skip("this platform reads file names as UTF-8 whatever the locale")
    return env


def test_an_ascii_stdout_prints_a_non_ascii_folder_escaped(
    config_file: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """The stage's last line named the folder with print(): under PYTHONIOENCODING=ascii (or an
    ASCII locale) it raised UnicodeEncodeError, exit 1, after the artifact was written."""
    out = tmp_path / "données ü" / "prepare"
    done = _prepare("--config", str(config_file), "--out", str(out),
                    env={**cli_env, "PYTHONIOENCODING": "ascii"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    escaped = str(out).encode("ascii", "backslashreplace").decode("ascii")
    assert done.stdout == f"prepare: wrote {escaped}\n"
    assert (out / "meta.json").is_file()


def test_a_folder_name_in_latin1_bytes_is_one_error_and_no_output(
    config_file: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A folder copied from an older system keeps its Latin-1 name; Python holds the byte that
    is not UTF-8 as a surrogate, which pyarrow refused with a traceback."""
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    try:
        os.mkdir(folder)
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    out = os.fsdecode(folder + b"/prepare")
    done = _prepare("--config", str(config_file), "--out", out, env=cli_env)
    assert done.returncode == 2
    assert done.stderr == (
        "error: the file or folder name b'caf\\xe9' is not UTF-8 text; rename it with UTF-8 "
        "characters (e.g. convmv -f latin1 -t utf-8 --notest NAME)\n"
    )
    assert os.listdir(folder) == []


def test_an_ascii_locale_refuses_a_non_ascii_path_in_one_line(
    config_file: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    env = _ascii_locale(cli_env)
    folder = tmp_path / "données"
    folder.mkdir()
    done = _prepare("--config", str(config_file), "--out", str(folder / "prepare"), env=env)
    assert done.returncode == 2
    assert done.stderr == (
        "error: the file or folder name b'donn\\xc3\\xa9es' cannot be used under this locale, "
        "whose file names are ascii; run under a UTF-8 locale (LANG=C.UTF-8) or with "
        "PYTHONUTF8=1\n"
    )
    assert list(folder.iterdir()) == []


def test_a_tilde_in_config_and_out_is_the_home_folder(
    config_file: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """``--out=~/x`` reaches sslops unexpanded (the shell expands only a word's leading ``~``):
    it made a folder named ``~`` in the working directory and then failed in pyarrow, which
    expands it; ``--config=~/x`` was not found. Data paths already expanded ``~``."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "c.yaml").write_bytes(config_file.read_bytes())
    env = {**cli_env, "HOME": str(home)}
    done = _prepare("--config=~/c.yaml", "--out=~/runs/prepare", env=env, cwd=work)
    assert done.returncode == 0, done.stderr
    assert (home / "runs" / "prepare" / "meta.json").is_file()
    assert list(work.iterdir()) == []


def test_a_relative_data_path_not_found_names_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative data paths are read from the working directory, not the config's folder: a
    run started elsewhere is told which folder was looked in."""
    monkeypatch.chdir(tmp_path)
    where = f"relative to the working directory {tmp_path}"
    with pytest.raises(DataError, match=rf"^data.train: file not found: train.csv \({where}\)$"):
        resolve_sources("train.csv", "data.train")
    with pytest.raises(DataError, match=rf"^data.test: file not found: t.csv \({where}\)$"):
        resolve_path("t.csv", "data.test")
    with pytest.raises(DataError, match=r"^data.test: file not found: /nowhere/t.csv$"):
        resolve_path("/nowhere/t.csv", "data.test")


def test_the_run_summary_names_the_final_folder_when_its_name_has_an_accent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sslops run --out 'runs/é'`` printed and recorded in summary.json the ONNX model and
    the bundle under the deleted ``.é.partial-*`` staging folder: the paths were replaced in
    the summary's JSON text, where ``é`` is written ``\\u00e9``."""
    from sslops.config import load_config
    from sslops.pipeline import local

    def pipeline_ran(pipeline: object, cfg: object, log: Path, kept: Path) -> dict[str, object]:
        (log.parent / "kfp").mkdir()
        return {}

    def summary_of(run_dir: Path) -> dict[str, object]:
        bundle = run_dir / "audit" / "bundle"
        return {"onnx": {"path": str(bundle / "model.onnx")}, "audit": {"paths": [str(bundle)]}}

    monkeypatch.setattr("kfp.local.init", lambda **_: None)
    monkeypatch.setattr(local, "_run_pipeline", pipeline_ran)
    monkeypatch.setattr(local, "_collect", lambda root, staging: None)
    monkeypatch.setattr(local, "build_summary", summary_of)
    out = tmp_path / "runs" / 'données "ü"'
    out.parent.mkdir()
    summary = local.run_local(load_config(ROOT / "configs" / "adult.yaml", []), out)
    bundle = out / "audit" / "bundle"
    assert summary == {
        "onnx": {"path": str(bundle / "model.onnx")},
        "audit": {"paths": [str(bundle)]},
        "stages": {},
    }
    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == summary


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["022", "027", "077"])
def test_every_file_of_an_artifact_gets_the_umask_s_mode(tmp_path: Path, umask: int) -> None:
    """safetensors writes its file 0600 whatever the umask: the weights alone were unreadable
    to the group (or the next KFP pod's user) that could read every other file."""
    import torch
    from safetensors.torch import save_file

    from sslops.artifacts import write_artifact

    previous = os.umask(umask)
    try:
        with write_artifact(tmp_path / "pretrain", "pretrain", {}) as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "encoder.safetensors"))
            (tmp / "history.json").write_text("[]\n", encoding="utf-8")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "pretrain").iterdir()}
    assert modes == dict.fromkeys(
        ("encoder.safetensors", "history.json", "meta.json"), 0o666 & ~umask
    )


def test_an_unwritable_home_adds_no_matplotlib_warning(
    config_file: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """With HOME unwritable (a CI runner, a pod under an arbitrary user id) matplotlib warned
    twice on stderr per process ("mkdir -p failed …", "it is highly recommended to set the
    MPLCONFIGDIR …"); the temporary folder it falls back to is now given it quietly."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    unwritable = str(home) if not os.access(home, os.W_OK) else "/proc/sslops-no-home"
    env = {k: v for k, v in cli_env.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME")}
    out = tmp_path / "prepare"
    done = _prepare(
        "--config", str(config_file), "--out", str(out), env={**env, "HOME": unwritable}
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (out / "datacard_groups.png").is_file()


def test_the_run_summary_prints_paths_as_they_are_and_quoted_to_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The end of ``sslops run`` went through rich markup, so 'runs/[v2]' was printed as
    'runs/' (and '[/x]' raised MarkupError), and its 'Score rows' command split a folder with
    a space into two arguments."""
    from sslops.cli import _print_summary

    out = tmp_path / "runs [v2]" / "a[/x]"
    (out / "prepare").mkdir(parents=True)
    (out / "prepare" / "encoding.json").write_text("{}", encoding="utf-8")
    model = str(out / "audit" / "bundle" / "model.onnx")
    scores = dict.fromkeys(("accuracy", "roc_auc", "dp_difference", "eo_difference"), 0.5)
    summary = {
        "sensitive": "sex[1]", "ssl": scores, "mitigated": scores, "baseline": scores,
        "onnx": {"path": model, "max_abs_diff": 1e-6}, "audit": {"path": str(out / "audit")},
    }  # fmt: skip
    _print_summary(summary, out, Path("my configs") / "loans [2].yaml")
    printed = capsys.readouterr().out
    assert " ".join(f"ONNX model: {model} (max".split()) in " ".join(printed.split())
    assert "fairness for 'sex[1]'" in printed
    command = next(line for line in printed.splitlines() if line.startswith("Score rows:"))
    assert shlex.split(command)[2:] == [
        "sslops", "predict", "--model", model, "--data", "NEW.csv", "--out", "predictions.csv",
        "--config", "my configs/loans [2].yaml",
    ]  # fmt: skip
