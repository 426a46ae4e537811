"""The model-server deployment: one engine per replica (vLLM in the cluster), one deployment per model tier.

A request for one of the tier's LoRA adapters carries the adapter's name as Serve's multiplexed model id
(`handle.options(multiplexed_model_id=...)`), so Serve routes it to a replica that already holds the adapter.
The engine comes from a factory (`engine_protocol`), so the deployment runs over a stand-in without Ray or a model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from ray import serve

from cluster.config import LoraSettings, TierConfig
from cluster.telemetry import semconv
from cluster.telemetry.energy import detect_energy_meter
from cluster.telemetry.energy_ledger import EnergyLedger
from cluster.telemetry.semconv import EnergySource
from cluster.telemetry.service import deployment_tracer
from cluster.telemetry.tracing import TracingSettings, extract_context
from deployments.adapters import AdapterError, ResidentAdapters, UnknownAdapterError
from deployments.engine_protocol import ChatEngine, EngineFactory
from deployments.replica import current_replica_id
from deployments.vllm_engine import ChatResult, StreamSummary, VllmChatEngine

SPAN_ENGINE = "cascade.engine"
logger = logging.getLogger("ray.serve")


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30)
class ModelServer:
    """Serves chat completions for one tier; the gateway is its only caller."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor; mypy wants __init__ -> None
        self, tier: dict[str, Any], telemetry: dict[str, Any], engine_factory: EngineFactory = VllmChatEngine.start
    ) -> None:
        """`engine_factory` starts the replica's engine: vLLM's, unless another engine (or a test's) stands in."""
        self.tier = TierConfig.model_validate(tier)
        self.replica_id = current_replica_id() or "local"  # outside Serve (a unit test) there is no replica to name
        self.tracer = deployment_tracer(TracingSettings.model_validate(telemetry), f"slm-cascade-tier-{self.tier.name}")
        # A GPU's NVML counter or the CPU's RAPL counter where readable; the power model otherwise.
        self.energy = EnergyLedger(detect_energy_meter(
            (EnergySource.NVML, EnergySource.RAPL, EnergySource.MODEL), model_watts=self.tier.energy_model_watts
        ))
        self.engine: ChatEngine = await engine_factory(self.tier)
        if self.tier.warm_up:  # Serve routes to a replica only once this constructor returns: autoscaled ones too
            try:
                took_s = await self.engine.warm_up(self.tier.name)
            except Exception:
                self.engine.shutdown()  # the replica fails to start: free the engine's memory now, not at teardown
                raise
            logger.info("tier %s: warm-up request took %.2f s", self.tier.name, took_s)
        lora = self.tier.lora or LoraSettings()  # a tier without adapters: every adapter name is unknown
        self.resident = ResidentAdapters(self.engine, lora)

        async def hold_adapter(name: str) -> object:
            return await self.resident.hold(name)

        # Serve's cache size comes from the tier, so the loader is wrapped per replica, as Ray Serve LLM does. It
        # wraps a plain function: Serve keeps its cache on the wrapped function (or `self`), never on a bound method.
        self._load_adapter = serve.multiplexed(max_num_models_per_replica=lora.max_loras)(hold_adapter)

    @asynccontextmanager
    async def _addressed(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The body for the engine: addressed to the request's adapter, held for the request; else unchanged."""
        name = serve.get_multiplexed_model_id()
        if not name:
            yield body
            return
        async with self.resident.in_use(name):
            await self._load_adapter(name)
            yield {**body, "model": name}

    def _refusal(self, error: AdapterError) -> dict[str, Any]:
        status = HTTPStatus.NOT_FOUND if isinstance(error, UnknownAdapterError) else HTTPStatus.BAD_REQUEST
        return self.engine.error_body(str(error), status, param="model")

    async def _chat(self, body: dict[str, Any]) -> ChatResult:
        try:
            async with self._addressed(body) as addressed:
                return await self.engine.chat(addressed)
        except AdapterError as error:
            return ChatResult(self._refusal(error), engine_s=0.0)

    def _span_attributes(self) -> dict[str, str]:
        return {semconv.CASCADE_TIER: self.tier.name, semconv.CASCADE_REPLICA: self.replica_id,
                semconv.GEN_AI_REQUEST_MODEL: serve.get_multiplexed_model_id() or self.tier.name}

    async def chat(self, body: dict[str, Any], trace_context: dict[str, str] | None = None) -> ChatResult:
        """One completion, in the caller's trace, with its share of the replica's metered energy."""
        request_id = uuid.uuid4()
        context = extract_context(trace_context or {})
        with self.tracer.start_as_current_span(SPAN_ENGINE, context=context) as span:
            self.energy.start(request_id)
            try:
                result = await self._chat(body)
            finally:
                energy_j = self.energy.finish(request_id)
            span.set_attributes({**self._span_attributes(), "cascade.engine_s": result.engine_s})
        return dataclasses.replace(result, energy_j=energy_j, energy_source=self.energy.source)

    async def chat_stream(
        self, body: dict[str, Any], trace_context: dict[str, str] | None = None
    ) -> AsyncIterator[str | dict[str, Any] | StreamSummary]:
        """SSE lines, then a `StreamSummary` with the stream's share of the replica's metered energy.

        Cancelled (the client went away), the stream ends at once: vLLM aborts the request, and no summary is sent.
        """
        request_id = uuid.uuid4()
        span = self.tracer.start_span(SPAN_ENGINE, context=extract_context(trace_context or {}),
                                      attributes=self._span_attributes())
        started = time.perf_counter()
        self.energy.start(request_id)
        try:
            async with self._addressed(body) as addressed:
                async for item in self.engine.chat_stream(addressed):
                    yield item
        except AdapterError as error:
            yield self._refusal(error)
        finally:
            energy_j = self.energy.finish(request_id)
            engine_s = time.perf_counter() - started
            span.set_attribute("cascade.engine_s", engine_s)
            span.end()
        yield StreamSummary(engine_s, energy_j, self.energy.source)

    def adapters(self) -> dict[str, Any]:
        """This replica and the adapters it holds, which Serve routes their requests to."""
        return {"replica": self.replica_id, "adapters": self.resident.held}

    async def check_health(self) -> None:
        await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
