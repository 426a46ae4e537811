"""The gateway's request checks without Ray: what each mistake costs the client (status, param, code), and which
schemas are validated on the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.config import GatewayConfig
from deployments import gateway_validation
from deployments.gateway_validation import INLINE_SCHEMA_BYTES, ModelCatalog, RequestValidator, schema_key
from deployments.protocol import ChatRequest, GatewayError

GATEWAY = GatewayConfig(auth={"required": False}, max_tokens_limit=100, default_max_tokens=10)
MODELS = ModelCatalog(tiers=("slm", "fallback"), lora_tiers=("slm",))
HELLO: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}]}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
BAD_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "wrong"}}}


def validate(**fields: Any) -> ChatRequest:
    return RequestValidator(GATEWAY, MODELS).validate({**HELLO, **fields})


def refusal(**fields: Any) -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        validate(**fields)
    return raised.value


@pytest.mark.parametrize("model", ["cascade", "slm", "fallback", "slm:alpha", "slm:v2-b_c"])
def test_known_models_pass(model: str) -> None:
    assert validate(model=model).model == model


@pytest.mark.parametrize("model", ["gpt-17", "fallback:alpha", "slm:", "slm:no spaces", "slm:../up", "slm:Upper"])
def test_an_unknown_model_is_a_404_that_lists_the_known(model: str) -> None:
    error = refusal(model=model)
    assert (error.status, error.param, error.code) == (404, "model", "model_not_found")
    assert error.message.endswith("known: cascade, slm, fallback, slm:ADAPTER")


def test_max_tokens_defaults_to_the_gateways_and_is_bounded() -> None:
    assert validate().max_tokens == 10
    assert validate(max_completion_tokens=50).requested_max_tokens == 50
    for field in ("max_tokens", "max_completion_tokens"):
        error = refusal(**{field: 101})
        assert (error.status, error.param, error.code) == (400, field, "invalid_value")


@pytest.mark.parametrize(("fields", "param", "code"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectz"}}}},
     "response_format.json_schema.schema", "invalid_schema"),
    ({"tools": [BAD_TOOL], "tool_choice": "required"}, "tools", "invalid_schema"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice",
     "invalid_value"),
    ({"stream": True, "stream_options": "yes"}, "stream_options", "invalid_value"),
    ({"n": 2}, "n", "invalid_value"),
    ({"messages": []}, "messages", "invalid_value"),
    ({"max_tokens": "many"}, "max_tokens", "invalid_value"),
])
def test_each_mistake_is_a_400_naming_its_field(fields: dict, param: str, code: str) -> None:
    error = refusal(**fields)
    assert error.status == 400 and error.param.startswith(param) and error.code == code, error.message


def test_a_schema_over_the_request_budget_is_refused_before_it_is_compiled() -> None:
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5000)}}
    error = refusal(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": wide}})
    assert (error.status, error.param, error.code) == (400, "response_format", "invalid_schema")


def test_n_above_one_is_fine_on_a_tier_and_a_parsed_request_is_taken_as_it_is() -> None:
    assert validate(model="slm", n=2).n == 2
    parsed = ChatRequest.model_validate({**HELLO, "max_tokens": 5})
    assert RequestValidator(GATEWAY, MODELS).validate(parsed) is parsed


def test_a_body_that_is_not_an_object_is_a_400() -> None:
    with pytest.raises(GatewayError) as raised:
        RequestValidator(GATEWAY, MODELS).validate([1, 2, 3])  # type: ignore[arg-type]
    assert raised.value.status == 400 and raised.value.code == "invalid_value"


def test_schema_keys_name_the_schema_fields_only_and_skip_what_is_too_big_for_the_event_loop() -> None:
    with_tool = {**HELLO, "tools": [TOOL]}
    assert schema_key(with_tool) == schema_key({**with_tool, "messages": [{"role": "user", "content": "Other"}]})
    assert schema_key(with_tool) != schema_key(HELLO)
    big = {"type": "object", "description": "x" * INLINE_SCHEMA_BYTES}
    assert schema_key({**HELLO, "response_format": {"type": "json_schema", "json_schema": {"schema": big}}}) is None
    assert schema_key([1]) is None and schema_key({"tools": {1, 2}}) is None


def test_only_a_schema_new_to_the_replica_is_validated_in_a_thread(monkeypatch) -> None:
    threaded: list[Any] = []
    to_thread = asyncio.to_thread

    async def counted(function, *args):
        threaded.append(args[0])
        return await to_thread(function, *args)

    monkeypatch.setattr(gateway_validation.asyncio, "to_thread", counted)
    monkeypatch.setattr(gateway_validation, "SCHEMA_KEYS_KEPT", 1)
    validator = RequestValidator(GATEWAY, MODELS)
    first, second = {**HELLO, "tools": [TOOL]}, HELLO

    async def check_all(*requests: dict) -> None:
        for request in requests:
            await validator.checked(request)

    asyncio.run(check_all(first, first, second, first))
    assert threaded == [first, second, first], "seen: on the loop; new, or forgotten (one key kept): in a thread"
