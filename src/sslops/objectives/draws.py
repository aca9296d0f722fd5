"""Random draws for a batch that do not depend on how the batch is split across ranks.

Every rank holds the same generator state and draws for the whole *global* batch, then
keeps the rows at its own positions. So views, masks and donors are identical whether
a batch runs in one process or in many, and after a resume: distributed runs and
resumed runs reproduce the single-process run. Drawing per-row parameters (crop
boxes, masks) for the global batch costs little next to the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Draws:
    generator: torch.Generator
    total: int  # rows in the global batch
    index: torch.Tensor  # this rank's positions in it

    @classmethod
    def local(cls, rows: int, generator: torch.Generator | None = None) -> Draws:
        """Draws for a batch that is all in this process."""
        generator = generator if generator is not None else torch.Generator()
        return cls(generator, rows, torch.arange(rows, device=generator.device))

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def rand(self, *shape: int) -> torch.Tensor:
        out = torch.rand(self.total, *shape, generator=self.generator, device=self.device)
        return out[self.index]

    def randn(self, *shape: int) -> torch.Tensor:
        out = torch.randn(self.total, *shape, generator=self.generator, device=self.device)
        return out[self.index]

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        out = torch.randint(
            0, high, (self.total, *shape), generator=self.generator, device=self.device
        )
        return out[self.index]


def as_draws(source: Draws | torch.Generator | None, rows: int) -> Draws:
    return source if isinstance(source, Draws) else Draws.local(rows, source)
