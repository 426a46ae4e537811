"""Throughput at load, through the gateway and straight to the tier's replicas, side by side in one run.

The same streamed request (fixed prompt, `ignore_eos`, so every answer has exactly `max_tokens` tokens) is sent
at each concurrency level twice: over HTTP to the gateway with the tier's name as model (proxy -> gateway ->
tier: the gateway's validation, accounting and spans included), and over the tier's DeploymentHandle from this
process (the replicas with nothing in front). Per level and path: requests/s, output tokens/s, p50/p95 latency
and time to first token, and shed requests (429/503, or Serve's back-pressure on the handle). The two paths
alternate which goes first from level to level, so a drift in the machine's load does not favour one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from bench.load import percentile, require_loopback
from cluster.operations.client_auth import auth_headers

PATHS = ("gateway", "direct")
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


class Shed(Exception):
    """The request was refused for load (HTTP 429/503, Serve's back-pressure): shed, not failed."""


@dataclass(frozen=True)
class Answer:
    ttft_s: float
    latency_s: float
    output_tokens: int


@dataclass(frozen=True)
class PathLevel:
    path: str
    concurrency: int
    requests: int
    ok: int
    shed: int
    failed: int
    duration_s: float
    requests_per_s: float
    output_tokens_per_s: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    replicas: int | None  # the tier's RUNNING replicas when the level ended (the autoscaler may add some)


def stream_body(tier: str, max_tokens: int) -> dict[str, Any]:
    return {"model": tier, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0.0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}


def _usage_tokens(line: str) -> int | None:
    """The completion tokens of a usage chunk (`data: {...,"usage": {...}}`), else None."""
    if '"usage"' not in line or not line.startswith("data: {"):
        return None
    usage = json.loads(line.removeprefix("data: ")).get("usage")
    return usage.get("completion_tokens") if usage else None


async def _timed(lines: AsyncIterator[str], started: float) -> Answer:
    """`started` is taken before the request is sent: a stream's headers may wait for its first token."""
    first: float | None = None
    tokens = 0
    async for line in lines:
        if line.startswith('data: {"error"'):  # the stream ended early (its deadline): not an answer
            raise RuntimeError(line)
        if first is None and line.startswith("data: {"):
            first = time.perf_counter() - started
        tokens = _usage_tokens(line) or tokens
    latency = time.perf_counter() - started
    return Answer(first if first is not None else latency, latency, tokens)


def gateway_sender(client: httpx.AsyncClient, body: dict[str, Any]) -> Callable[[], Awaitable[Answer]]:
    async def send() -> Answer:
        started = time.perf_counter()
        async with client.stream("POST", "chat/completions", json=body) as response:
            if response.status_code in (429, 503):
                raise Shed(str(response.status_code))
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            return await _timed(_sse_lines(response), started)
    return send


async def _sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        if line:
            yield line


def direct_sender(handle: Any, body: dict[str, Any]) -> Callable[[], Awaitable[Answer]]:
    """The tier's replicas through its DeploymentHandle, as the gateway calls them (`ModelServer.chat_stream`)."""
    from ray.serve.exceptions import BackPressureError

    async def lines() -> AsyncIterator[str]:
        async for item in handle.options(stream=True).chat_stream.remote(body):
            if isinstance(item, dict):  # the tier's OpenAI error body
                raise RuntimeError(f"tier error: {item}")  # noqa: TRY004 - an answer, not a wrong type
            if isinstance(item, str):
                yield item.rstrip("\n")

    async def send() -> Answer:
        try:
            return await _timed(lines(), time.perf_counter())
        except BackPressureError as error:
            raise Shed("back-pressure") from error
    return send


async def run_level(path: str, send: Callable[[], Awaitable[Answer]], concurrency: int, requests: int,
                    replicas: Callable[[], int | None] = lambda: None) -> PathLevel:
    tickets = iter(range(requests))
    answers: list[Answer] = []
    shed = failed = 0

    async def worker() -> None:
        nonlocal shed, failed
        for _ in tickets:
            try:
                answers.append(await send())
            except Shed:
                shed += 1
            except Exception:  # noqa: BLE001 - counted and reported, the run goes on
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    duration = time.perf_counter() - started
    latencies = [a.latency_s * 1000 for a in answers]
    ttfts = [a.ttft_s * 1000 for a in answers]
    return PathLevel(
        path=path, concurrency=concurrency, requests=requests, ok=len(answers), shed=shed, failed=failed,
        duration_s=duration, requests_per_s=len(answers) / duration,
        output_tokens_per_s=sum(a.output_tokens for a in answers) / duration,
        latency_p50_ms=percentile(latencies, 50), latency_p95_ms=percentile(latencies, 95),
        ttft_p50_ms=percentile(ttfts, 50), ttft_p95_ms=percentile(ttfts, 95), replicas=replicas(),
    )


async def run_throughput(base_url: str, handle: Any, tier: str, levels: Sequence[int], requests_per_level: int,
                         max_tokens: int, on_level: Callable[[PathLevel], None] = lambda _: None,
                         replicas: Callable[[], int | None] = lambda: None) -> list[PathLevel]:
    """Every level on both paths; at least `requests_per_level` requests and two per worker at each."""
    require_loopback(base_url)
    body = stream_body(tier, max_tokens)
    results = []
    limits = httpx.Limits(max_connections=max(levels))
    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=auth_headers(), limits=limits,
                                 timeout=600) as client:
        senders = {"gateway": gateway_sender(client, body), "direct": direct_sender(handle, body)}
        for send in senders.values():  # not measured: each path's first request (routers meet the replicas)
            await send()
        for index, concurrency in enumerate(levels):
            order = PATHS if index % 2 == 0 else PATHS[::-1]
            for path in order:
                level = await run_level(path, senders[path], concurrency, max(requests_per_level, 2 * concurrency),
                                        replicas)
                on_level(level)
                results.append(level)
    return results


def format_table(results: Sequence[PathLevel]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    header = (f"{'conc':>4} {'path':<8} {'ok':>4} {'shed':>4} {'fail':>4} {'req/s':>6} {'tok/s':>6} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'TTFT p50':>8} {'TTFT p95':>8} {'replicas':>8}")
    lines = [header]
    for r in sorted(results, key=lambda r: (r.concurrency, PATHS.index(r.path))):
        lines.append(f"{r.concurrency:>4} {r.path:<8} {r.ok:>4} {r.shed:>4} {r.failed:>4} {r.requests_per_s:>6.2f} "
                     f"{r.output_tokens_per_s:>6.1f} {ms(r.latency_p50_ms):>7} {ms(r.latency_p95_ms):>7} "
                     f"{ms(r.ttft_p50_ms):>8} {ms(r.ttft_p95_ms):>8} "
                     f"{r.replicas if r.replicas is not None else '-':>8}")
    by_key = {(r.concurrency, r.path): r for r in results}
    ratios = [f"{c}: {by_key[c, 'gateway'].output_tokens_per_s / by_key[c, 'direct'].output_tokens_per_s:.2f}"
              for c in sorted({r.concurrency for r in results})
              if by_key.get((c, "direct")) and by_key[c, "direct"].output_tokens_per_s > 0]
    lines.append("throughput gateway/direct (output tokens/s) by concurrency: " + ", ".join(ratios))
    return "\n".join(lines)


def to_json(results: Sequence[PathLevel], meta: dict[str, Any]) -> dict[str, Any]:
    return {**meta, "levels": [asdict(r) for r in results]}
