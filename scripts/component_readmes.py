"""Write components/<stage>/README.md from each component's docstring and interface.

python scripts/component_readmes.py          # regenerate
python scripts/component_readmes.py --check  # exit 1 when a README is stale (used by tests)
"""

from __future__ import annotations

import sys
from pathlib import Path

from sslops.pipeline import components

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "pretrain", "finetune", "evaluate", "export", "audit")


def _type(spec: object) -> str:
    text = str(getattr(spec, "type", ""))
    return text.split("@")[0].removeprefix("system.")


def render(stage: str) -> str:
    component = getattr(components, stage)
    spec = component.component_spec
    lines = [f"# KFP component `{stage}`", "", (component.python_func.__doc__ or "").strip(), ""]
    lines += [
        "Lightweight component: base image `sslops` (tag = package version); the body imports",
        f"`sslops.pipeline.tasks` and calls `{stage}_task`, which calls the stage function",
        f"`sslops.{stage}.{stage}` — the same one `sslops {stage}` and `dvc repro` run.",
        "",
        "| input | type |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {_type(s)} |" for name, s in (spec.inputs or {}).items()]
    lines += ["", "| output | type |", "|---|---|"]
    lines += [f"| `{name}` | {_type(s)} |" for name, s in (spec.outputs or {}).items()]
    lines += [
        "",
        "`config_json` is the resolved sslops config (`sslops config --config FILE --json`).",
        "Compile this component alone: `python components/" + stage + "/component.py OUT.yaml`.",
        "",
    ]
    return "\n".join(lines)


def main(check: bool) -> int:
    stale = []
    for stage in STAGES:
        path = ROOT / "components" / stage / "README.md"
        text = render(stage)
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale: " + ", ".join(stale) + " (run python scripts/component_readmes.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))
