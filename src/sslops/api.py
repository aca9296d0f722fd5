"""The Python API: what ``import sslops`` offers a notebook or a script (docs/python-api.md).

Each function is the one the matching ``sslops`` subcommand calls (the CLI only parses
arguments and prints), so a stage run from Python refuses what the CLI refuses (an
``out`` folder that is not an earlier artifact of the stage, an ``out`` inside an input)
and raises :class:`sslops.errors.SslopsError` where the CLI prints ``error:`` and exits 2.
Nothing here imports torch until a stage runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslops.artifacts import INPUT_STAGE, replacing
from sslops.config import Config, validate_config
from sslops.config import load_config as _load_config
from sslops.console import callers_root_logger
from sslops.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

ConfigLike = Config | str | Path | Mapping[str, Any]
"""A validated :class:`~sslops.config.Config`, a config file (``package:adult.yaml``), or a
config as a dict (what the YAML file would hold; validated as it is)."""

STAGES = ("prepare", "pretrain", "finetune", "evaluate", "export", "audit")
# The input artifacts each stage reads, by role (the CLI's flags), in order.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "prepare": (),
    "pretrain": ("prepared",),
    "finetune": ("prepared", "pretrained"),
    "evaluate": ("prepared", "finetuned"),
    "export": ("prepared", "finetuned"),
    "audit": ("prepared", "pretrained", "finetuned", "evaluation", "exported"),
}


def load_config(
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> Config:
    """Read a config file, apply overrides and validate it.

    Parameters
    ----------
    config : str or Path, optional
        A YAML file, or a config shipped inside sslops (``"package:adult.yaml"``,
        ``"package:mnist.yaml"``, ``"package:gunpoint.yaml"``). Without it, the built-in
        defaults, to which ``overrides`` must add at least the ``data`` section.
    overrides : mapping or sequence of str, optional
        Values replacing the file's, by dotted key: a dict such as
        ``{"pretrain.epochs": 2, "data.sensitive": ["sex"]}`` (a nested dict such as
        ``{"pretrain": {"epochs": 2}}`` sets the same keys), or the CLI's ``--set``
        strings such as ``["pretrain.epochs=2"]`` (values read as YAML).

    Returns
    -------
    Config
        The validated config (a pydantic model; ``cfg.model_dump()`` gives it as a dict).

    Raises
    ------
    sslops.errors.ConfigError
        The file is missing or not YAML, a key is unknown, or a value has the wrong type.
    """
    return _load_config(config, _override_strings(overrides))


def _override_strings(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``overrides`` as the CLI's ``KEY=VALUE`` strings: a dict's values written as JSON
    (which YAML reads back as the same value: ``"yes"`` stays text, ``2`` a number)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise ConfigError(
            f"overrides {overrides!r}: expected a dict of dotted keys or a list of "
            "'KEY=VALUE' strings, not one string"
        )
    if not isinstance(overrides, Mapping):
        return [str(text) for text in overrides]
    import json

    strings = []
    for key, value in _flatten(overrides, ""):
        strings.append(f"{key}={json.dumps(value, default=str)}")
    return strings


def _flatten(values: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            pairs += _flatten(value, f"{dotted}.")
        else:
            pairs.append((dotted, dict(value) if isinstance(value, Mapping) else value))
    return pairs


def _config(cfg: ConfigLike) -> Config:
    if isinstance(cfg, Config):
        return cfg
    if isinstance(cfg, str | Path):
        return load_config(cfg)
    if isinstance(cfg, Mapping):
        return validate_config(dict(cfg))
    raise ConfigError(
        f"config: got {type(cfg).__name__}; expected a Config (sslops.load_config) or a "
        "config file such as 'package:adult.yaml'"
    )


def run_stage(stage: str, cfg: ConfigLike, out: str | Path, inputs: Mapping[str, Any]) -> Path:
    """Run one stage into ``out`` with its input artifacts by role (``prepared``, ...).

    The shared path of :func:`prepare` ... :func:`audit` and the ``sslops <stage>`` commands:
    ``out`` is checked first (see :func:`sslops.artifacts.check_replaceable`) and held for
    the stage (:func:`sslops.artifacts.output_lock`: a second command writing ``out``
    meanwhile is refused, naming this one).
    """
    if stage not in STAGE_INPUTS:
        raise ConfigError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    config = _config(cfg)
    given = {role: Path(inputs[role]) for role in STAGE_INPUTS[stage] if inputs.get(role)}
    missing = [role for role in STAGE_INPUTS[stage] if role not in given]
    if missing:
        raise ConfigError(f"{stage} needs the artifact(s) {', '.join(missing)}")
    out = Path(out)
    with (
        callers_root_logger(),
        replacing(out, stage, f"{stage} artifact", stage=stage, inputs=list(given.values())),
    ):
        return _run(stage, config, given, out)


def _run(stage: str, config: Config, given: dict[str, Path], out: Path) -> Path:
    if stage == "prepare":
        from sslops.prepare import prepare as run

        return run(config, out)
    if stage == "pretrain":
        from sslops.pretrain import pretrain as run_pretrain

        return run_pretrain(config, given["prepared"], out)
    if stage == "finetune":
        from sslops.finetune import finetune as run_finetune

        return run_finetune(config, given["prepared"], given["pretrained"], out)
    if stage == "evaluate":
        from sslops.evaluate import evaluate as run_evaluate

        return run_evaluate(config, given["prepared"], given["finetuned"], out)
    if stage == "export":
        from sslops.export import export as run_export

        return run_export(config, given["prepared"], given["finetuned"], out)
    from sslops.audit import audit as run_audit

    artifacts = {INPUT_STAGE[role]: path for role, path in given.items()}
    return run_audit(config, artifacts, out)


def prepare(cfg: ConfigLike, out: str | Path) -> Path:
    """Prepare the config's data (canonicalize, dedup, PII scan, splits, data card).

    Parameters
    ----------
    cfg : Config or str or Path
        From :func:`load_config`, or a config file (``"package:adult.yaml"``).
    out : str or Path
        The artifact folder to write: new, empty, or an earlier prepare artifact.

    Returns
    -------
    Path
        ``out``, holding the splits and ``meta.json``.
    """
    return run_stage("prepare", cfg, out, {})


def pretrain(cfg: ConfigLike, prepared: str | Path, out: str | Path) -> Path:
    """Self-supervised pretraining of the encoder on the prepared data; returns ``out``."""
    return run_stage("pretrain", cfg, out, {"prepared": prepared})


def finetune(
    cfg: ConfigLike, prepared: str | Path, pretrained: str | Path, out: str | Path
) -> Path:
    """Fine-tune (fairness-aware) on the labelled fraction; returns ``out``."""
    return run_stage("finetune", cfg, out, {"prepared": prepared, "pretrained": pretrained})


def evaluate(cfg: ConfigLike, prepared: str | Path, finetuned: str | Path, out: str | Path) -> Path:
    """Subgroup, OOD and shortcut evaluation; returns ``out`` (``metrics.json`` in it, read
    it with :func:`read_metrics`)."""
    return run_stage("evaluate", cfg, out, {"prepared": prepared, "finetuned": finetuned})


def export(cfg: ConfigLike, prepared: str | Path, finetuned: str | Path, out: str | Path) -> Path:
    """ONNX export with parity check (preprocessing inside the graph); returns ``out``
    (``model.onnx`` in it, for :func:`predict_frame`)."""
    return run_stage("export", cfg, out, {"prepared": prepared, "finetuned": finetuned})


def audit(cfg: ConfigLike, artifacts: Mapping[str, str | Path], out: str | Path) -> Path:
    """The signed audit bundle over the five earlier artifacts; returns ``out``.

    ``artifacts`` maps each earlier stage to its folder:
    ``{"prepare": ..., "pretrain": ..., "finetune": ..., "evaluate": ..., "export": ...}``.
    """
    roles = {role: artifacts.get(stage) for role, stage in INPUT_STAGE.items()}
    return run_stage("audit", cfg, out, roles)


def run(cfg: ConfigLike, out: str | Path) -> dict[str, Any]:
    """The whole pipeline (``sslops run``), locally through ``kfp.local``.

    Parameters
    ----------
    cfg : Config or str or Path
        From :func:`load_config`, or a config file.
    out : str or Path
        The run folder: one subfolder per stage and ``summary.json``. A failed run leaves
        no partial folder; a rerun resumes after the stages that finished.

    Returns
    -------
    dict
        The summary (what ``summary.json`` holds): ``ssl``, ``mitigated`` and ``baseline``
        metrics, ``fairness``, ``onnx`` (``path`` of the model) and ``audit``.

    Raises
    ------
    sslops.errors.SslopsError
        Bad input, or a failed stage (``PipelineFailed``, naming the log).
    """
    from sslops.pipeline.local import run_local

    with callers_root_logger():
        return run_local(_config(cfg), Path(out))


def read_metrics(evaluation: str | Path) -> dict[str, Any]:
    """The evaluate stage's ``metrics.json`` as a dict, from the evaluate artifact or a run
    folder (``<run>/evaluate``): per model (``metrics["models"]["ssl"]["accuracy"]``),
    per subgroup, with bootstrap intervals."""
    import json

    from sslops.errors import ArtifactError, describe_json_error

    folder = Path(evaluation)
    path = folder / "metrics.json"
    if not path.is_file() and (folder / "evaluate" / "metrics.json").is_file():
        path = folder / "evaluate" / "metrics.json"
    if not path.is_file():
        raise ArtifactError(
            f"{folder}: no metrics.json; expected an evaluate artifact or a run folder"
        )
    try:
        metrics: Any = json.loads(path.read_text(encoding="utf-8"))
        why = f"a JSON {type(metrics).__name__}, not an object"
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON
        metrics, why = None, describe_json_error(exc)
    if not isinstance(metrics, dict):
        raise ArtifactError(
            f"{path} is not readable metrics ({why}); expected the metrics.json sslops "
            "evaluate writes: re-run evaluate"
        )
    return metrics


def predict_frame(
    model: str | Path,
    frame: pd.DataFrame,
    cfg: ConfigLike | None = None,
    *,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Score a DataFrame's rows in memory with an exported model (see
    :func:`sslops.predict.predict_frame`)."""
    from sslops.predict import predict_frame as score

    return score(Path(model), frame, None if cfg is None else _config(cfg), threshold=threshold)
