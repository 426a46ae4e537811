"""What a client gets back from the cascade: the OpenAI body with its `cascade` report, the report's headers and
span attributes, and the SSE lines a streamed answer goes out as.

Pure functions of the cascade's result, so the response's shape is testable without a tier behind it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any

from cluster.telemetry import semconv
from deployments.cascade import CascadeResult
from deployments.protocol import ChatRequest


def response_body(request: ChatRequest, result: CascadeResult) -> dict[str, Any]:
    """The final attempt's OpenAI body with the cascade report (its `request_id` the body's `id`); logprobs only
    if the client asked for them. Raises the final attempt's error when no attempt got an answer from its tier."""
    attempt = result.final
    if attempt.result is None:
        if attempt.error is None:  # an attempt has an answer or the error it got instead
            raise RuntimeError(f"the attempt on tier {attempt.tier!r} has neither an answer nor an error")
        raise attempt.error
    body = dict(attempt.result.body)
    body["choices"] = [{**choice, "logprobs": client_logprobs(request, choice.get("logprobs"))}
                       for choice in body["choices"]]
    body["cascade"] = {**result.report(), "request_id": body["id"]}
    return body


def client_logprobs(request: ChatRequest, logprobs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cascade always asks tiers for top-k logprobs; the client gets what it asked for, or none."""
    extra = request.model_extra or {}
    if not extra.get("logprobs") or logprobs is None:
        return None
    keep = extra.get("top_logprobs") or 0
    return {"content": [{**token, "top_logprobs": token.get("top_logprobs", [])[:keep]}
                        for token in logprobs.get("content") or []]}


def report_headers(report: dict[str, Any]) -> dict[str, str]:
    """The report's headline as `x-cascade-*` headers, for clients and proxies that never parse the body."""
    return {
        "x-cascade-final-tier": report["final_tier"],
        "x-cascade-tiers-tried": ",".join(report["tiers_tried"]),
        "x-cascade-verified": str(report["verified"]).lower(),
        "x-cascade-escalation-reason": report["escalation_reason"] or "none",
        "x-cascade-cost-usd": f"{report['cost_usd']:.10f}",
    }


def outcome_attributes(report: dict[str, Any]) -> dict[str, Any]:
    """The request span's outcome, from the report the client gets: traces and responses cannot disagree."""
    return {
        semconv.CASCADE_REQUEST_ID: report["request_id"],
        semconv.CASCADE_OUTCOME: "success" if report["verified"] else "failure",
        semconv.CASCADE_ESCALATED: len(set(report["tiers_tried"])) > 1,
        semconv.CASCADE_TIERS_TRIED: report["tiers_tried"],
        semconv.CASCADE_ESCALATION_REASON: report["escalation_reason"] or "",
    }


async def sse_lines(lines: Iterable[str]) -> AsyncIterator[str]:
    """Lines already in hand, as the async iterator a streaming response reads."""
    for line in lines:
        yield line


async def prepend(first: str, rest: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    """`first`, then `rest`: a stream whose first line was awaited before the response began, so an error before
    the first token still got its own status code.

    `rest` is closed with this generator: a client gone mid-stream closes the tier's stream at once."""
    async with aclosing(rest):
        yield first
        async for line in rest:
            yield line
