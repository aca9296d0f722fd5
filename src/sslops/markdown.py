"""Markdown shared by the generated documents (the data card, the model card)."""

from __future__ import annotations

from typing import Any

_CELL = str.maketrans({"|": "\\|", "\n": " ", "\r": " "})


def md_cell(text: Any) -> str:
    """A Markdown table cell as its text: a group crossing is named "Female | White", which
    unescaped would be two cells and shift every number after it one column (a ``|`` inside
    backticks splits a cell too); a category value must not become a link."""
    return str(text).translate(_CELL).replace("](", "\\](")
