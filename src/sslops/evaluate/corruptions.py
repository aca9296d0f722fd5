"""Deterministic edits of prepared arrays: a shifted (OOD) test split and counterfactuals.

Prepare has no predicate split for arrays, so the out-of-distribution split is the test
split under seeded corruptions:

- images: additive Gaussian pixel noise (sigma 32 of 255, clipped) and a translation by
  1-2 pixels in each direction (zero fill);
- series: Gaussian noise (0.1 of each series' standard deviation) and a smooth time
  warp (t -> t + a * sin(pi t / L) with |a| up to 8% of the length, linear interpolation).

Counterfactuals change only the group attribute's underlying property:

- images, ``stroke_thickness`` / ``ink``: grey dilation (thicker strokes) and erosion
  (thinner strokes) with a 3x3 cross;
- series, ``amplitude`` / ``level``: scaling about the mean by 2 and 0.5 / a shift of
  one standard deviation up and down.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def shifted_images(images: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    x = images.astype(np.float32) + rng.normal(0, 32, images.shape).astype(np.float32)
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    out = np.zeros_like(x)
    shifts = rng.integers(1, 3, (len(x), 2)) * rng.choice([-1, 1], (len(x), 2))
    h, w = x.shape[1:3]
    for i, (dy, dx) in enumerate(shifts):
        src = x[i, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
        out[i, max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def shifted_series(series: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 2])
    x = np.asarray(series, dtype=np.float64).reshape(len(series), -1)
    length = x.shape[1]
    t = np.arange(length, dtype=np.float64)
    out = np.empty_like(x)
    amplitude = rng.uniform(-0.08, 0.08, len(x)) * length
    for i in range(len(x)):
        warped = np.clip(t + amplitude[i] * np.sin(np.pi * t / max(length - 1, 1)), 0, length - 1)
        out[i] = np.interp(warped, t, x[i])
    out += rng.normal(0, 1, out.shape) * 0.1 * x.std(axis=1, keepdims=True)
    return out.reshape(series.shape).astype(np.float32)


def _per_image(op: Callable[..., np.ndarray], images: np.ndarray) -> np.ndarray:
    footprint = _CROSS[..., None] if images.ndim == 4 else _CROSS
    return np.stack([op(image, footprint=footprint) for image in images]).astype(images.dtype)


def counterfactuals(attribute: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """Edited copies of ``values`` that move ``attribute`` up and down."""
    if attribute in ("stroke_thickness", "ink"):
        return {
            "thicker strokes (dilation)": _per_image(ndimage.grey_dilation, values),
            "thinner strokes (erosion)": _per_image(ndimage.grey_erosion, values),
        }
    x = np.asarray(values, dtype=np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    if attribute == "amplitude":
        return {
            "amplitude x2": (mean + 2 * (x - mean)).astype(np.float32),
            "amplitude x0.5": (mean + 0.5 * (x - mean)).astype(np.float32),
        }
    std = x.std(axis=-1, keepdims=True)
    return {
        "level + 1 sd": (x + std).astype(np.float32),
        "level - 1 sd": (x - std).astype(np.float32),
    }
