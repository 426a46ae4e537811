"""What the model-server deployment needs of an engine, and nothing more.

`ModelServer` is given a factory for one, so the deployment's own work (spans, energy, adapter addressing,
warm-up and health) runs the same over vLLM (`vllm_engine.VllmChatEngine`, the one the cluster runs), another
engine, or a test's stand-in, without Ray or a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any, Protocol

from cluster.config import TierConfig
from deployments.adapters import AdapterEngine
from deployments.vllm_engine import ChatResult


class ChatEngine(AdapterEngine, Protocol):
    """One replica's engine, speaking OpenAI chat bodies; every method is safe to call concurrently.

    Errors the engine finds in a request come back as OpenAI error bodies, not exceptions: the gateway adopts a
    tier's status and message as they are.
    """

    async def chat(self, body: dict[str, Any]) -> ChatResult: ...

    def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[str | dict[str, Any]]:
        """SSE lines; an error before the first token is yielded once as an error body (a dict)."""
        ...

    def error_body(
        self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST, param: str | None = None
    ) -> dict[str, Any]:
        """An error found outside the engine, in the error body the engine itself would write."""
        ...

    async def warm_up(self, served_name: str) -> float:
        """Answer one request before the replica takes traffic; seconds it took. Raises if the engine cannot."""
        ...

    async def check_health(self) -> None:
        """Raises when the engine can no longer serve, which the replica's health check turns into a restart."""
        ...

    def shutdown(self) -> None: ...


EngineFactory = Callable[[TierConfig], Awaitable[ChatEngine]]
"""Starts the engine for a tier's replica (`VllmChatEngine.start` in the cluster)."""
