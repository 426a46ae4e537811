"""The model-server deployment: one vLLM engine per replica, one deployment per model tier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from cluster.config import TierConfig
from deployments.vllm_engine import ChatResult, VllmChatEngine


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30)
class ModelServer:
    """Serves chat completions for one tier; the gateway is its only caller."""

    async def __init__(self, tier: dict[str, Any]) -> None:
        self.tier = TierConfig.model_validate(tier)
        self.engine = await VllmChatEngine.start(self.tier)

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        return await self.engine.chat(body)

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[str | dict[str, Any]]:
        async for item in self.engine.chat_stream(body):
            yield item

    async def check_health(self) -> None:
        await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
