"""Source hygiene by AST (default suite; fast): no pickle, no unsafe deserialization, no shell.

Forbidden in every Python file of the repository: importing ``pickle``/``dill``/
``shelve``/``marshal``/``joblib``; ``torch.load`` without ``weights_only=True``;
``np.load(..., allow_pickle=True)``; ``yaml.unsafe_load``/``full_load`` and ``yaml.load``
whose ``Loader`` is not a ``SafeLoader`` (or a subclass defined in the module);
``shell=True``; ``os.system``/``os.popen``; the ``eval``/``exec`` builtins.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

FOLDERS = ("src", "components", "pipelines", "scripts", "benchmarks", "tests")
PICKLING = {"pickle", "cPickle", "dill", "shelve", "marshal", "joblib", "cloudpickle"}


def _definitions(tree: ast.AST) -> dict[str, str]:
    """name -> source of what it is bound to (assignments, class bases), for Loader checks."""
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = ast.unparse(node.value)
        elif isinstance(node, ast.ClassDef):
            found[node.name] = " ".join(ast.unparse(base) for base in node.bases)
    return found


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def problems(source: str, name: str = "<src>") -> list[str]:
    tree = ast.parse(source, filename=name)
    defined = _definitions(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for module in modules:
                if module.split(".")[0] in PICKLING:
                    found.append(f"{where}: imports {module}")
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        if _is_true(_keyword(node, "shell")):
            found.append(f"{where}: shell=True")
        if func in {"os.system", "os.popen", "eval", "exec"}:
            found.append(f"{where}: {func}()")
        if func.endswith("torch.load") and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        if func in {"np.load", "numpy.load"} and _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{where}: np.load(allow_pickle=True)")
        if func in {"yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"}:
            found.append(f"{where}: {func}")
        if func in {"yaml.load", "yaml.load_all"}:
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            text = ast.unparse(loader) if loader is not None else ""
            resolved = defined.get(text, text)
            resolved = defined.get(resolved, resolved)  # a class bound through one more name
            if "SafeLoader" not in resolved:
                found.append(f"{where}: {func} with Loader={text or 'default'}")
    return found


def python_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def test_no_unsafe_deserialization_or_shell_in_the_source_tree() -> None:
    files = python_files()
    assert len(files) > 100
    found = [p for path in files for p in problems(path.read_text(encoding="utf-8"), str(path))]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "from joblib import dump",
        "import torch\ntorch.load('x')",
        "import torch\ntorch.load('x', weights_only=False)",
        "import yaml\nyaml.load(s, Loader=yaml.Loader)",
        "import yaml\nyaml.load(s)",
        "import yaml\nyaml.full_load(s)",
        "import subprocess\nsubprocess.run('ls', shell=True)",
        "import os\nos.system('ls')",
        "eval('1')",
        "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
        "import yaml\nclass L(yaml.Loader): pass\nyaml.load(s, Loader=L)",
    ],
)
def test_the_scan_catches(snippet: str) -> None:
    assert problems(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load('x', weights_only=True, map_location='cpu')",
        "import yaml\nyaml.safe_load(s)",
        "import yaml\nclass L(yaml.SafeLoader): pass\nyaml.load(s, Loader=L)",
        "import yaml\nloader = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)\n"
        "yaml.load_all(s, Loader=loader)",
        "model.eval()",
        "import subprocess\nsubprocess.run(['ls'], check=False)",
    ],
)
def test_the_scan_allows(snippet: str) -> None:
    assert not problems(snippet)
