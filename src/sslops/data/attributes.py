"""Group attributes derived from images and series, for fairness checks on array data.

Arrays have no sensitive column, so ``data.sensitive`` names attributes computed
deterministically from each input, bucketed into terciles whose edges come from the
training split (saved in the finetune artifact, so every stage uses the same buckets):

- images: ``stroke_thickness`` — mean stroke width in pixels, estimated as ink area
  divided by half the ink boundary length (a stroke of width w and length L has area
  wL and about 2L boundary edges); ``ink`` — the share of ink pixels.
- series: ``amplitude`` — peak-to-peak range of the raw series; ``level`` — its mean.

Ink is a pixel at or above half the value range (128 of 255).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "image": ("stroke_thickness", "ink"),
    "timeseries": ("amplitude", "level"),
}
BUCKETS: dict[str, tuple[str, str, str]] = {
    "stroke_thickness": ("thin", "medium", "thick"),
    "ink": ("light", "medium", "heavy"),
    "amplitude": ("low", "medium", "high"),
    "level": ("low", "medium", "high"),
}
INK = 128


def _ink(images: np.ndarray) -> np.ndarray:
    """Boolean ink mask ``(N, H, W)`` of uint8-range images ``(N, H, W, C)`` (channel mean)."""
    values = np.asarray(images, dtype=np.float32)
    if values.ndim == 4:
        values = values.mean(axis=-1)
    return values >= INK


def stroke_thickness(images: np.ndarray) -> np.ndarray:
    ink = _ink(images)
    area = ink.sum(axis=(1, 2)).astype(np.float64)
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    edges = (padded[:, 1:, :] != padded[:, :-1, :]).sum(axis=(1, 2)) + (
        padded[:, :, 1:] != padded[:, :, :-1]
    ).sum(axis=(1, 2))
    return np.where(edges > 0, 2 * area / np.maximum(edges, 1), 0.0)


def ink_share(images: np.ndarray) -> np.ndarray:
    return _ink(images).mean(axis=(1, 2)).astype(np.float64)


def _series(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(len(values), -1)


MEASURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "stroke_thickness": stroke_thickness,
    "ink": ink_share,
    "amplitude": lambda v: np.ptp(_series(v), axis=1),
    "level": lambda v: _series(v).mean(axis=1),
}


def tercile_edges(values: np.ndarray) -> list[float]:
    return [float(q) for q in np.quantile(values, [1 / 3, 2 / 3])]


def bucket(name: str, values: np.ndarray, edges: list[float]) -> np.ndarray:
    """The bucket label of each value (``edges`` from the training split)."""
    labels = np.array(BUCKETS[name], dtype=object)
    return labels[np.searchsorted(np.asarray(edges), values, side="right")]
