"""What a client gets back, without Ray: the body and its report, logprobs as asked, headers, span outcome, SSE."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.config import RouteConfig
from cluster.telemetry import semconv
from deployments.cascade import CascadeResult, CascadeRunner, Tier
from deployments.gateway_response import outcome_attributes, prepend, report_headers, response_body, sse_lines
from deployments.protocol import ChatRequest, GatewayError
from deployments.vllm_engine import ChatResult
from policies.cost import TierPrice

TOKENS = [{"token": "Hi", "logprob": -0.1, "top_logprobs": [{"token": "Hi", "logprob": -0.1},
                                                           {"token": "Yo", "logprob": -2.5},
                                                           {"token": "Hey", "logprob": -3.0}]}]
ANSWER = ChatResult(body={
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "slm",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"},
                 "logprobs": {"content": TOKENS}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1},
}, engine_s=0.01)


class Scripted:
    """A tier that answers, or fails, as told."""

    def __init__(self, name: str, answer: ChatResult | GatewayError) -> None:
        self.name = name
        self.answer = answer

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        if isinstance(self.answer, GatewayError):
            raise self.answer
        return self.answer


def result_of(*tiers: Scripted) -> CascadeResult:
    runner = CascadeRunner(RouteConfig(name="r", max_repairs=0), [Tier(t, TierPrice(1.0, 1.0)) for t in tiers])
    return asyncio.run(runner.run(request()))


def request(**extra: Any) -> ChatRequest:
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": "Say hi"}], **extra})


def test_the_body_is_the_tiers_with_the_report_named_by_the_body_id() -> None:
    body = response_body(request(), result_of(Scripted("slm", ANSWER)))
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hi"}
    assert body["cascade"]["request_id"] == "chatcmpl-1" and body["cascade"]["final_tier"] == "slm"
    assert ANSWER.body["choices"][0]["logprobs"] is not None, "the tier's own result is left as it was"


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, None),
    ({"logprobs": True}, {"content": [{**TOKENS[0], "top_logprobs": []}]}),
    ({"logprobs": True, "top_logprobs": 2},
     {"content": [{**TOKENS[0], "top_logprobs": TOKENS[0]["top_logprobs"][:2]}]}),
])
def test_the_client_gets_the_logprobs_it_asked_for_not_the_cascades(extra: dict, expected: Any) -> None:
    body = response_body(request(**extra), result_of(Scripted("slm", ANSWER)))
    assert body["choices"][0]["logprobs"] == expected


def test_when_no_tier_answered_the_last_error_is_raised() -> None:
    down = GatewayError(503, "tier 'fallback' unreachable", code="tier_unavailable")
    result = result_of(Scripted("slm", GatewayError(503, "down", code="tier_unavailable")), Scripted("fallback", down))
    with pytest.raises(GatewayError) as raised:
        response_body(request(), result)
    assert raised.value is down


def test_headers_and_span_outcome_tell_the_report_s_headline() -> None:
    report = {"request_id": "chatcmpl-1", "final_tier": "fallback", "tiers_tried": ["slm", "slm", "fallback"],
              "verified": True, "escalation_reason": "schema_invalid", "cost_usd": 0.00012}
    assert report_headers(report) == {
        "x-cascade-final-tier": "fallback", "x-cascade-tiers-tried": "slm,slm,fallback", "x-cascade-verified": "true",
        "x-cascade-escalation-reason": "schema_invalid", "x-cascade-cost-usd": "0.0001200000"}
    assert outcome_attributes(report) == {
        semconv.CASCADE_REQUEST_ID: "chatcmpl-1", semconv.CASCADE_OUTCOME: "success", semconv.CASCADE_ESCALATED: True,
        semconv.CASCADE_TIERS_TRIED: ["slm", "slm", "fallback"], semconv.CASCADE_ESCALATION_REASON: "schema_invalid"}
    unescalated = {**report, "tiers_tried": ["slm", "slm"], "verified": False, "escalation_reason": None}
    assert report_headers(unescalated)["x-cascade-escalation-reason"] == "none"
    assert not outcome_attributes(unescalated)[semconv.CASCADE_ESCALATED], "a repair on one tier is no escalation"
    assert outcome_attributes(unescalated)[semconv.CASCADE_OUTCOME] == "failure"


def test_a_stream_whose_first_line_was_awaited_is_whole_and_closes_the_tier_s_stream_with_it() -> None:
    closed: list[bool] = []

    async def tier_lines():
        try:
            for line in ("b", "c"):
                yield line
        finally:
            closed.append(True)

    async def read(count: int) -> list[str]:
        stream = prepend("a", tier_lines())
        lines = [await anext(stream) for _ in range(count)]
        await stream.aclose()  # what the server does when the client goes away
        return lines

    assert asyncio.run(read(2)) == ["a", "b"] and closed == [True], "a client gone mid-stream closes it at once"
    assert asyncio.run(collect(prepend("a", tier_lines()))) == ["a", "b", "c"]
    assert asyncio.run(collect(sse_lines(["x", "y"]))) == ["x", "y"]


async def collect(stream) -> list[str]:
    return [line async for line in stream]
