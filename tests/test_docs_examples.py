"""The README and docs/ say only what a newcomer can copy: every ``sslops`` command names a
command and flags that exist (a whole command in a code block parses), every config key they
name or ``--set`` is one, every ``make`` target is in the Makefile, every relative link and
anchor resolves, and every repository path exists. Cheap: nothing here runs a pipeline.
(docs/deploy.md and docs/security.md have more checks in tests/test_k8s_docs.py; the Python
API blocks run in tests/test_python_api.py.) Found by the docs review of session 22."""

from __future__ import annotations

import argparse
import re
import shlex
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from sslops.cli import build_parser
from sslops.config import Config, validate_config
from tests.conftest import ROOT
from tests.test_k8s_docs import _expand

DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "components").glob("*/README.md"),
     ROOT / "helm" / "sslops" / "README.md"]
)  # fmt: skip
IDS = [str(p.relative_to(ROOT)) for p in DOCS]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _prose(text: str) -> str:
    """The text outside fenced blocks, each inline code span on one line."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`]*`", lambda m: m[0].replace("\n", " "), text)


def _block_lines(text: str) -> list[str]:
    """The lines of every fenced block, continuation lines joined."""
    return [line.strip() for m in FENCE.finditer(text)
            for line in m[2].replace("\\\n", " ").splitlines()]  # fmt: skip


# --- commands and flags -------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _resolve(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The deepest (sub)command parser ``words`` name, and the words that named it."""
    parser, path = build_parser(), []
    for word in words:
        sub = _subcommands(parser).get(word)
        if sub is None:
            break
        parser, path = sub, [*path, word]
    return parser, path


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _block_commands(text: str) -> list[str]:
    """The lines of code blocks that run ``sslops`` (a shell prompt ``$ `` dropped)."""
    lines = [line.removeprefix("$ ") for line in _block_lines(text)]
    return [line for line in lines if line.startswith("sslops ")]


def _mentions(text: str) -> list[str]:
    """Every ``sslops <command> ...`` a reader sees: each line of a code block starting with
    it, and each inline code span starting with it, up to a comment."""
    spans = re.findall(r"`(sslops [^`]+)`", _prose(text))
    return [m.split(" #")[0] for m in [*spans, *_block_commands(text)]]


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_sslops_command_named_exists_with_its_flags(doc: Path) -> None:
    problems = []
    for mention in _mentions(doc.read_text(encoding="utf-8")):
        words = mention.split()[1:]
        if re.fullmatch(r"<\w+>|[\w-]+:", words[0]):  # sslops <stage>; an output's title
            continue
        parser, path = _resolve(words)
        if not path and not words[0].startswith("-"):  # sslops --version
            problems.append(f"{mention!r}: no command {words[0]!r}")
            continue
        unknown = sorted(set(re.findall(r"(?<![\w-])--[a-z][\w-]*", mention)) - _flags(parser))
        if unknown:
            problems.append(f"{mention!r}: {' '.join(['sslops', *path])!r} has no {unknown}")
    assert problems == [], doc


def _argv(line: str) -> list[str]:
    """A block's command line as the shell passes it, without ``sslops``: no comment, no pipe
    or redirection, no ``[--optional ...]`` placeholder group."""
    lexer = shlex.shlex(
        re.sub(r"(?<=\s)\[[^]]*\]", "", line), posix=True, punctuation_chars="|<>;&"
    )
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word[0] in "|<>;&":
            break
        words.append(word)
    return words[1:]


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_whole_commands_in_code_blocks_parse(doc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A command written out in a code block is one a reader pastes: it parses as written
    (required arguments and choices included), placeholders aside."""
    for line in _block_commands(doc.read_text(encoding="utf-8")):
        argv = _argv(line)
        if argv[0].endswith(":"):  # "sslops run: test split ..." is the run's output
            continue
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{doc.name}: {line!r} does not parse: {capsys.readouterr().err}")


def test_the_command_checks_catch_an_unknown_flag_or_command() -> None:
    text = "Run `sslops predict --model m.onnx --dta x.csv`.\n```bash\nsslops audit verfy b\n```\n"
    mentions = _mentions(text)
    assert mentions == ["sslops predict --model m.onnx --dta x.csv", "sslops audit verfy b"]
    parser, path = _resolve(mentions[0].split()[1:])
    assert path == ["predict"] and "--dta" not in _flags(parser)
    assert _resolve(mentions[1].split()[1:])[1] == ["audit"]
    assert _argv("sslops audit list --registry r/ [--json] | head > x  # c") == [
        "audit", "list", "--registry", "r/"]  # fmt: skip


# --- config keys ----------------------------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _config_keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, bool]:
    """Every dotted key, and whether any key below it is allowed (a free-form mapping)."""
    keys: dict[str, bool] = {}
    for name, field in model.model_fields.items():
        subs = _models(field.annotation)
        keys[prefix + name] = not subs and "dict" in str(field.annotation)
        for sub in subs:
            keys.update(_config_keys(sub, f"{prefix}{name}."))
    return keys


KEYS = _config_keys()
SECTIONS = sorted(k for k in KEYS if "." not in k)
# Inline spans that look like a config key and are something else.
NOT_CONFIG_KEYS = {
    "data.labell": "README: the example of a mistyped key and its error",
    "audit.min_accuracy": "upgrading.md: the example of a key moved in another version",
    "audit.path": "a summary.json key",
    "audit.filed": "a summary.json key",
    "audit.signed": "a summary.json key",
    "kpi.cost_verdict": "a shadow.json key",
}


def _is_key(key: str) -> bool:
    parts = key.split(".")
    return key in KEYS or any(KEYS.get(".".join(parts[:i])) for i in range(1, len(parts)))


def _keys_named(text: str) -> set[str]:
    """The keys of ``--set KEY=...`` in sslops commands and of ``--set-param KEY=...``
    (``dvc exp run``), and inline spans that are a key (alone, or followed by ``: value``,
    ``=value`` or a space)."""
    sections = "|".join(SECTIONS)
    spans = re.findall(r"`(--set[ =][^`]+)`", _prose(text))
    commands = [*_mentions(text), *spans, *re.findall(r".*--set-param.*", text)]
    named = {
        k for c in commands for k in re.findall(r"--set(?:-param)?[ =]'?([a-z_][a-z0-9_.]*)=", c)
    }
    for span in re.findall(r"`([^`\n]+)`", _prose(text)):
        match = re.fullmatch(rf"((?:{sections})\.[a-z_][\w.]*?)(?:[:= ].*)?", span)
        if match and not re.search(r"\.(md|json|html|yaml|py|png|csv)$", match[1]):
            named.add(match[1])
    return named - set(NOT_CONFIG_KEYS)


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_config_key_named_exists(doc: Path) -> None:
    unknown = sorted(k for k in _keys_named(doc.read_text(encoding="utf-8")) if not _is_key(k))
    assert unknown == [], f"{doc.name} names config keys sslops does not have: {unknown}"


def test_the_key_check_catches_a_wrong_key() -> None:
    text = (
        "Use `finetune.fairness.max_gapp` or `sslops run --set pretrain.epoch=2`; "
        "`prepare.pii.skip_columns`; `helm install --set securityContext.runAsUser=null`; "
        "`--set 'data.positive=[\"a\"]'`."
    )
    named = _keys_named(text)
    assert named == {
        "finetune.fairness.max_gapp", "pretrain.epoch", "prepare.pii.skip_columns", "data.positive"
    }  # fmt: skip
    assert [k for k in sorted(named) if not _is_key(k)] == [
        "finetune.fairness.max_gapp", "pretrain.epoch"]  # fmt: skip
    assert _is_key("platform.caching.prepare")  # below a free-form mapping


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merge(base[key], value) if both else value
    return merged


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_config_snippets_in_yaml_blocks_validate(doc: Path) -> None:
    """A ``yaml`` block whose top-level keys are config sections is a config excerpt a
    reader pastes into theirs: on top of configs/adult.yaml it validates."""
    base = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text(encoding="utf-8"))
    for match in FENCE.finditer(doc.read_text(encoding="utf-8")):
        snippet = yaml.safe_load(match[2]) if match[1] == "yaml" else None
        if isinstance(snippet, dict) and set(snippet) <= set(SECTIONS):
            validate_config(_merge(base, snippet))


# --- make targets, links, paths -------------------------------------------------------------


def _make_targets(text: str) -> set[str]:
    """``make X`` in inline code spans and in code blocks (comments aside)."""
    spans = re.findall(r"`(make [^`]+)`", _prose(text))
    lines = [line.split("#")[0] for line in _block_lines(text)]
    return {
        t for code in [*spans, *lines] for t in re.findall(r"(?<![\w-])make ([a-z][\w-]*)", code)
    }


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_make_target_named_exists(doc: Path) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w.-]+):", makefile, re.M))
    named = _make_targets(doc.read_text(encoding="utf-8"))
    assert sorted(named - targets) == [], f"{doc.name} names make targets that do not exist"


def test_the_make_check_reads_code_not_prose() -> None:
    text = "To make it, run `make demo`; then\n```bash\nmake lint && make tset  # make sure\n```\n"
    assert _make_targets(text) == {"demo", "lint", "tset"}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*]|\[([^]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", doc.read_text()), re.M):
        slug = _slug(heading)
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_relative_links_and_their_anchors_resolve(doc: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        checked = anchor and linked.suffix == ".md"
        if not linked.exists() or (checked and anchor not in _anchors(linked)):
            broken.append(target)
    assert broken == [], f"{doc.name} links to what does not exist: {broken}"


def test_the_anchor_of_a_heading_is_githubs() -> None:
    assert _slug("Batch scoring: `sslops predict` vs pandas + onnxruntime") == (
        "batch-scoring-sslops-predict-vs-pandas--onnxruntime")  # fmt: skip
    assert _slug("Only an approved model: `--registry`") == "only-an-approved-model---registry"
    assert _slug("4. The signing key and the audit registry") == (
        "4-the-signing-key-and-the-audit-registry")  # fmt: skip


PATH = re.compile(
    r"(?<![\w/.-])((?:benchmarks|components|configs|docs|helm|manifests|pipelines|scripts|src|"
    r"tests)/[\w./{},*-]+)"
)
# Paths that are not in the repository, on purpose.
NOT_REPOSITORY_PATHS = {
    "configs/prepare.json": "audit.md: a file inside the audit bundle",
    "manifests/overlays/eu": "reliability.md: the error for an overlay that does not exist",
}


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_repository_path_named_exists(doc: Path) -> None:
    named = {p for raw in PATH.findall(doc.read_text(encoding="utf-8")) for p in _expand(raw)}
    missing = sorted(p for p in named - set(NOT_REPOSITORY_PATHS) if not any(ROOT.glob(p)))
    assert missing == [], f"{doc.name} names paths that do not exist: {missing}"


def _help_own_data_command(epilog: str) -> str:
    """The own-data ``sslops run`` example of a help epilog, its continuation lines joined."""
    joined = re.sub(r"\\\n\s*", "", epilog)
    (line,) = [m.strip() for m in joined.splitlines() if "data.train=my.csv" in m]
    return line


def _own_data_commands() -> list[tuple[str, str]]:
    import sslops.cli as cli

    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Your own data", 1)[1]
    (line,) = _block_commands(section.split("\n## ", 1)[0])
    return [
        ("README", line),
        ("sslops --help", _help_own_data_command(cli.EXAMPLES)),
        ("sslops run --help", _help_own_data_command(cli.RUN_EXAMPLES)),
    ]


@pytest.mark.parametrize(
    ("where", "line"), _own_data_commands(), ids=["readme", "help", "run-help"]
)
def test_the_own_data_command_replaces_what_adult_yaml_says_of_adult(where: str, line: str) -> None:
    """The own-data command (README, and the help's examples) starts from configs/adult.yaml:
    run as written, it must not leave Adult's name on the model card and the registry entry,
    nor Adult's proxy columns (resolved, it kept the title "Income classifier (UCI Adult)"
    and adult-income, and the help's example named proxy columns its CSV does not have).
    Found by the newcomer review of session 24."""
    from functools import reduce

    from sslops.config import load_config

    args = build_parser().parse_args(_argv(line))
    assert args.command == "run" and str(args.config) == "configs/adult.yaml", where
    adult = load_config(ROOT / args.config)
    own = load_config(ROOT / args.config, args.overrides)
    adults = ("data.train", "data.label", "data.positive", "data.sensitive", "evaluate.proxies",
              "audit.title", "audit.model_name")  # fmt: skip
    kept = [
        k
        for k in adults
        if reduce(getattr, k.split("."), own) == reduce(getattr, k.split("."), adult)
    ]
    assert kept == [], where


# --- how long it takes ------------------------------------------------------------------------

DURATION = re.compile(r"\b\d+(?: to \d+)? minutes?\b")
# What the README has a newcomer run that takes minutes on 2 cores (MNIST about 16).
LONG_RUNS = ["make demo", "make test", "sslops run --config configs/mnist.yaml",
             "sslops run --config configs/gunpoint.yaml"]  # fmt: skip


def _how_long_said(text: str, command: str) -> str | None:
    """Where the first code-block line running ``command`` says how long it takes: its
    comment, or the paragraph right after its block; None when neither does."""
    for block in FENCE.finditer(text):
        for line in block[2].splitlines():
            if re.match(rf"{re.escape(command)}(?![\w-])", line):
                after = text[block.end() :].lstrip("\n").split("\n\n")[0]
                found = DURATION.search(line.partition("#")[2]) or DURATION.search(after)
                return found[0] if found else None
    return None


def test_the_readme_says_how_long_its_long_runs_take() -> None:
    """A newcomer learns before typing it that a command runs for minutes (MNIST ran 16 with
    no word of it in the README), and how long the first setup of .venv takes. Found by the
    newcomer review of session 24."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [command for command in LONG_RUNS if _how_long_said(readme, command) is None] == []
    two_commands = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert re.search(rf"Setup, once: {DURATION.pattern}", two_commands)


def test_the_how_long_check_reads_the_comment_or_the_next_paragraph() -> None:
    text = (
        "```bash\nmake test-slow  # an hour\nmake test   # the suite\nsslops run --config a.yaml\n"
        "```\n\nThis takes about 3 minutes.\n\nNot this: 9 minutes.\n\n"
        "```bash\nmake demo  # about 2 minutes\n```\n"
    )
    assert _how_long_said(text, "make demo") == "2 minutes"
    assert _how_long_said(text, "sslops run --config a.yaml") == "3 minutes"
    assert _how_long_said(text, "make test") == "3 minutes"  # not make test-slow's line
    assert (
        _how_long_said("```bash\nmake test  # the suite\n```\n\nIt passes.\n", "make test") is None
    )
    assert _how_long_said(text, "make lint") is None


# --- the Python block of docs/predict.md ------------------------------------------------------


def test_the_serving_example_in_predict_md_scores_as_sslops_predict(
    stage_artifacts: dict[str, Path], small_config: Config, small_data: dict[str, Path],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """docs/predict.md's plain-onnxruntime service, run as written (``model.onnx`` in the
    working folder, ``rows`` as csv.DictReader gives them), decides as ``sslops predict``
    and gives its scores to the written digit, messy cells included (tests/test_serving.py
    checks the spec itself on more of them)."""
    import csv
    import runpy

    import numpy as np
    import pandas as pd

    from sslops.predict import predict

    (block,) = [
        m[2] for m in FENCE.finditer((ROOT / "docs" / "predict.md").read_text()) if m[1] == "python"
    ]
    with open(small_data["test"], encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))[:200]
    rows[0].update({"workclass": "  PRIVATE ", "occupation": "?", "age": "inf"})
    rows[1].update({"hours-per-week": "\uff14\uff10", "native-country": "Atlantis"})
    data = tmp_path / "rows.csv"
    with open(data, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    model = stage_artifacts["export"] / "model.onnx"
    predict(model, data, tmp_path / "predictions.csv", small_config)
    written = pd.read_csv(tmp_path / "predictions.csv", dtype=str)

    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "model.onnx").write_bytes(model.read_bytes())
    monkeypatch.chdir(tmp_path / "service")
    (tmp_path / "service" / "block.py").write_text(block, encoding="utf-8")
    done = runpy.run_path("block.py", init_globals={"rows": rows})
    assert [f"{s:.9g}" for s in done["probability"].astype(np.float64)] == written["score"].tolist()
    assert done["decision"].astype(int).tolist() == written["label"].astype(int).tolist()


def test_the_extras_and_pins_the_readme_installs_are_pyprojects() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    extras = set(re.findall(r"pip install -e '\.\[(\w+)\]'", readme))
    assert extras and extras <= set(project["optional-dependencies"])
    pins = {p for p in project["dependencies"] if re.match(r"torch(vision)?==", p)}
    assert len(pins) == 2 and set(re.findall(r"torch(?:vision)?==[\d.]+\d", readme)) == pins


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_python_blocks_parse_and_their_imports_resolve(doc: Path) -> None:
    """Every ``python`` block is valid Python whose imports exist (the blocks that need data
    run elsewhere: docs/python-api.md in tests/test_python_api.py, predict.md above)."""
    import ast
    import importlib

    for match in FENCE.finditer(doc.read_text(encoding="utf-8")):
        if match[1] != "python":
            continue
        for node in ast.walk(ast.parse(match[2])):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                assert missing == [], f"{doc.name}: {node.module} has no {missing}"


def _resolves(name: str) -> bool:
    """``sslops.a.b.c``: the longest importable module, then attributes."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(found, attr):
                return False
            found = getattr(found, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_python_name_of_sslops_named_exists(doc: Path) -> None:
    """``sslops.shadow.scoring.iter_batches``, ``sslops.plots.OKABE_ITO``: a reader looks
    them up; each is a module or an attribute (``sslops.io`` is a Kubernetes label domain)."""
    names = set(re.findall(r"`(sslops(?:\.[A-Za-z_]\w*)+)", _prose(doc.read_text())))
    assert sorted(n for n in names - {"sslops.io"} if not _resolves(n)) == []
    assert not _resolves("sslops.shadow.scoring.no_such_function")


def test_the_readme_console_shows_the_demo_configs_label_count(tmp_path: Path) -> None:
    """The README's console example of ``make demo`` names the labels the demo trains on
    (``ssl (ensemble, N labels)``, ``1% of the labels (N)``): N is what ``configs/adult.yaml``
    draws from the training split that prepare makes today, which moved from 258 to 253 when
    prepare stopped comparing the label (session 26; found by the stale-figures review of
    session 27). Prepare alone on the packaged Adult files: a few seconds."""
    from sslops.config import load_config
    from sslops.finetune.stage import stratified_label_subset
    from sslops.prepare import PreparedData, prepare

    cfg = load_config(ROOT / "configs" / "adult.yaml", [])
    train = PreparedData(prepare(cfg, tmp_path / "prepare")).train
    labels = len(stratified_label_subset(train.target, cfg.finetune.label_fraction, cfg.seed))
    readme = (ROOT / "README.md").read_text()
    shown = re.findall(r"ssl \(ensemble, (\d+) labels\)|1% of the labels \((\d+)\)", readme)
    assert len(shown) == 2, "the README's console example no longer shows the label count"
    assert {int(a or b) for a, b in shown} == {labels}
