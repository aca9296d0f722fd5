"""Pretraining whose weights an update made NaN or inf stops there, saying what to change
(found by the numerics review): before, the skipped-step rule kept going on NaN weights, and
a run whose last epoch diverged wrote a NaN encoder that failed later in scikit-learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslops.config import Config
from sslops.errors import SslopsError
from sslops.pretrain.data import load_pretrain_data
from sslops.pretrain.loop import train
from sslops.pretrain.tasks import backbone_spec, build_task


@pytest.fixture(scope="module")
def prepared(small_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sslops.prepare import prepare

    return prepare(small_config, tmp_path_factory.mktemp("numerics") / "prepare")


def configured(cfg: Config, **changes: object) -> Config:
    settings = {"knn_every": 0, "checkpoint_every": 0, **changes}
    return cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update=settings)})


def _train(cfg: Config, prepared: Path, tmp_path: Path, rows: int | None = None) -> None:
    data = load_pretrain_data(prepared, "tabular", 100, 0)
    if rows is not None:
        data.x = data.x[:rows]
    torch.manual_seed(0)
    task = build_task(cfg, data.info, backbone_spec(cfg, data.info))
    train(cfg, data, task, tmp_path / "ckpt", torch.device("cpu"))


def test_weights_made_nan_by_an_update_stop_at_the_next_step(
    small_config: Config, prepared: Path, tmp_path: Path
) -> None:
    # A learning rate of 1e30 makes the first update's weights so large that the second
    # step's loss is NaN; that step and every later one were skipped, and with one epoch
    # train() returned an encoder embedding every row as NaN.
    cfg = configured(small_config, epochs=1, batch_size=64, learning_rate=1e30, warmup_epochs=0)
    with pytest.raises(SslopsError, match=r"diverged: at step 2 of \d+ \(epoch 1\) the "
                       r"encoder embeds 64 of 64 finite training rows as NaN or inf .*lower "
                       r"pretrain.learning_rate \(now 1e\+30\)"):  # fmt: skip
        _train(cfg, prepared, tmp_path)


def test_weights_made_nan_by_the_last_update_stop_the_run(
    small_config: Config, prepared: Path, tmp_path: Path
) -> None:
    # One step in the whole run: its loss is finite, its update breaks the weights, and no
    # later step's loss could show it.
    cfg = configured(small_config, epochs=1, batch_size=64, learning_rate=1e30, warmup_epochs=0)
    with pytest.raises(SslopsError, match=r"diverged: at the end of epoch 1 \(step 1\) the "
                       r"encoder embeds \d+ of 64 finite training rows as NaN or inf"):  # fmt: skip
        _train(cfg, prepared, tmp_path, rows=64)


def test_a_finite_run_is_unchanged(small_config: Config, prepared: Path, tmp_path: Path) -> None:
    cfg = configured(small_config, epochs=1, batch_size=64)
    _train(cfg, prepared, tmp_path)  # no error: the check never fires on finite weights


def test_a_nan_weight_is_named(small_config: Config, prepared: Path) -> None:
    from sslops.pretrain.loop import _check_finite, _finite_rows

    cfg = configured(small_config, batch_size=64)
    data = load_pretrain_data(prepared, "tabular", 100, 0)
    task = build_task(cfg, data.info, backbone_spec(cfg, data.info))
    probe = _finite_rows(data.x, 64)
    _check_finite(task, probe, "step 1", cfg.pretrain)  # sound: no error
    name, weight = next(iter(task.named_parameters()))
    with torch.no_grad():
        weight[0] = float("nan")
    with pytest.raises(SslopsError, match=rf"at step 1 the weights hold NaN or inf \({name}\)"):
        _check_finite(task, probe, "step 1", cfg.pretrain)


def test_rows_with_a_nan_input_are_not_probed() -> None:
    from sslops.pretrain.loop import _finite_rows

    x = torch.ones(5, 3)
    x[1, 2], x[3, 0] = float("nan"), float("inf")
    assert _finite_rows(x, 4).tolist() == [[1.0] * 3, [1.0] * 3]  # rows 0 and 2 of the first 4


def test_the_advice_names_fp32_only_when_the_run_is_not_in_fp32(small_config: Config) -> None:
    from sslops.pretrain.loop import _what_to_change

    # "set pretrain.precision fp32 (now fp32)" was advised to fp32 runs too
    fp32 = _what_to_change(configured(small_config, precision="fp32").pretrain, "NaN/inf")
    assert fp32.startswith("lower pretrain.learning_rate (now ") and "precision" not in fp32
    bf16 = _what_to_change(configured(small_config, precision="bf16").pretrain, "NaN/inf")
    assert ", set pretrain.precision fp32 (now bf16), or look for NaN/inf in the" in bf16
