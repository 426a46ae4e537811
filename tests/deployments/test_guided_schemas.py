"""Guided decoding (vLLM structured outputs, xgrammar backend) returns JSON valid against each requested schema."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

S = "string"
SCHEMAS: dict[str, dict] = {
    "flat_required": {"type": "object", "properties": {"name": {"type": S}, "age": {"type": "integer"}},
                      "required": ["name", "age"], "additionalProperties": False},
    "bounded_integer": {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
                        "required": ["score"], "additionalProperties": False},
    "bounded_number": {"type": "object", "properties": {"temp": {"type": "number", "minimum": -50, "maximum": 60}},
                       "required": ["temp"]},
    "exclusive_bounds": {"type": "object", "properties": {"p": {"type": "number", "exclusiveMinimum": 0,
                                                                "exclusiveMaximum": 1}}, "required": ["p"]},
    "string_enum": {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}},
                    "required": ["colour"]},
    "integer_enum": {"type": "object", "properties": {"level": {"type": "integer", "enum": [1, 2, 3]}},
                     "required": ["level"]},
    "boolean": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    "nullable": {"type": "object", "properties": {"note": {"type": ["string", "null"]}}, "required": ["note"]},
    "optional_fields": {"type": "object", "properties": {"a": {"type": S}, "b": {"type": "integer"}},
                        "required": ["a"], "additionalProperties": False},
    "nested_object": {"type": "object", "properties": {"user": {"type": "object", "properties": {
        "id": {"type": "integer"}, "email": {"type": S}}, "required": ["id", "email"]}}, "required": ["user"]},
    "deeply_nested": {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {
        "type": "object", "properties": {"c": {"type": "integer"}}, "required": ["c"]}}, "required": ["b"]}},
        "required": ["a"]},
    "string_array": {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": S}}},
                     "required": ["tags"]},
    "bounded_array": {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"},
                                                              "minItems": 2, "maxItems": 3}}, "required": ["xs"]},
    "array_of_objects": {"type": "object", "properties": {"items": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "properties": {"sku": {"type": S}, "qty": {"type": "integer", "minimum": 1}},
        "required": ["sku", "qty"]}}}, "required": ["items"]},
    "top_level_array": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 4},
    "string_length": {"type": "object", "properties": {"code": {"type": S, "minLength": 3, "maxLength": 5}},
                      "required": ["code"]},
    "pattern": {"type": "object", "properties": {"zip": {"type": S, "pattern": "^[0-9]{5}$"}}, "required": ["zip"]},
    "any_of": {"type": "object", "properties": {"v": {"anyOf": [{"type": "integer"}, {"type": S}]}},
               "required": ["v"]},
    "const": {"type": "object", "properties": {"kind": {"const": "event"}, "n": {"type": "integer"}},
              "required": ["kind", "n"]},
    "refs": {"type": "object", "$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"]}},
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"]},
    "mixed_tool_args": {"type": "object", "properties": {
        "query": {"type": S}, "limit": {"type": "integer", "minimum": 1, "maximum": 10},
        "sort": {"enum": ["asc", "desc"]}, "filters": {"type": "object", "properties": {
            "after": {"type": S}}, "additionalProperties": False}},
        "required": ["query", "limit", "sort"], "additionalProperties": False},
    "date_format_string": {"type": "object", "properties": {"when": {"type": S, "format": "date"}},
                           "required": ["when"]},
}


def _ask(openai_client, name: str, schema: dict) -> tuple[str, str]:
    response = openai_client.chat.completions.create(
        model="slm",
        messages=[{"role": "user", "content": f"Produce an example '{name}' object as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
        max_tokens=200,
        temperature=0.0,  # deterministic; the tier's default repetition penalty still applies
    )
    choice = response.choices[0]
    return choice.finish_reason, choice.message.content


@pytest.fixture(scope="module")
def answers(openai_client) -> dict[str, tuple[str, str]]:
    """All schemas asked at once, so the engine batches them as it would under load (eight answers of up to 200
    tokens in one batch on a loaded 2-core machine: a client timeout far above the 120 s of single requests)."""
    client = openai_client.with_options(timeout=600)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {name: pool.submit(_ask, client, name, schema) for name, schema in SCHEMAS.items()}
        return {name: future.result() for name, future in futures.items()}


def test_at_least_twenty_varied_schemas() -> None:
    assert len(SCHEMAS) >= 20


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_guided_output_validates_against_its_schema(answers, name: str) -> None:
    finish_reason, content = answers[name]
    assert finish_reason == "stop", f"answer cut short: {content!r}"
    jsonschema.validate(json.loads(content), SCHEMAS[name], format_checker=jsonschema.FormatChecker())
