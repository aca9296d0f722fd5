"""The config's JSON Schema (editors) and Markdown reference (docs/config.md), both generated
from the pydantic model in :mod:`sslops.config`, so neither can drift from what is validated.

``python -m sslops.config_reference`` prints the reference part of docs/config.md;
``sslops config --schema`` prints the schema.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from sslops.config import Config, GateOverride

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_KEY_NAMES: dict[Any, str] = {GateOverride: "gate"}  # what the keys of a mapping of sections name


def config_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of a config file: keys, types, allowed values and ranges. The
    rules across keys (a tabular config names data.sensitive, ...) are checked by
    ``sslops config``, not by the schema."""
    schema = Config.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema, "title": "sslops config"}


def _sections(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The sections inside a field's type, with the suffix their keys take: ``prepare.pii``,
    ``audit.overrides.<gate>`` (a mapping of sections), ``platform.cpu_pool.tolerations[]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation
        return
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        yield from ((f"[]{s}", m) for s, m in _sections(args[0]))
    elif origin is dict:
        yield from ((f".<{_KEY_NAMES.get(args[1], 'name')}>{s}", m) for s, m in _sections(args[1]))
    else:
        for arg in args:
            yield from _sections(arg)


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:  # a list item with a range: list[Share]
        bounds = _bounds(list(annotation.__metadata__))
        return f"{_type(args[0])} ({bounds})" if bounds else _type(args[0])
    if origin is Literal:
        return " / ".join(f"`{json.dumps(a).strip(chr(34))}`" for a in args)
    if origin in (Union, types.UnionType):
        kinds = [_type(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or `null`" if type(None) in args else "")
    if origin is list:
        inner = _type(args[0])
        return f"list of ({inner})" if " or " in inner else f"list of {inner}"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _bounds(metadata: list[Any]) -> str:
    """pydantic's constraints (annotated_types objects: Ge(ge=0), MinLen(min_length=1), ...)
    as a reader writes them."""
    found = []
    for item in metadata:
        if isinstance(item, FieldInfo):  # Annotated[float, Field(ge=0)]
            found += [b for b in [_bounds(item.metadata)] if b]
            continue
        attr = type(item).__name__.lower()
        if attr in _SIGNS:
            bound = getattr(item, attr)
            found.append(
                f"{_SIGNS[attr]} {bound if isinstance(bound, int) else format(bound, 'g')}"
            )
        if attr == "minlen":
            found.append(f"at least {item.min_length} item{'s' * (item.min_length != 1)}")
        if attr == "maxlen":
            found.append(f"at most {item.max_length} items")
        if getattr(item, "pattern", None):
            found.append(f"matching `{item.pattern}`")
    return ", ".join(found)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(its keys' defaults)"
    return f"`{json.dumps(to_jsonable_python(value))}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def _section_table(prefix: str, model: type[BaseModel]) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = _type(field.annotation)
        bounds = _bounds(field.metadata)
        kind += f" ({bounds})" if bounds else ""
        nested = [m for _, m in _sections(field.annotation)]
        about = section_description(nested[0], field) if nested else field.description or ""
        rows.append(
            f"| `{prefix}{name}` | {_cell(kind)} | {_cell(_default(field))} | {_cell(about)} |"
        )
    return rows


def _walk(prefix: str, model: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel]]]:
    yield prefix, model
    for name, field in model.model_fields.items():
        for suffix, section in _sections(field.annotation):
            yield from _walk(f"{prefix}{name}{suffix}.", section)


def section_description(model: type[BaseModel], field: FieldInfo | None) -> str:
    """What a section is for: its field's description, else its class docstring."""
    text = (field.description if field else None) or (model.__doc__ or "")
    return " ".join(text.split())


def config_reference() -> str:
    """Every key of a config, one table per section: type, allowed values and range,
    default, description."""
    out: list[str] = []
    for prefix, model in _walk("", Config):
        heading = prefix.rstrip(".") or "(top level)"
        field = _field_at(prefix)
        out += [f"### `{heading}`", ""]
        about = _cell(section_description(model, field))
        out += [about, ""] if about else []
        out += [*_section_table(prefix, model), ""]
    return "\n".join(out)


def _field_at(prefix: str) -> FieldInfo | None:
    """The field a section prefix such as ``finetune.fairness.`` hangs from."""
    parts = [p.split("[")[0] for p in prefix.rstrip(".").split(".") if p and not p.startswith("<")]
    model: type[BaseModel] = Config
    field = None
    for part in parts:
        field = model.model_fields[part]
        nested = [m for _, m in _sections(field.annotation)]
        if nested:
            model = nested[0]
    return field


if __name__ == "__main__":
    print(config_reference(), end="")
