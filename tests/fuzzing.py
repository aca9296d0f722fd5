"""Shared by the fuzz tests: derandomized hypothesis settings, the config's keys, damaged bytes,
JSON documents with a field replaced.

The cases are derandomized (the same on every run), so CI fails on a regression and never on
a case one run happened to draw first; ``SSLOPS_FUZZ_RANDOM=1`` draws new ones and
``SSLOPS_FUZZ_SCALE`` multiplies their number (``make fuzz`` sets both).
"""

from __future__ import annotations

import json
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


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip

# JSON text Python's json module reads into something odd or refuses in its own way: numbers
# too large for a float (inf) or for int() (ValueError past 4300 digits), NaN, nesting deeper
# than the recursion limit.
ODD_LITERALS = (
    "1" + "0" * 400, "-1e400", "1e999", "9" * 5000, "18446744073709551616", "-0.0", "NaN",
    "[" * 3000 + "]" * 3000,
)  # fmt: skip
_ODD = [f"\x00odd{i}\x00" for i in range(len(ODD_LITERALS))]


@st.composite
def edited_json(draw: st.DrawFn, obj: Any) -> bytes:
    """``obj`` as indented JSON with one change: a field (at any depth, in an object or a
    list) replaced by any JSON value or an odd literal, or removed; or the whole document
    replaced."""
    obj = json.loads(json.dumps(obj))
    value = st.one_of(JSON, st.sampled_from(_ODD))
    if draw(st.integers(0, 9)) == 0:
        obj = draw(value)
    else:
        node, key = obj, None
        while isinstance(node, dict | list) and node:
            key = draw(st.sampled_from(sorted(node)) if isinstance(node, dict)
                       else st.integers(0, len(node) - 1))  # fmt: skip
            child = node[key]
            if not isinstance(child, dict | list) or not child or draw(st.booleans()):
                break
            node = child
        if key is not None and isinstance(node, dict | list):
            if isinstance(node, dict) and draw(st.integers(0, 3)) == 0:
                del node[key]
            else:
                node[key] = draw(value)
    text = json.dumps(obj, indent=2)
    for marker, literal in zip(_ODD, ODD_LITERALS, strict=True):
        text = text.replace(json.dumps(marker), literal)
    return text.encode()
