"""The test engine's JSON for a request's schema: valid against it, the same every time."""

import jsonschema
import pytest

from workers.json_sample import sample

SCHEMAS = {
    "object with enum, bounded integer, boolean, array, number": {
        "type": "object",
        "required": ["category", "score"],
        "additionalProperties": False,
        "properties": {
            "category": {"type": "string", "enum": ["cat", "dog"]},
            "score": {"type": "integer", "minimum": 0, "maximum": 10},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 2},
            "p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        },
    },
    "refs, nullable types and long strings": {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/long"}, "n": {"type": ["null", "integer"]}},
        "$defs": {"long": {"type": "string", "minLength": 30}},
    },
    "array of anyOf with multipleOf": {
        "type": "array",
        "items": {"anyOf": [{"type": "integer", "multipleOf": 3, "minimum": 4}]},
    },
    "formats and const": {
        "type": "object",
        "properties": {"when": {"type": "string", "format": "date-time"}, "kind": {"const": "photo"}},
    },
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_seed_gives_a_value_valid_against_the_schema(name):
    schema = SCHEMAS[name]
    for seed in range(200):
        jsonschema.validate(sample(schema, seed), schema)


def test_the_same_schema_and_seed_give_the_same_value():
    schema = SCHEMAS["object with enum, bounded integer, boolean, array, number"]
    assert sample(schema, 42) == sample(schema, 42)
    assert len({str(sample(schema, s)) for s in range(20)}) > 1  # the seed matters
