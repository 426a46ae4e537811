"""`cascade simulate-llm`: an OpenAI-protocol server standing in for a large model, for benchmarks.

It answers BFCL cases from their ground truth: right with probability `accuracy` (decided once per case from
the seed, so asking again gives the same answer, like greedy decoding), otherwise wrong but valid: a call
that validates against the tool's JSON Schema with a value BFCL's checker rejects. Latency is lognormal
around `latency_median_ms`. Token counts in `usage` are estimated from characters (4 per token); the
cascade prices them with its remote tier's `price`, which is where a simulated price per 1M tokens goes.

Everything it produces is simulated, and it says so: `system_fingerprint` is "simulated-llm" (the bench
marks such figures) and every response carries the header `x-simulated: true`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench.runner import SIMULATED_FINGERPRINT
from cluster.evaluation.bfcl import Case
from cluster.evaluation.scorer import Call, score_case
from policies.verifiers import Candidate, ToolCall, ToolCallVerifier

__all__ = ["SimulatedLLM", "answers_right", "build_app", "serve", "wrong_answer"]

CHARS_PER_TOKEN = 4
NO_CALL_TEXT = "None of the available functions fits this request."


def answers_right(case_id: str, accuracy: float, seed: int = 0) -> bool:
    """Whether the simulated LLM answers a case right: decided once per case from the seed, so the same request
    always gets the same answer (and an offline replay gets the one the server would give)."""
    return random.Random(f"{seed}:{case_id}").random() < accuracy


def _example(schema: dict[str, Any]) -> Any:
    """A small value valid for a (BFCL-converted) schema."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _example(props[name]) for name in schema.get("required", []) if name in props}
    if kind == "array":
        return [_example(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    return {"integer": 1, "number": 0.5, "boolean": False}.get(kind, "example")


def _perturbed(value: Any, schema: dict[str, Any]) -> Any:
    """A different value of the same schema, or None when there is no simple one."""
    if "enum" in schema:
        return next((option for option in schema["enum"] if option != value), None)
    kind = schema.get("type")
    if kind == "boolean" and isinstance(value, bool):
        return not value
    if kind == "integer" and isinstance(value, int):
        return value - 1 if value + 1 > schema.get("maximum", math.inf) else value + 1
    if kind == "number" and isinstance(value, (int, float)):
        return value + 1.5
    if kind == "string" and isinstance(value, str):
        return f"{value} alternative"
    if kind == "array" and isinstance(value, list):
        return value[:-1] if len(value) > schema.get("minItems", 0) else [*value, _example(schema.get("items", {}))]
    return None


def _pick(options: Sequence[Any], required: bool) -> Any:
    """The first acceptable value; "" (omit) when the argument may be left out or nothing is acceptable."""
    if not options or ("" in options and not required):
        return ""
    return next((option for option in options if option != ""), "")


def _chosen(args: dict[str, Sequence[Any]], required: Sequence[str], nested: bool = True) -> dict[str, Any]:
    """Arguments from their option lists. A dict parameter's answer is itself a dict of option lists (a list of
    dicts, a list of those), one level deep, as BFCL's dict checker reads it."""
    picked = {}
    for param, options in args.items():
        value = _pick(options, param in required)
        if nested and isinstance(value, dict):
            value = _chosen(value, (), nested=False)
        elif nested and isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            value = [_chosen(item, (), nested=False) for item in value]
        if value != "":
            picked[param] = value
    return picked


def _truth(case: Case) -> list[Call]:
    """A right answer: the first acceptable value of every argument that is required or not optional."""
    required = {f["name"]: f["parameters"].get("required", []) for f in case.functions}
    return [{name: _chosen(args, required[name])}
            for answer in case.ground_truth or [] for name, args in answer.items()]


def _valid(case: Case, calls: Sequence[Call]) -> bool:
    raw = tuple(ToolCall(name, json.dumps(args)) for call in calls for name, args in call.items())
    return ToolCallVerifier(case.tools).verify(Candidate(tool_calls=raw)).passed


def _candidates(case: Case, truth: list[Call]) -> Any:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in case.tools}
    for index, call in enumerate(truth):
        name, args = next(iter(call.items()))
        for param, value in args.items():
            changed = _perturbed(value, schemas[name]["properties"].get(param, {}))
            if changed is not None:
                wrong = copy.deepcopy(truth)
                wrong[index][name][param] = changed
                yield wrong
    for name, schema in schemas.items():  # another function, or the same one with example arguments
        yield [{name: _example(schema)}, *truth[1:]]


def wrong_answer(case: Case) -> list[Call]:
    """Calls that validate against the tools' schemas but that BFCL's rules reject."""
    if not case.expects_calls:
        if not case.tools:
            return []  # nothing to call: the only answer is the right one
        first = case.tools[0]["function"]
        return [{first["name"]: _example(first["parameters"])}]
    truth = _truth(case)
    for candidate in _candidates(case, truth):
        if _valid(case, candidate) and not score_case(case, candidate).valid:
            return candidate
    return []  # no valid wrong call exists for this case: answering with no call is wrong too


class SimulatedLLM:
    """Recognises a case by its user message (and tool names) and answers it, right or wrong."""

    def __init__(self, cases: Sequence[Case], accuracy: float, seed: int = 0, latency_median_ms: float = 300.0,
                 latency_sigma: float = 0.5) -> None:
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
        if latency_median_ms < 0 or latency_sigma < 0:
            raise ValueError("latency_median_ms and latency_sigma must be non-negative")
        self.accuracy, self.seed = accuracy, seed
        self.latency_median_ms, self.latency_sigma = latency_median_ms, latency_sigma
        self._latency_rng = random.Random(seed)
        self._cases: dict[tuple[str, tuple[str, ...]], Case] = {}
        for case in cases:
            question = next(m["content"] for m in reversed(case.messages) if m["role"] == "user")
            self._cases.setdefault((question, tuple(sorted(t["function"]["name"] for t in case.tools))), case)

    def find(self, body: dict[str, Any]) -> Case | None:
        names = tuple(sorted(t["function"]["name"] for t in body.get("tools") or []))
        for message in reversed(body.get("messages") or []):
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                case = self._cases.get((message["content"], names))
                if case is not None:
                    return case
        return None

    def correct(self, case: Case) -> bool:
        return answers_right(case.id, self.accuracy, self.seed)

    def latency_s(self) -> float:
        return self.latency_median_ms * math.exp(self.latency_sigma * self._latency_rng.gauss(0, 1)) / 1000

    def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        case = self.find(body)
        calls: list[Call] = []
        if case is not None:
            calls = (_truth(case) if case.expects_calls else []) if self.correct(case) else wrong_answer(case)
        message: dict[str, Any] = {"role": "assistant", "content": None if calls else NO_CALL_TEXT}
        if calls:
            message["tool_calls"] = [
                {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}}
                for call in calls for name, args in call.items()
            ]
        prompt_chars = len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("tools", [])))
        prompt_tokens = max(1, prompt_chars // CHARS_PER_TOKEN)
        completion_tokens = max(1, len(json.dumps(message.get("tool_calls") or message["content"])) // CHARS_PER_TOKEN)
        return {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "simulated-llm"), "system_fingerprint": SIMULATED_FINGERPRINT,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def build_app(sim: SimulatedLLM) -> FastAPI:
    """The FastAPI application: POST /v1/chat/completions, GET /v1/models."""
    app = FastAPI(title="simulated LLM (slm-cascade bench)")
    headers = {"x-simulated": "true"}

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "simulated-llm", "object": "model"}]}, headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": {"message": "body is not JSON", "type": "invalid_request_error"}},
                                status_code=400, headers=headers)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return JSONResponse({"error": {"message": "messages: a list is required", "type": "invalid_request_error"}},
                                status_code=400, headers=headers)
        await asyncio.sleep(sim.latency_s())
        return JSONResponse(sim.respond(body), headers=headers)

    return app


def serve(sim: SimulatedLLM, host: str = "127.0.0.1", port: int = 8100) -> None:
    """Serve until interrupted."""
    import uvicorn

    uvicorn.run(build_app(sim), host=host, port=port, log_level="warning")
