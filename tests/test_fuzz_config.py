"""Generated YAML values and ``--set`` overrides against the config loader.

Every value goes where a config author could put it: at any key of the schema (or an unknown
one), as YAML text that PyYAML reads by its own rules (dates, tags, sexagesimal and prefixed
numbers, huge integers, aliases). The loader must give a :class:`Config` that survives the JSON
round trip KFP and DVC make, or one :class:`ConfigError` naming the key or the line; never
another exception. ``tests/reliability/test_fuzz_inputs.py`` drives the CLI with values
``yaml.safe_dump`` writes (always quoted where YAML would read them otherwise); these are the
values a person types.

Derandomized (tests/fuzzing.py: ``SSLOPS_FUZZ_RANDOM=1`` / ``SSLOPS_FUZZ_SCALE`` draw more).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from sslops.config import config_from_json, load_config
from sslops.errors import ConfigError
from tests.conftest import ROOT
from tests.fuzzing import fuzz, leaf_keys

BASE = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text(encoding="utf-8"))


KEYS = leaf_keys()
_TAGS = ["int", "float", "bool", "null", "str", "timestamp", "binary", "set", "omap", "pairs",
         "seq", "map", "merge", "value", "python/name:os.system", "python/object/apply:os.system"]  # fmt: skip
_WORDS = st.sampled_from(["", "x", "1", "1e3", "0x", "1.5", "[1]", "{a: 1}", "2001-02-30", "~"])
_DIGITS = st.text("0123456789abcdefxo_:+-.", min_size=1, max_size=8)

# What a person may type after ``key:``; YAML reads most of these as something else than text.
TOKENS = st.one_of(
    st.builds("{:04d}-{:02d}-{:02d}".format, st.integers(0, 9999), st.integers(0, 99),
              st.integers(0, 99)),
    st.builds("{}T{:02d}:{:02d}:{:02d}Z".format, st.just("2024-01-01"), st.integers(0, 99),
              st.integers(0, 99), st.integers(0, 99)),
    st.builds("!!{} {}".format, st.sampled_from(_TAGS), _WORDS | _DIGITS),
    st.builds("{}{}".format, st.sampled_from(["0x", "0o", "0b", "0", "-0x", "+", ".", "1_"]), _DIGITS),
    st.integers(4000, 6000).map(lambda n: "9" * n),
    st.integers().map(str),
    st.floats().map(repr),
    st.sampled_from([".nan", ".NaN", ".inf", "-.Inf", "1.0e400", "1e400", "190:20:30", "-1:0",
                     "&a 1", "*a", "[*a]", "&a [*a]", "{<<: *a}", "[", "{a: [}", ">50K", "|",
                     "%x", "@x", "`x", "? x", "- a", "!x y", "!<tag:x> y", "'it''s'", '"\\x"']),
    st.text(max_size=12).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.text(st.characters(exclude_characters="\n\r"), max_size=12),
)  # fmt: skip
PLACE = st.sampled_from(KEYS) | st.sampled_from(["data.extra", "nope", "prepare.pii.x"])


def config_text(key: str, token: str) -> str:
    """The adult config with ``token`` written, as typed, as the value of ``key``."""
    raw: dict[str, Any] = yaml.safe_load(yaml.safe_dump(BASE))
    node = raw
    *sections, leaf = key.split(".")
    for part in sections:
        child = node.get(part)
        node = node.setdefault(part, {}) if not isinstance(child, dict) else child
    node[leaf] = "__FUZZED__"
    return yaml.safe_dump(raw, width=10**6).replace("__FUZZED__", token)


def check_loaded(key: str, load: Any) -> None:
    """A Config that survives the JSON round trip, or one ConfigError naming the key (its
    last part: a cross-key rule names it dotted in its own words) or the YAML line."""
    try:
        cfg = load()
    except ConfigError as exc:
        message = str(exc)
        assert message.strip(), key
        leaf = key.rsplit(".", 1)[-1]
        assert leaf in message or "line " in message or "--set" in message, (key, message)
    else:
        assert config_from_json(cfg.to_json()) == cfg


@fuzz(200)
@given(key=PLACE, token=TOKENS)
@example(key="seed", token="2001-13-01")  # month 13: PyYAML raised ValueError
@example(key="data.positive", token="2024-02-30")  # day 30 of February: ValueError
@example(key="pretrain.epochs", token="9" * 5000)  # over Python's int digit limit: ValueError
@example(key="seed", token="!!timestamp x")  # AttributeError inside PyYAML
@example(key="seed", token="!!int 1e3")
@example(key="finetune.label_fraction", token="!!float abc")
@example(key="seed", token="!!int")  # IndexError inside PyYAML
@example(key="seed", token="!!bool")  # KeyError inside PyYAML
@example(key="seed", token="!!map 0")  # the duplicate-key check iterated a scalar: ValueError
def test_any_typed_value_at_any_key_loads_or_names_the_key(
    key: str, token: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-config.yaml"  # rewritten by each case
    path.write_text(config_text(key, token), encoding="utf-8")
    check_loaded(key, lambda: load_config(path))


@fuzz(200)
@given(key=PLACE, token=TOKENS)
@example(key="seed", token="!!set :")  # an unhashable key: TypeError in the duplicate-key check
def test_any_typed_override_loads_or_names_the_key(key: str, token: str) -> None:
    config = ROOT / "configs" / "adult.yaml"
    check_loaded(key, lambda: load_config(config, [f"{key}={token}"]))


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("2001-13-01", "cannot read '2001-13-01' as YAML type 'timestamp' (month must be in 1..12)"),
        ("9" * 5000, "cannot read '9999999999999999999999999999999999999... (5000 characters)' "
                     "as YAML type 'int'"),
        ("!!int 1e3", "cannot read '1e3' as YAML type 'int'"),
        ("!!int", "cannot read '' as YAML type 'int' (string index out of range)"),
        ("!!timestamp x", "cannot read 'x' as YAML type 'timestamp'"),
    ],
)  # fmt: skip
def test_a_value_yaml_cannot_construct_is_a_config_error_at_its_line(
    token: str, expected: str, tmp_path: Path
) -> None:
    """PyYAML's scalar readers raised ValueError/AttributeError through load_config (a
    traceback from ``sslops config``); found by the fuzz review."""
    path = tmp_path / "config.yaml"
    path.write_text(f"seed: {token}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"config file {path} is not valid YAML: {expected}"), message
    assert "quote it to keep it as text at line 1, column 7" in message, message


def test_a_control_character_is_named_at_its_line_and_column(tmp_path: Path) -> None:
    """PyYAML names the character's offset in the file ("position 680"); the error names its
    line and column (found by the fuzz review)."""
    path = tmp_path / "config.yaml"
    path.write_text('seed: 1\ndata:\n  label: "a\x1fb"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"character U\+001F at line 3, column 12 is not allowed"):
        load_config(path)
