"""The OpenAI SDK against the real gateway and SmolLM2/Gemma engines: chat, streaming, tools, json_schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}


def test_models_lists_default_alias_and_every_tier(openai_client) -> None:
    ids = {model.id for model in openai_client.models.list()}
    assert {"cascade", "slm", "fallback", "remote-llm"} <= ids
    assert all(":" in model for model in ids - {"cascade", "slm", "fallback", "remote-llm"}), "the rest: adapters"


def test_plain_chat_returns_text_usage_and_cascade_report(openai_client) -> None:
    response = openai_client.chat.completions.create(
        model="cascade", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0
    )
    assert response.choices[0].message.content
    assert 0 < response.usage.completion_tokens <= 12
    report = response.model_extra["cascade"]
    assert report["final_tier"] == "slm" and report["tiers_tried"] == ["slm"]
    assert report["cost_usd"] > 0


def test_logprobs_are_returned_per_generated_token(openai_client) -> None:
    response = openai_client.chat.completions.create(
        model="slm", messages=[{"role": "user", "content": "Count to three."}], max_tokens=8, logprobs=True,
        top_logprobs=2, temperature=0,
    )
    tokens = response.choices[0].logprobs.content
    assert len(tokens) == response.usage.completion_tokens
    assert all(token.logprob <= 0 and len(token.top_logprobs) == 2 for token in tokens)


def test_tier_streaming_yields_chunks_that_concatenate_to_the_answer(openai_client) -> None:
    stream = openai_client.chat.completions.create(
        model="slm", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=10, stream=True, temperature=0
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 1
    assert "".join(pieces).strip()


@pytest.mark.parametrize("model", ["slm", "fallback"])
def test_tool_choice_required_gives_a_call_that_validates(openai_client, model: str) -> None:
    response = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What's the weather in Paris, in celsius?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
        max_tokens=80,
        temperature=0.0,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER_TOOL, TIME_TOOL)}
    for call in choice.message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), tools[call.function.name])


def test_named_tool_choice_calls_that_function(openai_client) -> None:
    response = openai_client.chat.completions.create(
        model="cascade",
        messages=[{"role": "user", "content": "Weather in Oslo please, fahrenheit."}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=0.0,
    )
    [call] = response.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])


def test_forced_tool_call_streams_as_one_tool_call_chunk(openai_client) -> None:
    stream = openai_client.chat.completions.create(
        model="cascade",
        messages=[{"role": "user", "content": "Weather in Rome, celsius."}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        temperature=0.0,
        stream=True,
    )
    calls = [call for chunk in stream if chunk.choices for call in (chunk.choices[0].delta.tool_calls or [])]
    assert [call.function.name for call in calls] == ["get_weather"]
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER_TOOL["function"]["parameters"])


def test_json_object_response_format_is_json(openai_client) -> None:
    response = openai_client.chat.completions.create(
        model="slm",
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=0.0,
    )
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_python_handle_call_matches_http_shape(gateway_handle) -> None:
    body = gateway_handle.chat.remote(
        {"model": "cascade", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0}
    ).result(timeout_s=120)
    assert body["object"] == "chat.completion"
    assert body["cascade"]["final_tier"] == "slm"
    assert body["usage"]["completion_tokens"] <= 5


def test_python_handle_rejects_bad_input_with_gateway_error(gateway_handle) -> None:
    from deployments.protocol import GatewayError

    with pytest.raises(GatewayError) as raised:
        gateway_handle.chat.remote({"model": "nope", "messages": [{"role": "user", "content": "Hi"}]}).result(
            timeout_s=60
        )
    assert raised.value.status == 404
