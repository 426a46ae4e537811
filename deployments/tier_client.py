"""Calling a model tier through its DeploymentHandle, with Ray failures mapped to explicit HTTP errors.

Every way a tier call can fail ends in a GatewayError with a status a client can act on: 429/503 with
Retry-After when the tier is saturated or a replica is gone (safe to retry), 504 on the deadline. Nothing is
swallowed, so an accepted request always gets an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from cluster.telemetry.tracing import inject_context
from deployments.protocol import GatewayError
from deployments.vllm_engine import ChatResult


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

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        try:
            call = self._handle.chat.remote(body, inject_context())  # the model server's span joins this trace
            try:
                result: ChatResult = await asyncio.wait_for(call, self._timeout_s)
            except TimeoutError:
                call.cancel()  # awaiting a DeploymentResponse does not cancel it; this aborts the vLLM request
                raise
        except Exception as error:
            raise _as_gateway_error(self.name, error, self._timeout_s) from error
        if result.is_error:
            raise GatewayError.from_openai_body(result.body)
        return result

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """SSE lines; errors before the first line raise GatewayError so the caller can still send a status."""
        stream = self._handle.options(stream=True).chat_stream.remote(body)
        try:
            first = await asyncio.wait_for(stream.__anext__(), self._timeout_s)
        except StopAsyncIteration:
            return
        except Exception as error:
            stream.cancel()
            raise _as_gateway_error(self.name, error, self._timeout_s) from error
        if isinstance(first, dict):
            raise GatewayError.from_openai_body(first)
        yield first
        async for line in stream:
            yield line
