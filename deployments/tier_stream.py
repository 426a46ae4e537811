"""A tier addressed by name, streamed token by token, with the books every other path keeps.

The stream gets the request's deadline, a `cascade.request` span in the caller's trace with one
`cascade.tier_attempt` below it (the model server's engine span joins them), and the figures the accounting reads
from those spans: tokens (vLLM's usage chunk, asked for whether or not the client did), cost, and the energy the
replica reports after its last line. A stream counts as a success when it completes: its answer goes out as it is
generated, so it is not verified. A client that goes away mid-stream cancels the replica's stream (vLLM aborts
the request), and the books record a failure with `error.type` `client_disconnected`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import set_span_in_context

from cluster.telemetry import semconv
from cluster.telemetry.tracing import extract_context, inject_context
from deployments.protocol import GatewayError
from deployments.tier_client import TierClient
from deployments.vllm_engine import StreamSummary
from policies.cost import TierPrice, attempt_cost

DONE = "data: [DONE]\n\n"


def _chunk(line: str) -> dict[str, Any] | None:
    """The JSON object of one SSE line (`data: {...}`), None for `[DONE]` or anything else."""
    payload = line.removeprefix("data:").strip()
    if not payload.startswith("{"):
        return None
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _error_event(message: str, code: str) -> str:
    return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'code': code}})}\n\n"


async def accounted_stream(
    client: TierClient,
    price: TierPrice,
    body: dict[str, Any],
    *,
    tracer: trace.Tracer,
    trace_context: dict[str, str] | None,
    deadline_s: float,
    client_wants_usage: bool,
) -> AsyncGenerator[str, None]:
    """The tier's SSE lines for the client, accounted. Errors before the first line raise `GatewayError` (the
    HTTP status can still say so); a deadline passed mid-stream ends it with an error event."""
    root = tracer.start_span(semconv.SPAN_REQUEST, context=extract_context(trace_context or {}), attributes={
        semconv.CASCADE_ROUTE: client.name, semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_REQUEST_MODEL: client.name})
    attempt = tracer.start_span(semconv.SPAN_TIER_ATTEMPT, context=set_span_in_context(root), attributes={
        semconv.CASCADE_TIER: client.name, semconv.CASCADE_TIER_INDEX: 0, semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_REQUEST_MODEL: client.name})
    body = {**body, "stream": True, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
    request_id, usage, summary, sent, failure = None, None, None, False, None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    try:
        async with aclosing(client.chat_stream(body, inject_context(set_span_in_context(attempt)))) as lines:
            while True:
                # Per line, not one timeout around the loop: the server iterates a response body from a task of
                # its own, so the generator does not stay in one task, and a timeout belongs to one. Within one
                # `anext` it does; `timeout_at` there costs no task per line, as `wait_for` would.
                try:
                    async with asyncio.timeout_at(deadline):
                        line = await anext(lines)
                except StopAsyncIteration:
                    break
                if isinstance(line, StreamSummary):
                    summary = line
                    continue
                # JSON-parse only what the books read: the first chunk (its id) and the usage chunk.
                chunk = _chunk(line) if request_id is None or '"usage"' in line else None
                if chunk is not None:
                    request_id = request_id or chunk.get("id")
                    usage = chunk.get("usage") or usage
                    if not chunk.get("choices") and chunk.get("usage") and not client_wants_usage:
                        continue  # asked for the books' sake, not the client's
                sent = True
                yield line
    except TimeoutError:
        failure = "deadline_exceeded"
        message = f"request did not finish within its deadline of {deadline_s:g} s"
        if not sent:
            raise GatewayError(504, message, code=failure) from None
        yield _error_event(message, failure)
        yield DONE
    except GatewayError as error:
        failure = error.code or str(error.status)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        failure = "client_disconnected"
        raise
    finally:
        _account(root, attempt, price, request_id, usage, summary, failure)


def _account(root: trace.Span, attempt: trace.Span, price: TierPrice, request_id: str | None,
             usage: dict[str, Any] | None, summary: StreamSummary | None, failure: str | None) -> None:
    """Put the stream's figures on its spans and end them: the accounting processor books the request."""
    tokens_in, tokens_out = (usage or {}).get("prompt_tokens", 0), (usage or {}).get("completion_tokens", 0)
    attempt.set_attributes({semconv.GEN_AI_USAGE_INPUT_TOKENS: tokens_in,
                            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: tokens_out,
                            semconv.CASCADE_COST_USD: attempt_cost(price, tokens_in, tokens_out)})
    if summary is not None and summary.energy_j is not None:
        attempt.set_attributes({semconv.CASCADE_ENERGY_J: summary.energy_j,
                                semconv.CASCADE_ENERGY_SOURCE: summary.energy_source or "model"})
    outcome = {semconv.CASCADE_OUTCOME: "failure" if failure else "success"}
    if failure:
        outcome[semconv.ERROR_TYPE] = failure
        attempt.set_attribute(semconv.ERROR_TYPE, failure)
    if request_id:
        outcome[semconv.CASCADE_REQUEST_ID] = request_id
    root.set_attributes(outcome)
    attempt.end()
    root.end()
