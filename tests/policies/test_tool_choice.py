"""Forced tool choices become a JSON Schema and come back as OpenAI tool_calls (pure functions)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from policies.tool_choice import ForcedTools, forced_tool_schema, rewrite_forced_tool_choice, to_tool_calls

ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
NOW = {"type": "function", "function": {"name": "now"}}
BODY = {"model": "slm", "messages": [{"role": "user", "content": "2+3?"}], "tools": [ADD, NOW]}


def test_auto_and_absent_tool_choice_are_left_alone() -> None:
    for choice in (None, "auto", "none"):
        body = {**BODY, "tool_choice": choice}
        assert rewrite_forced_tool_choice(body, describe_tools=True) == (body, None)


def test_required_becomes_an_array_schema_of_known_calls() -> None:
    rewritten, forced = rewrite_forced_tool_choice({**BODY, "tool_choice": "required"}, describe_tools=False)
    assert forced == ForcedTools(function_name=None)
    assert "tools" not in rewritten and "tool_choice" not in rewritten
    schema = rewritten["response_format"]["json_schema"]["schema"]
    jsonschema.validate([{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "now", "arguments": {}}], schema)
    for wrong in ([], [{"name": "sub", "arguments": {}}], [{"name": "add", "arguments": {"a": 1}}]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)


def test_parallel_tool_calls_false_allows_one_call() -> None:
    schema = forced_tool_schema([ADD], ForcedTools(None), parallel=False)
    assert schema["maxItems"] == 1


def test_named_choice_uses_the_function_parameters_and_can_describe_tools() -> None:
    choice = {"type": "function", "function": {"name": "add"}}
    rewritten, forced = rewrite_forced_tool_choice({**BODY, "tool_choice": choice}, describe_tools=True)
    assert forced == ForcedTools("add")
    assert rewritten["response_format"]["json_schema"]["schema"] == ADD["function"]["parameters"]
    system = rewritten["messages"][0]
    assert system["role"] == "system" and "add: Add two integers." in system["content"]
    assert rewritten["messages"][1:] == BODY["messages"]


def test_named_choice_of_unknown_function_is_an_error() -> None:
    with pytest.raises(ValueError, match="'sub'"):
        rewrite_forced_tool_choice({**BODY, "tool_choice": {"type": "function", "function": {"name": "sub"}}}, False)


def _response(content: str, finish_reason: str = "stop") -> dict:
    return {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": finish_reason}]}


def test_json_answers_become_tool_calls() -> None:
    named = to_tool_calls(_response('{"a": 2, "b": 3}'), ForcedTools("add"))
    [call] = named["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "add" and json.loads(call["function"]["arguments"]) == {"a": 2, "b": 3}
    assert named["choices"][0]["message"]["content"] is None
    assert named["choices"][0]["finish_reason"] == "tool_calls"
    listed = to_tool_calls(_response('[{"name":"now","arguments":{}},{"name":"add","arguments":{"a":1,"b":1}}]'),
                           ForcedTools(None))
    assert [c["function"]["name"] for c in listed["choices"][0]["message"]["tool_calls"]] == ["now", "add"]


def test_truncated_answer_stays_text_for_the_verifiers() -> None:
    response = _response('{"a": 2, "b', finish_reason="length")
    assert to_tool_calls(response, ForcedTools("add")) == response
