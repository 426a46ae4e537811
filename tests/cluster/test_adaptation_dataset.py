"""Training pairs are what the serving path renders and what guided decoding makes the SLM emit."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from cluster.adaptation.dataset import (
    NotEnoughDataError,
    build_pairs,
    require_minimum,
    split_held_out,
)
from cluster.store.recording import RecordedExample
from policies.tool_choice import rewrite_forced_tool_choice, to_tool_calls, tools_system_prompt

TOOLS = [
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]}}},
    {"type": "function", "function": {
        "name": "convert_temperature", "description": "Celsius to Fahrenheit.",
        "parameters": {"type": "object", "properties": {"celsius": {"type": "number"}}, "required": ["celsius"]}}},
]
MESSAGES = [{"role": "user", "content": "What is 2 plus 3, and 20 °C in °F?"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": "call_x", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, indent=2, ensure_ascii=False)}}


def recorded(request: dict[str, Any], answer: dict[str, Any], id_: str = "ex") -> RecordedExample:
    return RecordedExample(id=id_, route="r", tier="fallback", created_at=0.0, request=request, answer=answer)


REQUIRED = recorded(
    {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required"},
    {"role": "assistant", "content": None,
     "tool_calls": [call("add", {"a": 2, "b": 3}), call("convert_temperature", {"celsius": 20})]},
)
NAMED = recorded(
    {"messages": MESSAGES, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "add"}}},
    {"role": "assistant", "content": None, "tool_calls": [call("add", {"a": 2, "b": 3})]},
)
JSON_SCHEMA = recorded(
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "Where is"},
                                                {"type": "text", "text": "Zürich?"}]}],
     "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}},
    {"role": "assistant", "content": '{ "city" : "Zürich" }'},
)


def engine_answer(target: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": target}, "finish_reason": "stop"}]}


def calls_of(message: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]]


@pytest.mark.parametrize("example", [REQUIRED, NAMED], ids=["required", "named"])
def test_tool_targets_are_what_guided_decoding_emits_and_turn_back_into_the_answer(example):
    [pair] = build_pairs([example]).pairs
    rewritten, forced = rewrite_forced_tool_choice(example.request, describe_tools=True)
    assert pair.messages == [{"role": "system", "content": tools_system_prompt(TOOLS)}, *MESSAGES]
    assert pair.tools is None  # the rewrite moves tools into the system message and the schema
    answer = json.loads(pair.target)
    jsonschema.validate(answer, rewritten["response_format"]["json_schema"]["schema"])
    assert pair.target == json.dumps(answer, separators=(",", ":"), ensure_ascii=False)
    [choice] = to_tool_calls(engine_answer(pair.target), forced)["choices"]
    assert calls_of(choice["message"]) == calls_of(example.answer)


def test_required_target_is_a_compact_list_of_calls():
    [pair] = build_pairs([REQUIRED]).pairs
    assert pair.target == ('[{"name":"add","arguments":{"a":2,"b":3}},'
                           '{"name":"convert_temperature","arguments":{"celsius":20}}]')


def test_named_target_is_the_arguments_object():
    assert build_pairs([NAMED]).pairs[0].target == '{"a":2,"b":3}'


def test_json_schema_target_is_the_content_as_compact_json():
    [pair] = build_pairs([JSON_SCHEMA]).pairs
    assert pair.target == '{"city":"Zürich"}'
    assert pair.messages == [{"role": "user", "content": "Where is\nZürich?"}]  # text parts as vLLM joins them


def test_tools_are_described_only_when_the_tier_does():
    [pair] = build_pairs([NAMED], describe_tools=False).pairs
    assert pair.messages == MESSAGES


def test_history_renders_like_vllm():
    history = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [call("add", {"a": 2, "b": 3})]},
               {"role": "tool", "tool_call_id": "call_x", "content": "5"}]
    example = recorded({**NAMED.request, "messages": history}, NAMED.answer)
    assistant = build_pairs([example]).pairs[0].messages[2]
    assert assistant["content"] == ""
    assert assistant["tool_calls"][0]["function"]["arguments"] == {"a": 2, "b": 3}


def test_free_text_and_invalid_examples_are_skipped_and_counted():
    free_text = recorded({"messages": MESSAGES}, {"role": "assistant", "content": "5"})
    auto_tools = recorded({"messages": MESSAGES, "tools": TOOLS, "tool_choice": "auto"}, NAMED.answer)
    json_object = recorded({"messages": MESSAGES, "response_format": {"type": "json_object"}},
                           {"role": "assistant", "content": "{}"})
    wrong_function = recorded(NAMED.request, {"role": "assistant", "tool_calls": [call("convert_temperature", {})]})
    not_json = recorded(JSON_SCHEMA.request, {"role": "assistant", "content": "Zürich"})
    unknown_name = recorded({**NAMED.request, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
                            NAMED.answer)
    serial = recorded({**REQUIRED.request, "parallel_tool_calls": False}, REQUIRED.answer)
    no_calls = recorded(REQUIRED.request, {"role": "assistant", "content": "I would add them."})
    built = build_pairs([free_text, REQUIRED, auto_tools, json_object, wrong_function, not_json, unknown_name,
                         serial, no_calls, JSON_SCHEMA])
    assert [pair.id for pair in built.pairs] == ["ex", "ex"]
    assert (built.skipped_free_text, built.skipped_invalid) == (3, 5)


def test_split_is_deterministic_stable_and_about_the_fraction():
    examples = [recorded(REQUIRED.request, REQUIRED.answer, id_=f"id-{i}") for i in range(400)]
    train, held_out = split_held_out(examples)
    assert (train, held_out) == split_held_out(examples)
    assert {e.id for e in held_out} == {e.id for e in split_held_out(list(reversed(examples)))[1]}
    assert len(train) + len(held_out) == 400 and 70 <= len(held_out) <= 130
    # Recording more never moves an example across: held-out cases stay unseen by later adapters.
    more = [*examples, *(recorded(REQUIRED.request, REQUIRED.answer, id_=f"new-{i}") for i in range(100))]
    assert {e.id for e in held_out} <= {e.id for e in split_held_out(more)[1]}
    assert {e.id for e in split_held_out(examples, seed=1)[1]} != {e.id for e in held_out}


def test_split_holds_out_at_least_the_minimum_whatever_the_ids():
    """24 examples by a quarter leave fewer than 4 held out for some id sets (uuid4 ids made that a CI flake);
    the minimum is exact for every one of these 200 id sets, and the lowest hashes make up the difference."""
    short = 0
    for trial in range(200):
        examples = [recorded(REQUIRED.request, REQUIRED.answer, id_=f"t{trial}-{i}") for i in range(24)]
        by_share = split_held_out(examples)[1]
        train, held_out = split_held_out(examples, minimum=4)
        short += len(by_share) < 4
        assert len(held_out) == max(4, len(by_share)) and len(train) + len(held_out) == 24
        assert {e.id for e in by_share} <= {e.id for e in held_out}
    assert short > 0  # the id sets include ones the hash share alone would have left short


def test_split_rejects_a_fraction_outside_zero_one():
    with pytest.raises(ValueError, match="fraction"):
        split_held_out([], fraction=1.0)


def test_not_enough_data_says_what_was_recorded_and_what_is_needed():
    require_minimum(8, 4)
    with pytest.raises(NotEnoughDataError) as error:
        require_minimum(5, 1)
    assert "6 usable examples recorded (5 for training, 1 held out)" in str(error.value)
    assert "at least 8 for training and 4 held out" in str(error.value)
    assert isinstance(error.value, ValueError)
