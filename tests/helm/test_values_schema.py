"""values.schema.json: its `cascade` part is generated from CascadeConfig, and Helm checks values against it."""

from __future__ import annotations

import json

import pytest

from cluster.config import CascadeConfig
from cluster.operations.render import VALUES_SCHEMA_FILE, RenderError, cascade_schema, render_chart, values_schema

FIX = 'regenerate: python -c "from cluster.operations.render import write_values_schema; write_values_schema()"'


def test_the_checked_in_schema_is_generated_from_the_config_model() -> None:
    assert json.loads(VALUES_SCHEMA_FILE.read_text()) == values_schema(), FIX


def test_the_cascade_schema_is_the_models_with_every_model_and_field() -> None:
    model = CascadeConfig.model_json_schema()
    schema = cascade_schema()
    assert set(schema["$defs"]) == set(model["$defs"])
    for name, definition in model["$defs"].items():
        assert set(schema["$defs"][name].get("properties", {})) == set(definition.get("properties", {})), name
    assert set(schema["properties"]) == set(model["properties"])
    assert all(ref.startswith("#/properties/cascade/$defs/") for ref in _refs(schema))


def test_the_hand_written_part_is_left_as_it_is() -> None:
    written = json.loads(VALUES_SCHEMA_FILE.read_text())
    generated = values_schema({**written, "properties": {**written["properties"], "cascade": {}}})
    assert {k: v for k, v in generated["properties"].items() if k != "cascade"} == {
        k: v for k, v in written["properties"].items() if k != "cascade"}


@pytest.mark.parametrize(("cascade", "fragments"), [
    ({"tiers": [{"name": "slm", "model": "m", "engine_args": {}, "warm_up": "yes"}]},
     ["/cascade/tiers/0/warm_up", "boolean"]),
    ({"tiers": [{"name": "slm", "model": "m"}], "multinode": {"pools": {"Pool-X": {}}}},
     ["/cascade/multinode/pools", "Pool-X"]),
    ({"tiers": [{"name": "slm", "model": "m", "lora": {"max_lora_rank": 12}}]},
     ["/cascade/tiers/0/lora/max_lora_rank"]),
    ({"tiers": [{"kind": "remote", "name": "llm", "base_url": "ftp://x", "remote_model": "m"}]},
     ["/cascade/tiers/0/base_url", "pattern"]),
])
def test_helm_rejects_what_the_model_rejects_naming_the_field(cascade: dict, fragments: list[str]) -> None:
    with pytest.raises(RenderError) as caught:
        render_chart({"cascade": cascade})
    assert "values.schema.json" in str(caught.value)
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)
    with pytest.raises(ValueError):
        CascadeConfig.model_validate(cascade)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []
