"""SimCLR, VICReg, MAE, VIME and the series pretexts against loop references; views and draws."""

from __future__ import annotations

import math

import pytest
import torch

from sslops.objectives import (
    Draws,
    ImageAugment,
    augment_images,
    augment_series,
    changed_columns,
    mae_loss,
    mask_segments,
    masked_reconstruction_loss,
    next_patch_loss,
    next_patch_targets,
    nt_xent,
    random_patch_mask,
    vicreg,
    vime_loss,
)
from sslops.objectives.augment import normalize_images
from sslops.objectives.scarf import corrupt_columns
from tests.test_objectives import reference_nt_xent


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_loop_reference(temperature: float) -> None:
    z1, z2 = torch.randn(6, 4, generator=gen(1)), torch.randn(6, 4, generator=gen(2))
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(
        reference_nt_xent(z1, z2, temperature), abs=1e-5
    )


def reference_vicreg(z1: torch.Tensor, z2: torch.Tensor) -> float:
    a, b = z1.double().tolist(), z2.double().tolist()
    n, d = len(a), len(a[0])
    invariance = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def var_cov(z: list[list[float]]) -> tuple[float, float]:
        means = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        cov = [[sum((z[i][j] - means[j]) * (z[i][k] - means[k]) for i in range(n)) / (n - 1)
                for k in range(d)] for j in range(d)]  # fmt: skip
        var = sum(max(0.0, 1 - math.sqrt(cov[j][j] + 1e-4)) for j in range(d)) / d
        off = sum(cov[j][k] ** 2 for j in range(d) for k in range(d) if j != k) / d
        return var, off

    (va, ca), (vb, cb) = var_cov(a), var_cov(b)
    return 25 * invariance + 25 * (va + vb) + (ca + cb)


def test_vicreg_matches_loop_reference() -> None:
    z1 = 0.3 * torch.randn(7, 5, generator=gen(3))
    z2 = z1 + 0.1 * torch.randn(7, 5, generator=gen(4))
    assert vicreg(z1, z2).item() == pytest.approx(reference_vicreg(z1, z2), rel=1e-5)


def test_vicreg_penalizes_collapse() -> None:
    z = torch.randn(16, 8, generator=gen(5))
    collapsed = torch.ones(16, 8)
    assert vicreg(collapsed, collapsed).item() > vicreg(z, z).item()


def test_random_patch_mask_is_a_consistent_permutation() -> None:
    keep, restore, mask = random_patch_mask(16, 0.75, Draws.local(3, gen(6)))
    assert keep.shape == (3, 4) and mask.shape == (3, 16)
    assert torch.equal(mask.sum(1), torch.full((3,), 12.0))
    for row in range(3):
        assert (mask[row, keep[row]] == 0).all()
        hidden = (mask[row] == 1).nonzero().squeeze(1)
        shuffled = torch.cat([keep[row], hidden])
        assert torch.equal(shuffled[restore[row]], torch.arange(16))


def test_mae_loss_matches_loop_reference() -> None:
    pred = torch.randn(2, 4, 6, generator=gen(7))
    patches = torch.randn(2, 4, 6, generator=gen(8))
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 1, 1]])
    total, count = 0.0, 0
    for i in range(2):
        for p in range(4):
            if mask[i, p]:
                values = patches[i, p].double()
                target = (values - values.mean()) / math.sqrt(values.var().item() + 1e-6)
                total += float(((pred[i, p].double() - target) ** 2).mean())
                count += 1
    assert mae_loss(pred, patches, mask).item() == pytest.approx(total / count, rel=1e-5)


def test_vime_loss_matches_formula() -> None:
    logits, mask = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    recon, original = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0, 3.0]])
    bce = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert vime_loss(logits, mask, recon, original, alpha=2.0).item() == pytest.approx(
        bce + 2 * 4 / 3, rel=1e-6
    )


def test_vime_targets_the_columns_that_changed_not_those_drawn() -> None:
    """A donor with the same value leaves the cell as it was: the mask-estimation target is
    0 there (the reference code's x != x_tilde), though the column was drawn."""
    column_of = torch.tensor([0, 1, 1, 2])  # column 1 is one-hot over two features
    x = torch.tensor([[0.5, 1.0, 0.0, 0.0], [0.2, 0.0, 1.0, 3.0]])
    pool = torch.tensor([[0.5, 1.0, 0.0, 0.0], [0.5, 0.0, 1.0, 0.0]])
    corrupted, drawn = corrupt_columns(x, pool, column_of, 1.0, gen(3))
    assert drawn.all()  # rate 1: every column drawn
    changed = changed_columns(x, corrupted, column_of, 3)
    expected = torch.stack([
        torch.tensor([bool((corrupted[i, column_of == c] != x[i, column_of == c]).any())
                      for c in range(3)]) for i in range(2)
    ]).float()  # fmt: skip
    assert torch.equal(changed, expected) and changed.sum() < drawn.sum()
    same = changed_columns(x, x.clone(), column_of, 3)
    assert not same.any()


def test_masked_segments_cover_whole_segments_and_loss_uses_them_only() -> None:
    series = torch.randn(4, 1, 30, generator=gen(9))
    mask = mask_segments(series, 5, 0.4, Draws.local(4, gen(10)))
    assert mask.shape == (4, 30)
    segments = mask.reshape(4, 6, 5)
    assert ((segments == segments[..., :1]).all()) and torch.equal(
        segments[..., 0].sum(1), torch.full((4,), 2.0)
    )
    prediction = series.clone()
    prediction[..., mask[0] == 0] += 100.0  # errors on visible steps do not count
    assert masked_reconstruction_loss(prediction[:1], series[:1], mask[:1]).item() == 0.0
    prediction = series + 1.0
    assert masked_reconstruction_loss(prediction, series, mask).item() == pytest.approx(1.0)


def test_next_patch_targets_are_the_following_patches() -> None:
    series = torch.arange(2 * 1 * 12, dtype=torch.float32).reshape(2, 1, 12)
    positions, targets = next_patch_targets(series, 4)
    assert positions.tolist() == [3, 7]
    assert torch.equal(targets[0, 0], series[0, 0, 4:8]) and torch.equal(
        targets[1, 1], series[1, 0, 8:12]
    )
    assert next_patch_loss(targets + 2, targets).item() == pytest.approx(4.0)


def test_draws_for_a_global_batch_slice_match_the_single_process_draws() -> None:
    whole = Draws.local(6, gen(11)).rand(3)
    shard = Draws(gen(11), 6, torch.tensor([1, 3, 5])).rand(3)
    assert torch.equal(shard, whole[[1, 3, 5]])


def test_augment_images_without_randomness_is_the_normalized_input() -> None:
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=gen(12))
    plain = ImageAugment(
        size=16, min_scale=1.0, ratio=(1.0, 1.0), flip=0.0, jitter_prob=0.0, grey_prob=0.0
    )
    out = augment_images(images, plain, Draws.local(4, gen(13)))
    torch.testing.assert_close(out, normalize_images(images, plain), atol=1e-5, rtol=0)
    flipped = augment_images(images, ImageAugment(**{**plain.__dict__, "flip": 1.0}),
                             Draws.local(4, gen(13)))  # fmt: skip
    torch.testing.assert_close(flipped, normalize_images(images, plain).flip(-1), atol=1e-5, rtol=0)


def test_augment_images_is_seeded_and_varies_per_image() -> None:
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen(14))
    aug = ImageAugment(size=32)
    a = augment_images(images, aug, Draws.local(8, gen(15)))
    b = augment_images(images, aug, Draws.local(8, gen(15)))
    c = augment_images(images, aug, Draws.local(8, gen(16)))
    assert a.shape == (8, 3, 32, 32) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    same_input = images[:1].expand(8, -1, -1, -1)
    views = augment_images(same_input, aug, Draws.local(8, gen(17)))
    assert (views[0] - views[1]).abs().max() > 0.1


def test_augment_series_keeps_shape_and_is_seeded() -> None:
    series = torch.randn(5, 1, 40, generator=gen(18))
    a = augment_series(series, Draws.local(5, gen(19)))
    assert a.shape == series.shape
    assert torch.equal(a, augment_series(series, Draws.local(5, gen(19))))


def test_contrastive_and_covariance_losses_stay_fp32_under_bf16_autocast() -> None:
    """autocast recasts matmuls to bf16 even on fp32 inputs; the losses turn it off, so their
    gradients under bf16 training equal the fp32 ones (a bf16 similarity at temperature 0.1
    gave a 2% gradient error)."""
    from sslops.pretrain.fairness import SensitiveDependencePenalty

    z1 = torch.randn(64, 32, generator=gen(4), requires_grad=True)
    z2 = torch.randn(64, 32, generator=gen(5))
    codes = torch.randint(0, 2, (64, 1), generator=gen(6))
    penalty = SensitiveDependencePenalty([2], 1.0)
    losses = {
        "nt_xent": lambda: nt_xent(z1, z2, 0.1),
        "vicreg": lambda: vicreg(z1, z2),
        "hsic": lambda: penalty(z1, codes),
    }
    for name, loss in losses.items():
        (plain,) = torch.autograd.grad(loss(), z1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss()
        (mixed,) = torch.autograd.grad(value, z1)  # backward outside autocast, as the loop does
        assert torch.allclose(mixed, plain, rtol=1e-5, atol=1e-7), name
