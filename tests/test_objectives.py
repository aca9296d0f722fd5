"""SCARF: the InfoNCE loss against a loop reference, and the feature corruption."""

from __future__ import annotations

import math

import pytest
import torch

from sslops.objectives import info_nce, scarf_corrupt

# --- info_nce -------------------------------------------------------------------------------


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """Symmetric NT-Xent written out with loops, in float64."""
    views = [*z1.double(), *z2.double()]
    views = [v / v.norm() for v in views]
    n = z1.shape[0]
    total = 0.0
    for i, anchor in enumerate(views):
        positive = i + n if i < n else i - n
        logits = {k: float(anchor @ other) / temperature for k, other in enumerate(views) if k != i}
        denominator = sum(math.exp(v) for v in logits.values())
        total += -math.log(math.exp(logits[positive]) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.5, 1.0])
@pytest.mark.parametrize("shape", [(4, 3), (7, 5)])
def test_info_nce_matches_loop_reference(temperature: float, shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    z1 = torch.randn(*shape, generator=g)
    z2 = torch.randn(*shape, generator=g)
    loss = info_nce(z1, z2, temperature)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(reference_nt_xent(z1, z2, temperature), abs=1e-5)


def test_info_nce_hand_computed_value() -> None:
    # Two orthogonal unit rows, identical views: each anchor sees its positive at cos 1 and
    # the two other embeddings at cos 0, so every term is log(1 + 2 * exp(-1 / t)).
    z = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    t = 0.5
    assert info_nce(z, z.clone(), t).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), 1e-6)


def test_info_nce_is_scale_invariant_and_symmetric() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    loss = info_nce(z1, z2, 0.7).item()
    assert info_nce(5 * z1, 0.1 * z2, 0.7).item() == pytest.approx(loss, abs=1e-5)
    assert info_nce(z2, z1, 0.7).item() == pytest.approx(loss, abs=1e-5)


def test_info_nce_lower_for_aligned_views() -> None:
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(8, 16, generator=g)
    aligned = info_nce(z1, z1 + 0.01 * torch.randn(8, 16, generator=g), 0.2)
    unrelated = info_nce(z1, torch.randn(8, 16, generator=g), 0.2)
    assert aligned.item() < unrelated.item()


def test_info_nce_has_gradients() -> None:
    z1 = torch.randn(5, 3, requires_grad=True)
    z2 = torch.randn(5, 3, requires_grad=True)
    info_nce(z1, z2, 1.0).backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()
    assert z2.grad is not None and z2.grad.abs().sum() > 0


# --- scarf_corrupt --------------------------------------------------------------------------

# Raw columns: 0 numeric, 1 numeric, 2 categorical (3 levels), 3 categorical (4 levels),
# 4 a two-feature block used to check that one column's features share a donor row.
COLUMN_OF = torch.tensor([0, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4])
BLOCKS = {0: [0], 1: [1], 2: [2, 3, 4], 3: [5, 6, 7, 8], 4: [9, 10]}
CATEGORICAL = (2, 3)
assert [c for c, block in BLOCKS.items() for _ in block] == COLUMN_OF.tolist()


def make_rows(n: int, offset: float, generator: torch.Generator) -> torch.Tensor:
    """Rows with distinct numeric values (``offset`` + row id) and valid one-hot blocks."""
    rows = torch.zeros(n, len(COLUMN_OF))
    ids = torch.arange(n, dtype=torch.float32)
    rows[:, 0] = offset + ids
    rows[:, 1] = offset + ids + 0.25
    for c in CATEGORICAL:
        block = torch.tensor(BLOCKS[c])
        hot = torch.randint(0, len(block), (n,), generator=generator)
        rows[torch.arange(n), block[hot]] = 1.0
    rows[:, 9] = offset + ids + 0.5
    rows[:, 10] = -(offset + ids)
    return rows


@pytest.fixture
def x_and_pool() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return make_rows(64, 0.0, g), make_rows(40, 1000.0, g)


def test_rate_near_zero_returns_x_unchanged(x_and_pool: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, pool = x_and_pool
    g = torch.Generator().manual_seed(0)
    out = scarf_corrupt(x, pool, COLUMN_OF, rate=1e-9, generator=g)
    assert out.shape == x.shape
    assert torch.equal(out, x)


def test_rate_near_one_takes_every_column_from_pool_rows(
    x_and_pool: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, pool = x_and_pool
    g = torch.Generator().manual_seed(0)
    out = scarf_corrupt(x, pool, COLUMN_OF, rate=1 - 1e-9, generator=g)
    for row in out:
        for c, block in BLOCKS.items():
            values = row[block]
            matches = [d for d in range(len(pool)) if torch.equal(pool[d, block], values)]
            assert matches, f"column {c} of a corrupted row is not from any pool row"
        for c in CATEGORICAL:
            block = row[BLOCKS[c]]
            assert sorted(block.tolist()) == [0.0] * (len(block) - 1) + [1.0]
        # numeric values come from the pool (>= 1000), never from x
        assert row[0].item() >= 1000 and row[1].item() >= 1000
        # the two features of column 4 come from one donor row
        donor = int(row[9].item() - 1000.5)
        assert row[10].item() == -(1000 + donor)


def test_partial_rate_corrupts_whole_columns(x_and_pool: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, pool = x_and_pool
    big_x = x.repeat(16, 1)
    g = torch.Generator().manual_seed(3)
    out = scarf_corrupt(big_x, pool, COLUMN_OF, rate=0.3, generator=g)
    corrupted = (out[:, [0, 1, 9, 10]] != big_x[:, [0, 1, 9, 10]]).float()
    # column 4's two features are corrupted together; columns 0 and 1 independently
    assert torch.equal(corrupted[:, 2], corrupted[:, 3])
    assert not torch.equal(corrupted[:, 0], corrupted[:, 1])
    assert corrupted[:, [0, 1, 2]].mean().item() == pytest.approx(0.3, abs=0.05)
    for c in CATEGORICAL:
        assert torch.equal(out[:, BLOCKS[c]].sum(dim=1), torch.ones(len(out)))


def test_seeded_generator_is_deterministic(x_and_pool: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, pool = x_and_pool

    def run(seed: int) -> torch.Tensor:
        return scarf_corrupt(x, pool, COLUMN_OF, 0.6, torch.Generator().manual_seed(seed))

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_corruption_does_not_modify_inputs(x_and_pool: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, pool = x_and_pool
    x_before, pool_before = x.clone(), pool.clone()
    scarf_corrupt(x, pool, COLUMN_OF, 0.9, torch.Generator().manual_seed(0))
    assert torch.equal(x, x_before) and torch.equal(pool, pool_before)
