import json

import pytest

from cluster.evaluation.bfcl import CATEGORIES, BenchDataError, load_cases, to_openai_tool
from policies.verifiers import validate_tool_schemas


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_every_category_loads_with_valid_tool_schemas(category):
    cases = load_cases(category, limit=25)
    assert cases and all(case.category == category for case in cases)
    assert all(case.id.startswith(category) for case in cases)  # irrelevance is not live_irrelevance
    for case in cases:
        assert case.messages[-1]["role"] == "user"
        validate_tool_schemas(case.tools)  # the gateway would accept them
        assert (case.ground_truth is None) == (not case.expects_calls)


def test_bfcl_types_become_json_schema():
    tool = to_openai_tool({"name": "f", "description": "d", "parameters": {"type": "dict", "required": ["a", "ghost"],
        "properties": {"a": {"type": "float"}, "b": {"type": "tuple", "items": {"type": "integer"}},
                       "c": {"type": "any"}, "d": {"type": "dict", "properties": {"e": {"type": "boolean"}}},
                       "f": {"type": "boolean", "enum": ["True", "False"], "optional": True},
                       "g": {"type": "string", "enum": ["x", 1]}}}})
    params = tool["function"]["parameters"]
    assert params["type"] == "object" and params["required"] == ["a"]
    props = params["properties"]
    assert props["a"] == {"type": "number"}
    assert props["b"] == {"type": "array", "items": {"type": "integer"}}
    assert props["c"] == {"type": "string"}  # as BFCL's own OpenAI conversion, which its checker expects
    assert props["d"] == {"type": "object", "properties": {"e": {"type": "boolean"}}}
    assert props["f"] == {"type": "boolean"}  # enum contradicting the type dropped; `optional` is not JSON Schema
    assert props["g"]["enum"] == ["x"]


def test_unknown_category_names_the_known_ones():
    with pytest.raises(BenchDataError, match="unknown BFCL category 'simple_rust'.*simple_python.*irrelevance"):
        load_cases("simple_rust")


def test_empty_or_missing_data_is_a_clear_error(tmp_path):
    (tmp_path / "BFCL_v4_simple_python.json").write_text("")
    with pytest.raises(BenchDataError, match="no cases.*known: simple_python"):
        load_cases("simple_python", folder=tmp_path)
    with pytest.raises(BenchDataError, match="no BFCL file for category 'multiple'"):
        load_cases("multiple", folder=tmp_path)


def test_limit_must_be_positive():
    with pytest.raises(BenchDataError, match="limit must be at least 1"):
        load_cases("simple_python", 0)


def test_case_without_possible_answer_is_named(tmp_path):
    row = {"id": "simple_python_0", "question": [[{"role": "user", "content": "hi"}]],
           "function": [{"name": "f", "parameters": {"type": "dict", "properties": {}}}]}
    (tmp_path / "BFCL_v4_simple_python.json").write_text(json.dumps(row) + "\n")
    (tmp_path / "possible_answer").mkdir()
    (tmp_path / "possible_answer" / "BFCL_v4_simple_python.json").write_text("")
    with pytest.raises(BenchDataError, match="simple_python_0.*no possible answer"):
        load_cases("simple_python", folder=tmp_path)
