"""`dvc repro` runs the same stages through the CLI and reproduces a run."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import FAST_OVERRIDES, ROOT, small_config_dict

STAGES = ("prepare", "pretrain", "finetune", "evaluate", "export", "audit")
SRC = ROOT / "src"
# What `sslops <stage>` runs besides the stage's own modules: the entry point.
ENTRY = {"sslops/__init__.py", "sslops/__main__.py", "sslops/cli.py"}


def _dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))


def _module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported(name: str) -> set[str]:
    """The sslops modules ``name`` imports anywhere in its file (lazy imports included)."""
    file = _module_file(name)
    assert file is not None, name
    package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    tree = ast.parse(file.read_text(encoding="utf-8"))
    # `if TYPE_CHECKING:` imports are for type checkers: nothing runs them
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    out = set()
    for module in found:
        parts = module.split(".")
        out |= {
            ".".join(parts[:i])
            for i in range(1, len(parts) + 1)
            if parts[0] == "sslops" and _module_file(".".join(parts[:i]))
        }
    return out


def _closure(name: str) -> set[str]:
    """Files (relative to src/) of every sslops module ``name`` reaches through imports."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _imported(module)
    return {str(_module_file(m).relative_to(SRC)) for m in seen}  # type: ignore[union-attr]


def _code_deps(stage: dict) -> list[str]:
    return [d.removeprefix("src/") for d in stage["deps"] if d.startswith("src/sslops")]


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_stage_deps_are_the_code_each_stage_runs() -> None:
    """Editing a source file reruns the stages that import it, and only those."""
    stages = _dvc_yaml()["stages"]
    for name in STAGES:
        runs = _closure(f"sslops.{name}") | ENTRY
        deps = [d for d in _code_deps(stages[name]) if not d.startswith("sslops/datasets")]
        missing = sorted(f for f in runs if not _covered(f, deps))
        assert not missing, f"dvc.yaml stage {name} runs but does not depend on {missing}"
        unused = [d for d in deps if not any(_covered(f, [d]) for f in runs)]
        assert not unused, f"dvc.yaml stage {name} depends on {unused} but never imports them"


def test_stages_depend_on_the_files_params_yaml_names() -> None:
    """Each key naming a file a stage reads (the list `sslops run`'s stage cache keys on by
    content: data.train/test, data.attributes_file, prepare.pii.key_file,
    pretrain.init_from) that params.yaml sets is among that stage's deps, or `dvc repro`
    would keep a result made from the file's earlier content."""
    from sslops.pipeline.stage_cache import NAMED_FILES

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    stages = _dvc_yaml()["stages"]
    checked = 0
    for stage, keys in NAMED_FILES.items():
        for key in keys:
            value = params
            for part in key:
                value = value[part]
            if value is None:
                continue
            path = (
                "src/sslops/datasets/" + value.removeprefix("package:")
                if value.startswith("package:")
                else value
            )
            assert (ROOT / path).exists(), path
            assert _covered(path, stages[stage]["deps"]), (
                f"{stage} reads {'.'.join(key)} ({path}) but does not depend on it"
            )
            checked += 1
    assert checked >= 2  # data.train and data.test at least


def _config_reads(stage: str) -> set[str]:
    """``cfg.<section>[.<key>]`` read in src/sslops/<stage>/ (the stage's own modules)."""
    from sslops.config import Config

    sections = set(Config.model_fields)
    reads = set()
    for file in (SRC / "sslops" / stage).rglob("*.py"):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        for node in (n for n in ast.walk(tree) if id(n) not in inner):
            chain: list[str] = []
            while isinstance(node, ast.Attribute):
                chain.insert(0, node.attr)
                node = node.value
            if (
                isinstance(node, ast.Name)
                and node.id == "cfg"
                and chain[:1]
                and chain[0] in sections
            ):
                sub = chain[1:2] if chain[0] not in {"seed", "modality"} else []
                reads.add(".".join(chain[:1] + [k for k in sub if not k.startswith("_")]))
    return reads - {"model_dump"}


def test_stage_params_name_the_keys_each_stage_reads() -> None:
    """`dvc params diff` / `dvc status` see every key a stage reads (the audit takes the whole
    file: its bundle files the resolved config)."""
    stages = _dvc_yaml()["stages"]
    for name in STAGES:
        params = stages[name]["params"]
        if name == "audit":
            assert params == [{"params.yaml": None}]
            continue
        declared = [p for p in params if isinstance(p, str)]
        missing = sorted(
            read for read in _config_reads(name)
            if not any(read == d or read.startswith(d + ".") for d in declared)
        )  # fmt: skip
        assert not missing, f"dvc.yaml stage {name} reads {missing} but does not declare them"


def test_dvcignore_keeps_bytecode_out_of_the_code_deps(cli_env, tmp_path: Path) -> None:
    """A .pyc written next to a source file does not make its stage look changed (checked in
    a DVC repository without git, so that an unpacked sdist runs it too)."""
    shutil.copy(ROOT / ".dvcignore", tmp_path / ".dvcignore")

    def ignored(path: str) -> bool:
        result = subprocess.run(
            ["dvc", "check-ignore", path], cwd=tmp_path, capture_output=True, text=True,
            env=cli_env, timeout=120,
        )  # fmt: skip
        assert result.returncode in (0, 1), result.stderr  # 1: not ignored
        return result.returncode == 0

    init = subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=cli_env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert init.returncode == 0, init.stderr
    for path in ("src/sslops/__pycache__/cli.cpython-311.pyc", "src/sslops/data/x.pyc"):
        assert ignored(path), f"{path}: not in .dvcignore"
    assert not ignored("src/sslops/data/x.py")


def _copy_sources(repo: Path) -> None:
    """The sources and Adult files dvc.yaml's deps name (the command runs the installed ones)."""
    shutil.copytree(
        ROOT / "src" / "sslops", repo / "src" / "sslops",
        ignore=shutil.ignore_patterns("__pycache__", "mnist", "gunpoint"),
    )  # fmt: skip


def test_dvc_repro_runs_every_stage(small_data, tmp_path: Path, cli_env) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    _copy_sources(repo)
    from sslops.config import apply_overrides, validate_config

    raw = apply_overrides(small_config_dict(small_data), FAST_OVERRIDES)
    params = validate_config(raw).model_dump(mode="json")  # every key explicit, as params.yaml
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    def dvc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["dvc", *args], cwd=repo, capture_output=True, text=True, env=cli_env, timeout=600
        )

    assert dvc("init", "--no-scm", "-q").returncode == 0
    result = dvc("repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("prepare", "pretrain", "finetune", "evaluate", "export", "audit"):
        assert (repo / "artifacts" / stage / "meta.json").is_file()
    assert (repo / "artifacts" / "audit" / "model_card.html").is_file()
    assert (repo / "dvc.lock").is_file()
    # Nothing changed: a second repro runs no stage.
    again = dvc("repro")
    assert again.returncode == 0
    assert "Running stage" not in again.stdout
    # A parameter change reruns only what depends on it.
    params["evaluate"]["threshold"] = 0.4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = dvc("status")
    assert "finetune" in status.stdout and "pretrain" not in status.stdout
    # export.model names the deployed model evaluate reports on: evaluate reruns too.
    params["evaluate"]["threshold"] = 0.5
    params["export"]["model"] = "ssl"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    changed = set(json.loads(dvc("status", "--json").stdout))
    assert changed == {"evaluate", "export", "audit"}, changed
    # dvc metrics / dvc plots read the files dvc.yaml declares.
    shown = json.loads(dvc("metrics", "show", "--json").stdout)[""]["data"]
    headline = shown["artifacts/evaluate/headline.json"]["data"]
    assert 0.5 < headline["models"]["mitigated"]["accuracy"] <= 1
    assert shown["artifacts/pretrain/summary.json"]["data"]["final_loss"] > 0
    plots = json.loads(dvc("plots", "show", "--json").stdout)
    assert plots["data"]["artifacts/pretrain/history.json"][0]["type"] == "vega"
    assert plots["data"]["artifacts/finetune/finetune.json"][0]["type"] == "vega"
    assert plots["data"]["artifacts/evaluate/roc.png"][0]["type"] == "image"
    errors = {e["name"] for e in plots.get("errors", [])}
    assert errors <= {"artifacts/evaluate/label_efficiency.png"}  # label_efficiency=null here


def test_params_yaml_is_the_resolved_demo_config() -> None:
    """`dvc repro` trains what `make demo` trains: params.yaml is configs/adult.yaml resolved."""
    from sslops.config import load_config

    params = (ROOT / "params.yaml").read_text(encoding="utf-8")
    resolved = load_config(ROOT / "configs" / "adult.yaml").model_dump(mode="json")
    body = "".join(params.splitlines(keepends=True)[2:])  # after the two header lines
    assert body == yaml.safe_dump(resolved, sort_keys=False), (
        "params.yaml is stale; regenerate: "
        "sslops config --config configs/adult.yaml > params.yaml (keep its two header lines)"
    )


def test_metrics_and_plots_are_files_of_stage_outs_dvc_reads() -> None:
    spec = _dvc_yaml()
    outs = [o for stage in spec["stages"].values() for o in stage["outs"]]
    files = list(spec["metrics"])
    for plot in spec["plots"]:
        name, props = next(iter(plot.items())) if isinstance(plot, dict) else (plot, None)
        y = (props or {}).get("y")
        files += list(y) if isinstance(y, dict) else [name]
    for file in files:
        assert _covered(file, outs), f"{file} is not inside a stage's outs"
        assert Path(file).suffix in {".json", ".yaml", ".csv", ".tsv", ".png"}, file


def test_headline_is_the_flat_scalars_of_metrics_json() -> None:
    from sslops.evaluate.report import headline

    payload = {
        "split": "test", "rows": 10, "threshold": 0.5, "roc_curves": {"ssl": {"fpr": [0.0]}},
        "models": {"ssl": {"accuracy": 0.9, "by_group": {"sex": {}}, "intervals": {"a": [0, 1]}}},
    }  # fmt: skip
    assert headline(payload) == {
        "split": "test", "rows": 10, "threshold": 0.5, "models": {"ssl": {"accuracy": 0.9}}
    }  # fmt: skip
