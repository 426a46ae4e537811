"""The model-server deployment over a stand-in engine, without Ray or a model: what it adds to the engine's answers
(span, energy, stream summary) and how it starts and stops the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cluster.config import TierConfig
from cluster.telemetry import semconv
from deployments.engine_protocol import ChatEngine
from deployments.model_server import SPAN_ENGINE, ModelServer
from deployments.vllm_engine import ChatResult, StreamSummary

TIER = {"name": "slm", "model": "embedded:smollm2-135m-instruct", "energy_model_watts": 10.0}
ANSWER = {"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}]}


class FakeEngine:
    """Answers every request with `ANSWER`, streams two lines, and records what the deployment asked of it."""

    def __init__(self, warm_up_error: Exception | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.warmed: list[str] = []
        self.warm_up_error = warm_up_error
        self.healthy = True
        self.shut_down = False

    @property
    def hidden_size(self) -> int:
        return 64

    def has_adapter(self, name: str) -> bool:
        return False

    async def load_adapter(self, name: str, local_dir: Path) -> None:
        raise AssertionError("no adapter is asked for here")

    async def unload_adapter(self, name: str) -> None:
        raise AssertionError("no adapter is asked for here")

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        self.bodies.append(body)
        return ChatResult(ANSWER, engine_s=0.25)

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[str | dict[str, Any]]:
        self.bodies.append(body)
        for line in ('data: {"id": "chatcmpl-1"}\n\n', "data: [DONE]\n\n"):
            yield line

    def error_body(
        self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST, param: str | None = None
    ) -> dict[str, Any]:
        return {"error": {"message": message, "code": status.value, "param": param}}

    async def warm_up(self, served_name: str) -> float:
        self.warmed.append(served_name)
        if self.warm_up_error is not None:
            raise self.warm_up_error
        return 0.1

    async def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError("engine core died")

    def shutdown(self) -> None:
        self.shut_down = True


async def start(engine: ChatEngine, **tier: Any) -> Any:
    """The deployment's class built as Serve builds it (its `__init__` is a coroutine), over `engine`."""
    started: list[TierConfig] = []

    async def factory(config: TierConfig) -> ChatEngine:
        started.append(config)
        return engine

    server = ModelServer.func_or_class.__new__(ModelServer.func_or_class)
    await server.__init__({**TIER, **tier}, {}, engine_factory=factory)
    assert [config.name for config in started] == ["slm"], "the factory gets the tier's config"
    return server


def recording(server: Any) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server.tracer = provider.get_tracer("test")
    return exporter


def test_one_chat_gets_the_engine_s_answer_with_its_energy_and_span() -> None:
    engine = FakeEngine()

    async def scenario() -> tuple[Any, ChatResult, InMemorySpanExporter]:
        server = await start(engine)
        spans = recording(server)
        return server, await server.chat({"model": "slm", "messages": []}), spans

    server, result, spans = asyncio.run(scenario())
    assert engine.warmed == ["slm"], "the replica answered its warm-up before taking traffic"
    assert engine.bodies == [{"model": "slm", "messages": []}], "no adapter asked for: the body goes as it came"
    assert result.body == ANSWER and result.engine_s == 0.25
    assert result.energy_j is not None and result.energy_j >= 0 and result.energy_source == server.energy.source
    (span,) = spans.get_finished_spans()
    assert span.name == SPAN_ENGINE and span.attributes[semconv.CASCADE_TIER] == "slm"
    assert span.attributes[semconv.CASCADE_REPLICA] == "local" and span.attributes["cascade.engine_s"] == 0.25
    assert span.attributes[semconv.GEN_AI_REQUEST_MODEL] == "slm"


def test_a_stream_ends_with_a_summary_the_gateway_s_books_read() -> None:
    async def scenario() -> list[Any]:
        server = await start(FakeEngine(), warm_up=False)
        return [item async for item in server.chat_stream({"model": "slm", "messages": []})]

    *lines, summary = asyncio.run(scenario())
    assert lines == ['data: {"id": "chatcmpl-1"}\n\n', "data: [DONE]\n\n"]
    assert isinstance(summary, StreamSummary) and summary.engine_s >= 0 and summary.energy_j is not None


def test_a_replica_whose_warm_up_fails_frees_its_engine_and_fails_to_start() -> None:
    engine = FakeEngine(warm_up_error=RuntimeError("max_logprobs too low"))
    with pytest.raises(RuntimeError, match="max_logprobs"):
        asyncio.run(start(engine))
    assert engine.shut_down


def test_health_and_teardown_reach_the_engine() -> None:
    engine = FakeEngine()
    server = asyncio.run(start(engine, warm_up=False))
    assert engine.warmed == [] and server.adapters() == {"replica": "local", "adapters": []}
    asyncio.run(server.check_health())
    engine.healthy = False
    with pytest.raises(RuntimeError, match="engine core died"):
        asyncio.run(server.check_health())
    server.__del__()
    assert engine.shut_down
