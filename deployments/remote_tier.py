"""A tier behind an OpenAI-compatible HTTP endpoint outside the cluster (a hosted LLM or another cluster).

Called from the gateway's own process: a Ray hop would add latency and nothing else. The API key is read
from the environment variable the config names (a Kubernetes Secret in the Helm chart), once, at start.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from cluster.config import RemoteTierConfig
from deployments.protocol import GatewayError
from deployments.vllm_engine import ChatResult


class RemoteTierClient:
    def __init__(self, tier: RemoteTierConfig) -> None:
        self.name = tier.name
        self._model = tier.remote_model
        self._timeout_s = tier.timeout_s
        headers = {"content-type": "application/json"}
        if tier.api_key_env is not None:
            key = os.environ.get(tier.api_key_env)
            if not key:
                raise ValueError(f"tier {tier.name!r}: environment variable {tier.api_key_env} is not set")
            headers["authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(base_url=tier.base_url.rstrip("/") + "/", headers=headers)

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        started = time.perf_counter()
        try:
            response = await self._client.post(
                "chat/completions", json={**body, "model": self._model}, timeout=self._timeout_s
            )
        except httpx.TimeoutException:
            raise GatewayError(504, f"tier {self.name!r} did not answer within {self._timeout_s:g} s",
                               code="timeout") from None
        except httpx.HTTPError as error:
            raise GatewayError(503, f"tier {self.name!r} unreachable: {type(error).__name__}",
                               code="tier_unavailable", retry_after_s=1) from None
        elapsed = time.perf_counter() - started
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200:
            error = payload.get("error") if isinstance(payload, dict) else None
            message = error.get("message") if isinstance(error, dict) else response.reason_phrase
            # The endpoint's 5xx is this tier failing (502 to our client); its 4xx is about the request.
            status = response.status_code if response.status_code < 500 else 502
            raise GatewayError(status, f"tier {self.name!r}: {message}", code="tier_error" if status == 502 else None)
        return ChatResult(body={**payload, "model": self.name}, engine_s=elapsed)
