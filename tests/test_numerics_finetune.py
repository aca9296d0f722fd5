"""Full fine-tuning that diverges stops there, saying what to change (found by the numerics
review): before, ``finetune.transfer: full`` with a learning rate that broke the model went
on to the fairness post-processing, which failed in scikit-learn ("Input scores contains
NaN"), and the label-efficiency curve's fine-tuning the same way."""

from __future__ import annotations

import pytest
import torch

from sslops.errors import SslopsError
from sslops.finetune.transfer import FineTuneSettings, fine_tune
from sslops.models.tabular import EncoderSpec, MLPEncoder, TabularClassifier


def _data() -> tuple[TabularClassifier, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(96, 6)
    y = (x[:, 0] + 0.3 * torch.randn(96) > 0).float()
    encoder = MLPEncoder(EncoderSpec(input_dim=6, hidden_dim=8, depth=1, embed_dim=4))
    return TabularClassifier(encoder, 4), x, y


def test_a_learning_rate_that_breaks_the_model_stops_with_what_to_change() -> None:
    start, x, y = _data()
    settings = FineTuneSettings(epochs=3, freeze_epochs=1, learning_rate=1e30, batch_size=32)
    with pytest.raises(SslopsError, match=r"full fine-tuning diverged: after epoch \d of 3 the "
                       r"model scores \d+ of 32 labeled rows as NaN or inf; lower "
                       r"finetune.full.learning_rate \(now 1e\+30\)$"):  # fmt: skip
        fine_tune(start, x, y, settings, seed=0)


def test_a_sound_fine_tuning_is_unchanged_by_the_check() -> None:
    start, x, y = _data()
    settings = FineTuneSettings(epochs=3, freeze_epochs=1, batch_size=32)
    tuned = fine_tune(start, x, y, settings, seed=0)
    assert torch.isfinite(tuned.logits(x)).all() and not tuned.training
    assert all(p.requires_grad for p in tuned.parameters())
