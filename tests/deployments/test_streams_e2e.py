"""Every streamed path is in the books: a tier streamed by name (deadline, spans in the caller's trace, tokens,
cost, energy), a cascade stream that escalated (its `x-cascade-*` headers), a client that goes away mid-stream
(the engine's request is aborted and the books record it), and a stream over a Python handle."""

from __future__ import annotations

import json
import secrets
import time

import httpx
from auth_keys import ADMIN_HEADERS


def spans_of(receiver, trace_id: str, names: set[str]) -> dict:
    """The trace's spans by name once all of `names` have arrived (the gateway exports every 0.2 s here)."""
    return {span.name: span for span in receiver.wait_for(trace_id, names)}


def traced(trace_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01", **ADMIN_HEADERS}


def events_of(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def test_a_tier_streamed_by_name_is_traced_and_accounted(cluster: str, otlp_receiver) -> None:
    trace_id = secrets.token_hex(16)
    body = {"model": "slm", "stream": True, "max_tokens": 12, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]}
    with httpx.stream("POST", f"{cluster}/v1/chat/completions", json=body, headers=traced(trace_id),
                      timeout=120) as response:
        assert response.status_code == 200
        events = events_of(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks), "no usage chunk: the client did not ask for one"
    spans = spans_of(otlp_receiver, trace_id, {"cascade.request", "cascade.tier_attempt", "cascade.engine"})
    root, attempt, engine = spans["cascade.request"], spans["cascade.tier_attempt"], spans["cascade.engine"]
    assert root.parent_span_id and root.attributes["cascade.route"] == "slm", "the caller's trace is joined"
    assert attempt.parent_span_id == root.span_id and engine.parent_span_id == attempt.span_id
    assert root.attributes["cascade.request_id"] == chunks[0]["id"]
    assert root.attributes["cascade.outcome"] == "success"
    assert 1 <= attempt.attributes["gen_ai.usage.output_tokens"] <= 12
    assert attempt.attributes["cascade.cost_usd"] > 0 and attempt.attributes["cascade.energy_j"] > 0


def test_a_client_that_asks_for_usage_gets_the_usage_chunk(cluster: str) -> None:
    body = {"model": "slm", "stream": True, "max_tokens": 6, "stream_options": {"include_usage": True},
            "temperature": 0, "messages": [{"role": "user", "content": "Say hello."}]}
    with httpx.stream("POST", f"{cluster}/v1/chat/completions", json=body, headers=ADMIN_HEADERS,
                      timeout=120) as response:
        chunks = [json.loads(event) for event in events_of(response)[:-1]]
    assert chunks[-1]["choices"] == [] and 1 <= chunks[-1]["usage"]["completion_tokens"] <= 6


def test_a_cascade_stream_that_escalated_says_so_in_its_headers(cluster: str) -> None:
    body = {"model": "cascade", "stream": True, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]}
    with httpx.stream("POST", f"{cluster}/v1/chat/completions", json=body, timeout=300,
                      headers={**ADMIN_HEADERS, "x-cascade-route": "strict"}) as response:  # threshold 1: escalates
        assert response.status_code == 200
        headers = response.headers
        events = events_of(response)
    assert headers["x-cascade-tiers-tried"] == "slm,fallback" and headers["x-cascade-final-tier"] == "fallback"
    assert headers["x-cascade-escalation-reason"] != "none"
    assert json.loads(events[-2])["cascade"]["tiers_tried"] == ["slm", "fallback"]


def test_a_client_gone_mid_stream_aborts_the_engine_request_and_the_books_say_so(cluster: str,
                                                                                  otlp_receiver) -> None:
    """1,500 tokens that ignore end-of-sequence take the SLM tens of seconds on this machine; the client reads one
    chunk and leaves, so the engine's span must end long before that, and the request is booked as a failure."""
    trace_id = secrets.token_hex(16)
    body = {"model": "slm", "stream": True, "max_tokens": 1500, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Count to a thousand."}]}
    started = time.monotonic()
    with httpx.stream("POST", f"{cluster}/v1/chat/completions", json=body, headers=traced(trace_id),
                      timeout=120) as response:
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
    left_after_s = time.monotonic() - started
    assert json.loads(first.removeprefix("data: "))["choices"]
    spans = spans_of(otlp_receiver, trace_id, {"cascade.request", "cascade.engine"})
    root, engine = spans["cascade.request"], spans["cascade.engine"]
    assert root.attributes["cascade.outcome"] == "failure"
    assert root.attributes["error.type"] == "client_disconnected"
    assert engine.attributes["cascade.engine_s"] < left_after_s + 10.0, "the engine stopped soon after the client"


def test_a_stream_over_a_python_handle_is_accounted(gateway_handle, otlp_receiver) -> None:
    trace_id = secrets.token_hex(16)
    body = {"model": "slm", "stream": True, "max_tokens": 5, "temperature": 0,
            "messages": [{"role": "user", "content": "Hi"}]}
    lines = list(gateway_handle.options(stream=True).chat_stream.remote(
        body, None, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}))
    assert lines[-1] == "data: [DONE]\n\n"
    spans = spans_of(otlp_receiver, trace_id, {"cascade.request", "cascade.tier_attempt"})
    assert spans["cascade.request"].attributes["cascade.outcome"] == "success"
    assert spans["cascade.request"].attributes["cascade.request_id"] == json.loads(lines[0][6:])["id"]
