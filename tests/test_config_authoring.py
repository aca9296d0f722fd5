"""Writing a config by hand: every key documented (docs/config.md, generated from the model),
the JSON Schema editors validate with, YAML mistakes a config author makes, and the resolved
config (``sslops config``) loading again as printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sslops.cli import main
from sslops.config import Config, load_config, read_yaml
from sslops.config_reference import MARKER, _sections, _walk, config_reference, config_schema
from sslops.errors import ConfigError
from tests.conftest import ROOT

TABLE = "data:\n  train: a.csv\n  label: y\n  positive: 1\n  sensitive: [s]\n"
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def sslops(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- every key is documented, and the reference is the model -----------------------------


def test_every_key_has_a_description() -> None:
    """A key without a description is a key docs/config.md cannot explain; a section may be
    described by its class docstring instead."""
    missing = []
    for prefix, model in _walk("", Config):
        for name, field in model.model_fields.items():
            sections = [m for _, m in _sections(field.annotation)]
            if not (field.description or (sections and sections[0].__doc__)):
                missing.append(prefix + name)
    assert missing == [], f"config keys without a description: {missing}"


def test_the_config_reference_is_generated_from_the_model() -> None:
    doc = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert MARKER in doc
    assert doc.split(MARKER, 1)[1].lstrip("\n") == config_reference(), (
        "docs/config.md is stale; regenerate: python -m sslops.config_reference docs/config.md"
    )


def test_the_reference_lists_every_key_once_with_its_default_and_range() -> None:
    reference = config_reference()
    keys = [line.split("`")[1] for line in reference.splitlines() if line.startswith("| `")]
    assert len(keys) == len(set(keys))
    for key in ("seed", "data.train", "finetune.fairness.boosted.folds",
                "audit.overrides.<gate>.justification", "platform.gpu_pool.tolerations[].key"):  # fmt: skip
        assert key in keys
    row = next(r for r in reference.splitlines() if r.startswith("| `finetune.label_fraction`"))
    assert "float (> 0, <= 1)" in row and "`0.01`" in row
    row = next(r for r in reference.splitlines() if r.startswith("| `data.format`"))
    assert "`csv` / `parquet`" in row


# --- the JSON Schema editors read ---------------------------------------------------------


@pytest.mark.parametrize("path", [*CONFIGS, ROOT / "params.yaml"], ids=lambda p: p.name)
def test_shipped_configs_validate_against_the_schema(path: Path) -> None:
    jsonschema.Draft202012Validator(config_schema()).validate(read_yaml(path.read_text()))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"data": {"labell": "y"}}, "labell"),
        ({"data": {"format": "parket"}}, "parket"),
        ({"finetune": {"label_fraction": 1.5}}, "1.5"),
        ({"pretrain": {"epochs": True}}, "True"),
    ],
)
def test_the_schema_refuses_what_the_config_refuses(change: dict[str, Any], where: str) -> None:
    raw = read_yaml(TABLE)
    for section, values in change.items():
        raw.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError):
        load_config(None, _as_sets(raw))
    errors = list(jsonschema.Draft202012Validator(config_schema()).iter_errors(raw))
    assert errors and where in " ".join(e.message for e in errors)


def _as_sets(raw: dict[str, Any]) -> list[str]:
    return [f"{s}.{k}={json.dumps(v)}" for s, values in raw.items() for k, v in values.items()]


def test_config_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = sslops(capsys, "config", "--schema")
    assert (code, err) == (0, "")
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == config_schema() and schema["additionalProperties"] is False
    code, out, err = sslops(capsys, "config", "--schema", "--config", str(CONFIGS[0]))
    assert (code, out) == (2, "") and "takes no --config" in err


# --- YAML mistakes ------------------------------------------------------------------------


def test_a_key_written_twice_is_an_error_naming_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, TABLE + "seed: 1\nseed: 2\n")
    code, out, err = sslops(capsys, "config", "--config", path)
    assert (code, out) == (2, "")
    assert "duplicate key 'seed' (first on line 6)" in err and "at line 7" in err
    assert "<unicode string>" not in err  # the file is named once, not PyYAML's stand-in
    nested = config_file(tmp_path, TABLE.replace("  label: y\n", "  label: y\n  label: z\n"))
    with pytest.raises(ConfigError, match="duplicate key 'label'"):
        load_config(nested)


def test_merge_keys_still_override(tmp_path: Path) -> None:
    text = TABLE + "pretrain: &tiny\n  epochs: 2\n  batch_size: 64\nfinetune:\n  full:\n" \
        "    <<: *tiny\n    epochs: 3\n"  # fmt: skip
    cfg = load_config(config_file(tmp_path, text))
    assert (cfg.finetune.full.epochs, cfg.finetune.full.batch_size) == (3, 64)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty; config key 'data' is required"),
        ("# every line commented out\n", "is empty; config key 'data' is required"),
        ("- a\n- b\n", "expected a mapping of config keys (seed, data, prepare, ...) at the "
                       "top level, got a list"),
        (TABLE + "prepare:\n  # validation_fraction: 0.2\n",
         "config key 'prepare' is empty (null); expected a mapping of its keys "
         "(validation_fraction, test_fraction,"),
        (TABLE + "prepare: [0.2]\n", "config key 'prepare' is a section, not [0.2]"),
        (TABLE + "finetune:\n  fairness: equalized_odds\n",
         "'finetune.fairness' is a section, not 'equalized_odds'"),
    ],
)  # fmt: skip
def test_file_shape_mistakes_say_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    code, out, err = sslops(capsys, "config", "--config", config_file(tmp_path, text))
    assert (code, out) == (2, "")
    assert message in err
    assert "PrepareConfig" not in err and "instance of" not in err


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("data.format=parket", "(got 'parket'); did you mean 'parquet'?"),
        ("pretrain.precision=BF16", "did you mean 'bf16'?"),
        ("finetune.fairness.constraint=demographic-parity", "did you mean 'demographic_parity'?"),
        ("pretrain.fairness.probe=[logistic, hgbb]", "did you mean 'hgb'?"),
    ],
)
def test_a_misspelled_choice_suggests_the_close_one(override: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [*_as_sets(read_yaml(TABLE)), override])
    assert suggestion in str(info.value)


def test_a_choice_nothing_resembles_gets_no_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [*_as_sets(read_yaml(TABLE)), "data.format=xlsx"])
    assert "did you mean" not in str(info.value) and "'csv', 'parquet'" in str(info.value)


def test_an_empty_key_between_dots_is_named() -> None:
    with pytest.raises(ConfigError, match=r"--set 'data\.\.label=y': empty key between dots"):
        load_config(None, ["data..label=y"])


@pytest.mark.parametrize(
    ("override", "value"),
    [
        ("finetune.label_fraction=0.05", 0.05),
        ("finetune.label_fraction=5e-2", 0.05),
        ("pretrain.epochs=7", 7),
        ("data.sensitive=[s, t]", ["s", "t"]),
        ("data.test=null", None),
        ("audit.owner=2024", "2024"),
        ("finetune.fairness.boosted=null", None),
    ],
)
def test_set_coerces_each_value_to_the_keys_type(override: str, value: Any) -> None:
    cfg = load_config(None, [*_as_sets(read_yaml(TABLE)), override])
    node: Any = cfg
    for part in override.split("=")[0].split("."):
        node = getattr(node, part)
    assert node == value


# --- the resolved config loads again --------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["modality=image", "data.positive=null", "data.sensitive=[ink]"],
        ["modality=timeseries", "data.positive=null", "data.sensitive=[amplitude]"],
        ["finetune.fairness.boosted=null", "evaluate.label_efficiency=null", "audit.title=yes"],
    ],
)
def test_config_output_loads_as_the_same_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str]
) -> None:
    """`sslops config` promises a params.yaml: its output, read back as a config file (and its
    --json output), is the same resolved config. An image config without pretrain.objective
    printed `objective: scarf`, which no image config may name."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    path = config_file(tmp_path, TABLE)
    code, printed, err = sslops(capsys, "config", "--config", path, *sets)
    assert (code, err) == (0, ""), err
    again = config_file(tmp_path, printed)
    code, reprinted, err = sslops(capsys, "config", "--config", again)
    assert (code, err) == (0, ""), err
    assert reprinted == printed
    code, as_json, _ = sslops(capsys, "config", "--config", path, "--json", *sets)
    assert load_config(config_file(tmp_path, as_json)).model_dump() == yaml.safe_load(printed)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_round_trip(path: Path) -> None:
    cfg = load_config(path)
    assert Config.model_validate(read_yaml(yaml.safe_dump(cfg.model_dump(mode="json")))) == cfg


def test_an_unset_objective_is_the_modalitys_first() -> None:
    base = ["data.train=x", "data.label=y"]
    assert load_config(None, [*base, "modality=image"]).pretrain.objective == "simclr"
    assert load_config(None, [*base, "modality=timeseries"]).pretrain.objective == "simclr"
    assert load_config(None, _as_sets(read_yaml(TABLE))).pretrain.objective == "scarf"
    with pytest.raises(ConfigError, match="'scarf' does not apply to modality 'image'"):
        load_config(None, [*base, "modality=image", "pretrain.objective=scarf"])


# --- ranges inside lists, non-finite numbers, keys under optional sections -----------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("evaluate.label_efficiency.fractions=[0.1, 1.5]",
         "'evaluate.label_efficiency.fractions[1]': Input should be less than or equal to 1"),
        ("evaluate.label_efficiency.fractions=[]", "at least 1 item"),
        ("finetune.fairness.penalties=[1, -5]",
         "'finetune.fairness.penalties[1]': Input should be greater than or equal to 0"),
        ("finetune.fairness.boosted.reductions=[-0.01]", "greater than or equal to 0"),
        ("pretrain.learning_rate=.inf", "'pretrain.learning_rate': Input should be a finite number"),
        ("kpi.costs.true_positive=.nan", "'kpi.costs.true_positive': Input should be a finite"),
        ("finetune.fairness.boosted.foldz=3",
         "(did you mean 'finetune.fairness.boosted.folds'?); allowed here: embedding, folds"),
        ("evaluate.label_efficiency.fraction=[0.1]",
         "did you mean 'evaluate.label_efficiency.fractions'?"),
        ("platform.cpu_pool.tolerations=[{key: a, efect: NoSchedule}]",
         "'platform.cpu_pool.tolerations[0].efect' (did you mean "
         "'platform.cpu_pool.tolerations[0].effect'?); allowed here: effect, key, operator"),
        ("finetune.fairness.boosted=3", "'finetune.fairness.boosted' is a section, not 3"),
    ],
)  # fmt: skip
def test_values_a_stage_cannot_use_are_refused_by_key_path(override: str, message: str) -> None:
    """A fraction of 1.5 on the curve, a negative penalty weight, `.nan` (which passes every
    range check) and `.inf` were accepted and reached the stages; a misspelled key under an
    optional section listed no allowed keys."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [*_as_sets(read_yaml(TABLE)), override])
    assert message in str(info.value)
