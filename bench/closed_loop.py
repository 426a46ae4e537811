"""A closed-loop load: N clients, each sending its next request as soon as its last one ended.

Shared by the fault and autoscaling harnesses. Every request ends in exactly one of three ways:
  ok     - HTTP 2xx with a completion (from whichever tier answered),
  error  - an explicit HTTP error with an OpenAI error body (e.g. 503 + Retry-After): the client knows,
  lost   - no answer at all (connection dropped, no response before the client's timeout, a garbled body).
A serving cluster may shed or fail requests visibly; it must never lose one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.load import percentile, require_loopback
from cluster.operations.client_auth import auth_headers

Outcome = str  # "ok" | "error" | "lost"


@dataclass(frozen=True)
class RequestRecord:
    started_s: float  # since the load's clock started
    latency_s: float
    outcome: Outcome
    status: int | None
    final_tier: str | None
    detail: str | None = None

    @property
    def ended_s(self) -> float:
        return self.started_s + self.latency_s


def classify(response: httpx.Response) -> tuple[Outcome, str | None]:
    """ok / error (an explicit OpenAI error) / lost (an answer nobody can act on); plus the final tier."""
    try:
        body = response.json()
    except ValueError:
        return "lost", None
    if response.status_code == 200 and isinstance(body, dict) and body.get("choices"):
        return "ok", response.headers.get("x-cascade-final-tier")
    if response.status_code >= 400 and isinstance(body, dict) and isinstance(body.get("error"), dict):
        return "error", None
    return "lost", None


def p95_ms(records: Sequence[RequestRecord]) -> float | None:
    """p95 latency of the answered requests, or None when none was answered."""
    value = percentile([r.latency_s * 1000 for r in records if r.outcome == "ok"], 95)
    return None if value is None else round(value, 1)


@dataclass
class ClosedLoop:
    """The clients and what they saw; `in_flight` is how many requests are open right now."""

    base_url: str
    body: dict[str, Any]
    concurrency: int
    request_timeout_s: float = 180.0
    headers: Mapping[str, str] | None = None
    on_record: Callable[[RequestRecord], None] = lambda _: None
    records: list[RequestRecord] = field(default_factory=list)
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        require_loopback(self.base_url)

    def now(self) -> float:
        return time.monotonic() - self.started

    async def run(self, stop: asyncio.Event, deadline: float) -> None:
        """Send until `stop` is set or the monotonic `deadline` passes; requests in flight are waited for."""
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.base_url.rstrip("/") + "/", limits=limits,
                                     headers={**auth_headers(), **(self.headers or {})}) as client:
            await asyncio.gather(*(self._client(client, stop, deadline) for _ in range(self.concurrency)))

    async def _client(self, client: httpx.AsyncClient, stop: asyncio.Event, deadline: float) -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            sent = self.now()
            self.in_flight += 1
            try:
                response = await client.post("chat/completions", json=self.body, timeout=self.request_timeout_s)
                outcome, final_tier = classify(response)
                record = RequestRecord(sent, self.now() - sent, outcome, response.status_code, final_tier)
            except httpx.HTTPError as error:
                record = RequestRecord(sent, self.now() - sent, "lost", None, None, type(error).__name__)
            finally:
                self.in_flight -= 1
            self.records.append(record)
            self.on_record(record)
