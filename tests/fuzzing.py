"""Shared by the fuzz tests: derandomized hypothesis settings, the config's keys, damaged bytes.

The cases are derandomized (the same on every run), so CI fails on a regression and never on
a case one run happened to draw first; ``SSLOPS_FUZZ_RANDOM=1`` draws new ones and
``SSLOPS_FUZZ_SCALE`` multiplies their number (``make fuzz`` sets both).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from sslops.config import Config

SCALE = float(os.environ.get("SSLOPS_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("SSLOPS_FUZZ_RANDOM", "") not in ("", "0")


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
        derandomize=not RANDOM, suppress_health_check=list(HealthCheck),
    )  # fmt: skip


def leaf_keys(model: type[Any] = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema that holds a value, not a section."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            keys += leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


@st.composite
def damaged_bytes(
    draw: st.DrawFn, data: bytes, kinds: tuple[str, ...] = ("flip", "cut", "insert")
) -> bytes:
    """``data`` with 1 to 3 changes: a byte flipped, the rest cut off, bytes inserted, bytes
    overwritten ("overwrite") or a run of bytes removed ("drop")."""
    changed = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        at = draw(st.integers(0, max(0, len(changed) - 1)))
        if kind == "flip" and changed:
            changed[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del changed[at:]
        elif kind == "insert":
            changed[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=64))
            changed[at : at + len(patch)] = patch
        elif kind == "drop":
            del changed[at : at + draw(st.integers(1, 64))]
    return bytes(changed)
