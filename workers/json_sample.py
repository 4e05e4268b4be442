"""A deterministic instance of a simple JSON schema, for the test engine's "json" format.

Covers what request schemas usually hold: objects (properties, required), arrays (items,
minItems/maxItems), strings (enum, const, minLength/maxLength, a few formats), integers and
numbers (minimum/maximum, exclusive bounds, multipleOf), booleans, null, enum/const anywhere,
anyOf/oneOf/allOf (the first branch) and local `$ref`s into `$defs`/`definitions`.
The same schema and seed always give the same value; it is not a model, only a stand-in.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 12


def sample(schema: dict[str, Any] | bool | None, seed: int) -> Any:
    """A value valid against `schema` (for the keywords listed above), chosen by `seed`."""
    root = schema if isinstance(schema, dict) else {}
    return _value(root, root, seed, 0)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _value(schema: dict[str, Any], root: dict[str, Any], seed: int, depth: int) -> Any:
    schema = _resolve(schema, root)
    if depth > MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][seed % len(schema["enum"])]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _value(schema[key][0], root, seed, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root))
        return _value(merged, root, seed, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return {
        "object": _object,
        "array": _array,
        "string": _string,
        "integer": _integer,
        "number": _number,
        "boolean": lambda s, r, n, d: bool(n % 2),
        "null": lambda s, r, n, d: None,
    }.get(kind, _string)(schema, root, seed, depth)


def _object(schema: dict[str, Any], root: dict[str, Any], seed: int, depth: int) -> dict[str, Any]:
    props = schema.get("properties", {})
    # every listed property, so the instance is useful; required ones are among them
    names = list(props) + [n for n in schema.get("required", []) if n not in props]
    return {name: _value(props.get(name, {}), root, seed + 7 * i + 1, depth + 1) for i, name in enumerate(names)}


def _array(schema: dict[str, Any], root: dict[str, Any], seed: int, depth: int) -> list[Any]:
    low = int(schema.get("minItems", 1))
    high = int(schema.get("maxItems", max(low, 3)))
    count = low + seed % (high - low + 1)
    items = schema.get("items", {})
    return [_value(items if isinstance(items, dict) else {}, root, seed + 13 * i, depth + 1) for i in range(count)]


FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "email": "test@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string(schema: dict[str, Any], root: dict[str, Any], seed: int, depth: int) -> str:
    if schema.get("format") in FORMATS:
        return FORMATS[schema["format"]]
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", max(low, 24)))
    text = f"test value {seed % 9973}"
    while len(text) < low:
        text += " x"
    return text[: max(low, high)]


def _bounds(schema: dict[str, Any]) -> tuple[float, float]:
    low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
    high = schema.get("maximum", schema.get("exclusiveMaximum", low + 100))
    return float(low), float(high)


def _integer(schema: dict[str, Any], root: dict[str, Any], seed: int, depth: int) -> int:
    low, high = _bounds(schema)
    first = math.floor(low) + 1 if "exclusiveMinimum" in schema and "minimum" not in schema else math.ceil(low)
    last = math.ceil(high) - 1 if "exclusiveMaximum" in schema and "maximum" not in schema else math.floor(high)
    step = int(schema.get("multipleOf", 1)) or 1
    first = first + (-first) % step
    choices = max(1, (last - first) // step + 1)
    return first + step * (seed % choices)


def _number(schema: dict[str, Any], root: dict[str, Any], seed: int, depth: int) -> float:
    low, high = _bounds(schema)
    step = schema.get("multipleOf")
    if step:  # the smallest multiple at or above the lower bound
        value = math.ceil(low / step) * step
        return value + step if value <= low and "exclusiveMinimum" in schema else value
    # strictly inside the bounds, so exclusive limits hold too
    return round(low + (high - low) * ((seed % 97) + 1) / 99, 4) if high > low else low
