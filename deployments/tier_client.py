"""Calling a model tier through its DeploymentHandle, with Ray failures mapped to explicit HTTP errors.

Every way a tier call can fail ends in a GatewayError with a status a client can act on: 429/503 with
Retry-After when the tier is saturated or a replica is gone (safe to retry), 504 on the deadline. Nothing is
swallowed, so an accepted request always gets an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from cluster.telemetry.tracing import inject_context
from deployments.protocol import GatewayError
from deployments.vllm_engine import ChatResult, StreamSummary


def _as_gateway_error(tier: str, error: BaseException, timeout_s: float) -> GatewayError:
    if isinstance(error, TimeoutError):
        return GatewayError(504, f"tier {tier!r} did not answer within {timeout_s:g} s", code="timeout")
    if isinstance(error, BackPressureError):
        return GatewayError(429, f"tier {tier!r} is at capacity; retry shortly", code="overloaded", retry_after_s=1)
    if isinstance(error, (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)):
        return GatewayError(
            503, f"tier {tier!r} replica unavailable; retry shortly", code="tier_unavailable", retry_after_s=1
        )
    cause = error.cause if isinstance(error, RayTaskError) else error
    return GatewayError(500, f"tier {tier!r} failed: {type(cause).__name__}", code="tier_error")


class TierClient:
    """One tier's handle plus its deadline."""

    def __init__(self, name: str, handle: DeploymentHandle, timeout_s: float) -> None:
        self.name = name
        self._handle = handle
        self._timeout_s = timeout_s

    def _handle_for(self, adapter: str | None) -> DeploymentHandle:
        """The handle for a call: an adapter rides as Serve's multiplexed model id, which routes the call to a
        replica already holding that adapter and tells the replica which adapter to run."""
        return self._handle if adapter is None else self._handle.options(multiplexed_model_id=adapter)

    async def chat(self, body: dict[str, Any], adapter: str | None = None) -> ChatResult:
        try:
            # inject_context: the model server's span joins this trace
            call = self._handle_for(adapter).chat.remote(body, inject_context())
            try:
                async with asyncio.timeout(self._timeout_s):  # no task per call, as `wait_for` would make
                    result: ChatResult = await call
            except (TimeoutError, asyncio.CancelledError):
                # Awaiting a DeploymentResponse does not cancel it; this aborts the vLLM request, on this tier's
                # deadline or when the request's own deadline cancels this task.
                call.cancel()
                raise
        except Exception as error:
            raise _as_gateway_error(self.name, error, self._timeout_s) from error
        if result.is_error:
            raise GatewayError.from_openai_body(result.body)
        return result

    async def chat_stream(
        self, body: dict[str, Any], trace_context: dict[str, str] | None = None
    ) -> AsyncGenerator[str | StreamSummary, None]:
        """SSE lines, then the replica's `StreamSummary`; errors before the first line raise GatewayError so the
        caller can still send a status. Closed early (the client went away), the replica's stream is cancelled,
        and with it the engine's request."""
        stream = self._handle.options(stream=True).chat_stream.remote(body, trace_context)
        if not isinstance(stream, DeploymentResponseGenerator):  # what a `stream=True` handle's call returns
            raise TypeError(f"tier {self.name!r}: a streaming call returned {type(stream).__name__}")
        try:
            first = await asyncio.wait_for(stream.__anext__(), self._timeout_s)
        except StopAsyncIteration:
            return
        except Exception as error:
            stream.cancel()
            raise _as_gateway_error(self.name, error, self._timeout_s) from error
        if isinstance(first, dict):
            raise GatewayError.from_openai_body(first)
        finished = False
        try:
            yield first
            async for line in stream:
                yield line
            finished = True
        finally:
            if not finished:
                stream.cancel()


class AdapterBackend(Protocol):
    """What `AdapterClient` calls: a tier's client whose calls can name an adapter (`TierClient`)."""

    name: str

    async def chat(self, body: dict[str, Any], adapter: str | None = None) -> ChatResult: ...


class AdapterClient:
    """A tier's client bound to one of its LoRA adapters: the same tier (name, price, breaker) to the cascade,
    while each call rides Serve's model multiplexing to a replica that holds the adapter."""

    def __init__(self, client: AdapterBackend, adapter: str) -> None:
        self.name = client.name
        self.adapter = adapter
        self._client = client

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        return await self._client.chat(body, self.adapter)
