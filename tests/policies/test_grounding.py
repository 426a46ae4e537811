import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.grounding import GroundingVerifier, TextIndex, conversation_text
from policies.verifiers import Candidate, ToolCall

WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]},
                   "days": {"type": "integer", "description": "Days ahead. Default is 1."}},
    "required": ["city", "unit"]}}}]
PARIS = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]


def call(name: str = "get_weather", **arguments: object) -> ToolCall:
    return ToolCall(name, json.dumps(arguments))


def verdict(*calls: ToolCall, messages=PARIS, tools=WEATHER):
    return GroundingVerifier(messages, tools).verify(Candidate(tool_calls=calls))


def test_the_readme_example_passes_with_paris_and_names_dijon_when_hallucinated():
    assert verdict(call(city="Paris", unit="celsius")).passed
    wrong = verdict(call(city="Dijon", unit="celsius"))
    assert not wrong.passed
    assert wrong.score == pytest.approx(0.5)  # the enum value is supported, the city is not
    assert wrong.reasons == ('get_weather.city: "Dijon" does not appear in the request',)


def test_a_repeated_call_is_flagged_even_when_each_value_is_supported():
    result = verdict(call(city="Paris", unit="celsius"), call(city="Paris", unit="celsius"))
    assert not result.passed
    assert result.reasons == ("the same call is made 2 times",)
    assert result.score == pytest.approx(4 / 5)  # four supported leaves and one duplicate


def test_a_second_invented_city_in_a_parallel_answer_is_flagged():
    result = verdict(call(city="Paris", unit="celsius"), call(city="Barcelona", unit="celsius"))
    assert not result.passed and "Barcelona" in result.reasons[0]


@pytest.mark.parametrize(("text", "value", "support"), [
    ("It costs 1,000 dollars", 1000, 1.0),
    ("a 20% discount", 0.2, 1.0),
    ("a 20% discount", 20, 1.0),
    ("five apples", 5, 1.0),
    ("half of it", 0.5, 1.0),
    ("a loss of 300", -300, 1.0),
    ("3.5k steps", 3500, 1.0),
    ("starting from rest", 0, 1.0),  # zero needs no source
    ("five apples", 6, 0.0),
])
def test_numbers_are_found_after_normalisation(text: str, value: float, support: float):
    assert TextIndex(text).number_support(value) == support


@pytest.mark.parametrize(("text", "value", "support"), [
    ("Find  SAN-francisco's hotels", "San Francisco", 1.0),
    ("flights to New York please", "new york city", 2 / 3),
    ("book it on June 30th, 2023", "2023-06-30", 1.0),
    ("book it on June 30th, 2023", "2023-07-30", 2 / 3),
    ("我想要肯德基的薯条", "肯德基", 1.0),  # no spaces in the script: a substring is a word
    ("the yorkshire moors", "york", 1.0),  # four letters or more inside a longer word
    ("in newark", "new", 0.0),  # a short value inside another word is no evidence
    ("anything", "", 1.0),
])
def test_strings_are_found_after_normalisation(text: str, value: str, support: float):
    assert TextIndex(text).string_support(value) == pytest.approx(support)


def test_schema_enum_default_and_description_support_values_absent_from_the_request():
    messages = [{"role": "user", "content": "Weather in Lyon?"}]
    tools = [{"type": "function", "function": {"name": "w", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "description": "Unit. Default is 'cm'."},
        "mode": {"type": "string", "default": "fast"}, "kind": {"enum": ["a", "b"]}}}}}]
    result = verdict(call("w", city="Lyon", unit="cm", mode="fast", kind="b"), messages=messages, tools=tools)
    assert result.passed and result.score == 1.0


def test_nested_values_and_a_json_answer_are_grounded_too():
    schema = {"type": "object", "properties": {"people": {"type": "array", "items": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}}}}
    messages = [{"role": "user", "content": "Ada is 36 and Alan is 41."}]
    verifier = GroundingVerifier(messages, response_schema=schema)
    good = json.dumps({"people": [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]})
    bad = json.dumps({"people": [{"name": "Ada", "age": 37}]})
    assert verifier.verify(Candidate(text=good)).passed
    result = verifier.verify(Candidate(text=bad))
    assert not result.passed and result.reasons == ("answer.people[0].age: 37 does not appear in the request",)


def test_an_answer_without_values_or_unparseable_is_fully_supported():
    # the form verifiers judge broken JSON; grounding has nothing to check in it
    assert verdict(ToolCall("get_weather", "{not json")).score == 1.0
    assert verdict(call()).score == 1.0


def test_the_conversation_includes_text_parts_and_earlier_tool_arguments():
    messages = [{"role": "user", "content": [{"type": "text", "text": "about Oslo"}]},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"function": {"name": "f", "arguments": "{\"x\": 42}"}}]}]
    assert "Oslo" in conversation_text(messages) and "42" in conversation_text(messages)


@given(st.lists(st.sampled_from(["Paris", "Dijon", "celsius", "x"]), min_size=1, max_size=4))
def test_the_score_is_the_mean_support_and_a_failure_always_gives_a_reason(cities: list[str]):
    calls = [call(city=c, unit="celsius") for c in dict.fromkeys(cities)]
    result = verdict(*calls)
    assert 0.0 <= result.score <= 1.0
    assert result.passed == all(c in {"Paris", "celsius"} for c in cities)
    assert result.passed or result.reasons


def test_an_allowed_value_is_unsupported_when_the_request_names_another_one():
    tools = [{"type": "function", "function": {"name": "todo", "parameters": {"type": "object", "properties": {
        "type": {"type": "string", "enum": ["add", "delete"]}, "content": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Add 'buy milk' to my list"}]
    assert verdict(call("todo", type="add", content="buy milk"), messages=messages, tools=tools).passed
    wrong = verdict(call("todo", type="delete", content="buy milk"), messages=messages, tools=tools)
    assert not wrong.passed and wrong.reasons == ('todo.type: "delete" does not appear in the request',)
    silent = [{"role": "user", "content": "Handle 'buy milk'"}]  # names no allowed value: either may be right
    assert verdict(call("todo", type="delete", content="buy milk"), messages=silent, tools=tools).passed


def test_a_sentence_copied_from_the_description_is_not_supported_by_it():
    tools = [{"type": "function", "function": {"name": "todo_add", "parameters": {"type": "object", "properties": {
        "content": {"type": "string", "description": "The text description of the to-do item."}}}}}]
    messages = [{"role": "user", "content": "Remember to call Ana"}]
    copied = verdict(call("todo_add", content="The text description of the to-do item."), messages=messages,
                     tools=tools)
    assert not copied.passed
    assert verdict(call("todo_add", content="call Ana"), messages=messages, tools=tools).passed
