"""A pretraining batch that cannot be split over the training processes is refused when
the config is read, naming the settings that make the process count and nearby sizes that
work (left by the errmsg review: the pod said only "pretrain.batch_size 500 is not
divisible by 3 processes" once it had started, on a cluster after the image pull)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sslops.api import load_config
from sslops.cli import main
from sslops.errors import ConfigError
from sslops.pretrain import loop
from tests.conftest import ROOT

ADULT = str(ROOT / "configs" / "adult.yaml")


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (["pretrain.batch_size=500", "pretrain.processes_per_node=3"],
         "pretrain.batch_size=500 does not split over the 3 training processes "
         "(pretrain.nodes=1 x 3 per node: pretrain.processes_per_node); expected a "
         "multiple of 3, e.g. 498 or 501"),
        (["pretrain.batch_size=10", "pretrain.gpus_per_node=8", "pretrain.launcher=trainjob"],
         "pretrain.batch_size=10 does not split over the 8 training processes "
         "(pretrain.nodes=1 x 8 per node: pretrain.gpus_per_node); expected a multiple "
         "of 8, e.g. 8 or 16"),
        (["pretrain.batch_size=12", "pretrain.gpus_per_node=8", "pretrain.nodes=2",
          "pretrain.launcher=trainjob"],
         "pretrain.batch_size=12 does not split over the 16 training processes "
         "(pretrain.nodes=2 x 8 per node: pretrain.gpus_per_node); expected a multiple "
         "of 16, e.g. 16"),
        (["pretrain.nodes=3", "pretrain.launcher=trainjob"],
         "pretrain.batch_size=512 does not split over the 3 training processes "
         "(pretrain.nodes=3 x 1 per node: one on a node without GPUs); expected a multiple of "
         "3, e.g. 510 or 513"),
    ],
)  # fmt: skip
def test_a_batch_the_processes_cannot_share_is_refused_with_the_config(
    capsys: pytest.CaptureFixture[str], settings: list[str], said: str
) -> None:
    args = ["config", "--config", ADULT]
    for setting in settings:
        args += ["--set", setting]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert said in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_a_batch_that_splits_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["config", "--config", ADULT, "--set", "pretrain.batch_size=504", "--set",
            "pretrain.processes_per_node=3"]  # fmt: skip
    assert main(args) == 0


def test_a_batch_capped_at_the_rows_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer rows than pretrain.batch_size make the batch the row count, which the config
    cannot know: the ranks refuse it naming both."""
    cfg = load_config(ADULT, ["pretrain.batch_size=512", "pretrain.processes_per_node=2"])
    monkeypatch.setattr(loop, "world", lambda: (0, 2))
    data = SimpleNamespace(x=torch.zeros(11, 3), sensitive=None)
    with pytest.raises(ConfigError) as refused:
        loop._train(cfg, data, None, Path("unused"), torch.device("cpu"), None)  # type: ignore[arg-type]
    assert str(refused.value) == (
        "pretrain.batch_size 11 (capped at the 11 training rows) does not split over the 2 "
        "training processes; expected a multiple of 2"
    )
