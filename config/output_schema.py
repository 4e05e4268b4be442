"""Output schemas a prompt file may declare: a small, checked subset of JSON Schema.

A prompt's `==== SCHEMA ====` section holds a JSON object schema whose properties are strings
(optionally an `enum`), numbers, integers, booleans or arrays of strings. That subset is what
structured decoding constrains reliably and what every engine (the test engine too) can
produce; anything else is refused when the prompt is loaded, not when a batch runs.

Every schema is normalized before use: all properties required, no additional properties, and
bounded strings and arrays. The bounds matter: with a weak model, an unbounded string or list
runs to max_tokens and the output is cut mid-JSON (see ../README.md, Prompts).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from config.errors import OutputParseError, PromptError

STRING_MAX = 160  # characters, when a string property sets no maxLength
ITEM_MAX = 40  # characters of one array item
ARRAY_MAX = 6  # items, when an array property sets no maxItems
_SCALARS: dict[str, type] = {"string": str, "number": float, "integer": int, "boolean": bool}


def _bad(where: str, why: str) -> PromptError:
    return PromptError(
        f"schema of {where}: {why} (supported: an object of string, number, integer, "
        "boolean, enum and array-of-string properties)"
    )


def _property(where: str, name: str, prop: Any) -> dict[str, Any]:
    if not isinstance(prop, dict):
        raise _bad(where, f"property {name!r} is not an object")
    out = {k: v for k, v in prop.items() if k in ("description", "title")}
    if "enum" in prop:
        values = prop["enum"]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise _bad(where, f"enum of {name!r} must be a non-empty list of strings")
        return {**out, "type": "string", "enum": values}
    kind = prop.get("type")
    if kind == "string":
        return {**out, "type": "string", "maxLength": int(prop.get("maxLength", STRING_MAX))}
    if kind in ("number", "integer"):
        bounds = {k: prop[k] for k in ("minimum", "maximum") if k in prop}
        return {**out, "type": kind, **bounds}
    if kind == "boolean":
        return {**out, "type": "boolean"}
    if kind == "array":
        items = prop.get("items", {"type": "string"})
        if not isinstance(items, dict) or (items.get("type") != "string" and "enum" not in items):
            raise _bad(where, f"array {name!r} must hold strings")
        item = _property(where, f"{name}[]", {"maxLength": ITEM_MAX, **items, "type": "string"})
        return {**out, "type": "array", "items": item, "maxItems": int(prop.get("maxItems", ARRAY_MAX))}
    raise _bad(where, f"property {name!r} has unsupported type {kind!r}")


def normalize_schema(schema: Any, where: str) -> dict[str, Any]:
    """The schema as engines receive it, or a PromptError naming what is not supported."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise _bad(where, f"not valid JSON ({exc})") from exc
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise _bad(where, "the top level must be an object schema")
    props = schema.get("properties")
    if not isinstance(props, dict) or not props:
        raise _bad(where, "it declares no properties")
    properties = {str(name): _property(where, str(name), prop) for name, prop in props.items()}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _annotation(prop: dict[str, Any]) -> Any:
    if "enum" in prop:
        return Literal[tuple(prop["enum"])]
    if prop["type"] == "array":
        return list[_annotation(prop["items"])]
    return _SCALARS[prop["type"]]


def _model(schema: dict[str, Any]) -> type[BaseModel]:
    fields = {name: (_annotation(p), ...) for name, p in schema["properties"].items()}
    return create_model("PromptOutput", __config__=ConfigDict(extra="forbid", strict=True), **fields)


def parse_json_output(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The output's fields, checked against the schema; OutputParseError when they do not fit."""
    try:
        # strict=False: a raw control character inside a string (a constrained weak model emits
        # them; xgrammar lets them through) is noise in a value, not a broken structure
        data = json.loads(text, strict=False)
    except ValueError as exc:
        raise OutputParseError(f"not JSON ({exc.__class__.__name__}): {text[:80]!r}") from exc
    if isinstance(data, dict):  # JSON has one number type: 8 is a valid "number"
        data = {
            k: float(v)
            if schema["properties"].get(k, {}).get("type") == "number"
            and isinstance(v, int)
            and not isinstance(v, bool)
            else v
            for k, v in data.items()
        }
    try:
        fields = _model(schema).model_validate(data).model_dump()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'output'}: {e['msg']}" for e in exc.errors())
        raise OutputParseError(f"output does not fit the schema ({problems}): {text[:80]!r}") from exc
    for name, prop in schema["properties"].items():
        low, high = prop.get("minimum"), prop.get("maximum")
        if (low is not None and fields[name] < low) or (high is not None and fields[name] > high):
            raise OutputParseError(f"{name}={fields[name]} outside [{low}, {high}] in {text[:80]!r}")
    return fields
