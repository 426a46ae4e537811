"""A tier behind an OpenAI-compatible HTTP endpoint outside the cluster (a hosted LLM or another cluster).

Called from the gateway's own process: a Ray hop would add latency and nothing else. The API key is read
from the environment variable the config names (a Kubernetes Secret in the Helm chart), once, at start.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import httpx

from cluster.config import RemoteTierConfig
from deployments.protocol import AUTH_REFUSED_CODE, GatewayError
from deployments.vllm_engine import ChatResult

_log = logging.getLogger(__name__)
# What a provider answers about the request itself (too long, malformed): the client's to fix, not escalated.
CLIENT_FAULT_STATUSES = frozenset({400, 413, 422})
# What a provider answers when it does not accept the cluster's own key: the tier failed, not the request.
KEY_REFUSED_STATUSES = frozenset({401, 403})


class RemoteTierClient:
    def __init__(self, tier: RemoteTierConfig) -> None:
        self.name = tier.name
        self._model = tier.remote_model
        self._timeout_s = tier.timeout_s
        self._key_env = tier.api_key_env
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
            payload = None
        if response.status_code in CLIENT_FAULT_STATUSES:
            detail = payload.get("error") if isinstance(payload, dict) else None
            message = detail.get("message") if isinstance(detail, dict) else response.reason_phrase
            raise GatewayError(response.status_code, f"tier {self.name!r} refused the request: {message}")
        if response.status_code in KEY_REFUSED_STATUSES:  # the tier failed, and an operator must act: say so
            _log.warning("tier %s: HTTP %s from %s: the API key was refused", self.name, response.status_code,
                         self._client.base_url)
            raise GatewayError(502, f"tier {self.name!r} refused this cluster's API key (HTTP "
                               f"{response.status_code}); check {self._key_env or 'its api_key_env'}",
                               code=AUTH_REFUSED_CODE)
        if response.status_code != 200 or not _is_chat_completion(payload):
            # The provider's own failure (5xx, 429, a malformed body): the tier failed, so the
            # cascade may escalate. Its text is not echoed: it can quote credentials.
            _log.warning("tier %s: HTTP %s from %s", self.name, response.status_code, self._client.base_url)
            raise GatewayError(502, f"tier {self.name!r} failed (HTTP {response.status_code})", code="tier_error")
        return ChatResult(body={**payload, "model": self.name}, engine_s=elapsed)


def _is_chat_completion(payload: Any) -> bool:
    try:
        return isinstance(payload["choices"][0]["message"], dict)
    except (KeyError, IndexError, TypeError):
        return False
