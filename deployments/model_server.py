"""The model-server deployment: one vLLM engine per replica, one deployment per model tier."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from cluster.config import TierConfig
from cluster.telemetry import semconv
from cluster.telemetry.energy import detect_energy_meter
from cluster.telemetry.energy_ledger import EnergyLedger
from cluster.telemetry.semconv import EnergySource
from cluster.telemetry.service import deployment_tracer
from cluster.telemetry.tracing import TracingSettings, extract_context
from deployments.vllm_engine import ChatResult, VllmChatEngine

SPAN_ENGINE = "cascade.engine"


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30)
class ModelServer:
    """Serves chat completions for one tier; the gateway is its only caller."""

    async def __init__(self, tier: dict[str, Any], telemetry: dict[str, Any]) -> None:
        self.tier = TierConfig.model_validate(tier)
        self.tracer = deployment_tracer(TracingSettings.model_validate(telemetry), f"slm-cascade-tier-{self.tier.name}")
        # A GPU's NVML counter or the CPU's RAPL counter where readable; the power model otherwise.
        self.energy = EnergyLedger(detect_energy_meter(
            (EnergySource.NVML, EnergySource.RAPL, EnergySource.MODEL), model_watts=self.tier.energy_model_watts
        ))
        self.engine = await VllmChatEngine.start(self.tier)

    async def chat(self, body: dict[str, Any], trace_context: dict[str, str] | None = None) -> ChatResult:
        """One completion, in the caller's trace, with its share of the replica's metered energy."""
        request_id = uuid.uuid4()
        context = extract_context(trace_context or {})
        with self.tracer.start_as_current_span(SPAN_ENGINE, context=context) as span:
            self.energy.start(request_id)
            try:
                result = await self.engine.chat(body)
            finally:
                energy_j = self.energy.finish(request_id)
            span.set_attributes({semconv.CASCADE_TIER: self.tier.name, "cascade.engine_s": result.engine_s,
                                 semconv.GEN_AI_REQUEST_MODEL: self.tier.name})
        return dataclasses.replace(result, energy_j=energy_j, energy_source=self.energy.source)

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[str | dict[str, Any]]:
        """SSE lines. The stream holds its slot in the energy ledger, so batched neighbours are not charged
        for it; its own share is not reported (streams bypass the gateway's accounting)."""
        request_id = uuid.uuid4()
        self.energy.start(request_id)
        try:
            async for item in self.engine.chat_stream(body):
                yield item
        finally:
            self.energy.finish(request_id)

    async def check_health(self) -> None:
        await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
