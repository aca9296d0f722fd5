"""Bad input found by reading the raise sites (the errmsg review): each is refused through
the command line with one line that names the key or file and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslops.cli import main
from tests.conftest import ROOT

ADULT = str(ROOT / "configs" / "adult.yaml")


def _error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one line `sslops ARGS` prints on stderr; exit status 2, nothing on stdout."""
    assert main(list(args)) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_fairness_column_outside_data_sensitive_is_refused_by_the_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A table's finetune.fairness.sensitive naming no data.sensitive column passed `sslops
    config` and failed only in finetune, after prepare and pretraining."""
    line = _error(capsys, "config", "--config", ADULT,
                  "--set", "finetune.fairness.sensitive=[sex, zzz]")  # fmt: skip
    assert "finetune.fairness.sensitive ['zzz'] must also be listed in data.sensitive" in line
    assert "(sex, race)" in line
    assert main(["config", "--config", ADULT, "--set", "finetune.fairness.sensitive=[race]"]) == 0


@pytest.mark.parametrize("key", ["sensitive", "text", "identifiers", "categorical"])
def test_a_column_listed_twice_in_one_role_is_refused(
    key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """data.sensitive [sex, race, sex] was accepted and carried into the prepared schema
    twice (sex reported, and crossed, with itself)."""
    columns = "[sex, race, sex]" if key == "sensitive" else "[fnlwgt, fnlwgt]"
    twice = "'sex'" if key == "sensitive" else "'fnlwgt'"
    line = _error(capsys, "config", "--config", ADULT, "--set", f"data.{key}={columns}")
    assert f"data.{key} lists {twice} more than once; expected each column once" in line


def test_a_model_file_that_is_not_onnx_says_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, rows, out = tmp_path / "model.onnx", tmp_path / "rows.csv", tmp_path / "p.csv"
    model.write_text("age,income\n40,>50K\n")  # a CSV given as the model
    rows.write_text("age\n40\n")
    line = _error(capsys, "predict", "--model", str(model), "--data", str(rows),
                  "--out", str(out))  # fmt: skip
    assert f"--model {model}: not a readable ONNX model (" in line
    assert line.endswith("expected an ONNX model file, e.g. sslops export's model.onnx")
    assert not out.exists()


@pytest.mark.parametrize("command", ["config", "run"])
def test_a_signing_command_with_an_unclosed_quote_is_refused_by_the_config(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """shlex's ValueError ("No closing quotation") ended `sslops run` in a traceback."""
    out = ["--out", str(tmp_path / "run")] if command == "run" else []
    line = _error(capsys, command, "--config", ADULT, *out,
                  "--set", "audit.signing.command=kms-sign --key 'prod")  # fmt: skip
    assert line == (
        "error: config key 'audit.signing.command': cannot be split into words (No closing "
        "quotation); expected a command line as a shell reads it, e.g. 'kms-sign --key prod' "
        '(quote a word with spaces) (got "kms-sign --key \'prod")'
    )
    assert not (tmp_path / "run").exists()


def test_a_sensitive_column_also_listed_as_text_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """data.text=[sex] with data.sensitive=[sex] was prepared without a word, and sex was
    silently no longer a model input (sensitive_as_features: true)."""
    line = _error(capsys, "config", "--config", ADULT, "--set", "data.text=[sex]")
    assert line == (
        "error: data.sensitive columns ['sex'] are also listed in data.text; "
        "a sensitive column holds groups (read as categories), not free text: list it in one only"
    )
