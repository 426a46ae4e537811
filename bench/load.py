"""A bounded load generator for a local endpoint: throughput and latency percentiles per concurrency level.

Bounded twice, so it can never turn into an open-ended flood: a fixed number of requests per level and one
deadline for the whole run (no new request starts after it; requests in flight are cut off by the client
timeout, set to the time left). It only targets loopback addresses: load tests of shared or remote services
need their owners' consent, which a command-line flag cannot give.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from cluster.operations.client_auth import auth_headers

__all__ = ["LevelResult", "LoadError", "LoadReport", "percentile", "require_loopback", "run_load"]

ReplicaReader = Callable[[], Mapping[str, int]]  # deployment name -> running replicas


class LoadError(ValueError):
    """Refused or impossible load test (non-loopback host, bad bounds)."""


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int  # sent (finished, successfully or not)
    ok: int
    errors_by_status: dict[str, int]  # HTTP status, or the transport error's name
    duration_s: float
    throughput_rps: float  # successful requests per second
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    stopped_by_deadline: bool


@dataclass
class LoadReport:
    levels: list[LevelResult] = field(default_factory=list)
    replicas: list[dict[str, Any]] = field(default_factory=list)  # {"t_s": seconds since start, "counts": {...}}

    def to_dict(self) -> dict[str, Any]:
        return {"levels": [asdict(level) for level in self.levels], "replicas": self.replicas}


def require_loopback(base_url: str) -> None:
    """Raise LoadError unless every address the URL's host resolves to is a loopback address."""
    host = urlsplit(base_url).hostname
    if not host:
        raise LoadError(f"no host in {base_url!r}")
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except socket.gaierror as error:
            raise LoadError(f"cannot resolve {host!r}: {error}") from None
    if not addresses or not all(address.is_loopback for address in addresses):
        raise LoadError(f"refusing to load-test {host!r}: only loopback hosts (127.0.0.1, ::1, localhost) are allowed")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile, or None for no values (nothing answered)."""
    return float(np.percentile(values, q)) if values else None


async def _level(client: httpx.AsyncClient, bodies: Sequence[dict[str, Any]], concurrency: int, count: int,
                 deadline: float, headers: Mapping[str, str]) -> LevelResult:
    tickets = iter(range(count))
    cycle = itertools.cycle(bodies)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stopped = False

    async def worker() -> None:
        nonlocal stopped
        for _ in tickets:
            left = deadline - time.monotonic()
            if left <= 0:
                stopped = True
                return
            started = time.perf_counter()
            try:
                response = await client.post("chat/completions", json=next(cycle), headers=dict(headers), timeout=left)
                key = None if response.status_code == 200 else str(response.status_code)
            except httpx.HTTPError as error:
                key = type(error).__name__
            if key is None:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors[key] = errors.get(key, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    duration = time.monotonic() - started
    return LevelResult(
        concurrency=concurrency, requests=len(latencies) + sum(errors.values()), ok=len(latencies),
        errors_by_status=errors, duration_s=duration, throughput_rps=len(latencies) / duration if duration else 0.0,
        latency_p50_ms=percentile(latencies, 50), latency_p95_ms=percentile(latencies, 95),
        latency_p99_ms=percentile(latencies, 99), stopped_by_deadline=stopped,
    )


async def _sample_replicas(reader: ReplicaReader, report: LoadReport, started: float, every_s: float) -> None:
    while True:
        try:
            counts = dict(await asyncio.to_thread(reader))
        except Exception as error:  # noqa: BLE001 - a failing reader must not stop the load test
            counts = {"error": type(error).__name__}
        report.replicas.append({"t_s": round(time.monotonic() - started, 2), "counts": counts})
        await asyncio.sleep(every_s)


async def run_load(
    base_url: str,
    bodies: Sequence[dict[str, Any]],
    concurrency_levels: Sequence[int],
    requests_per_level: int,
    max_duration_s: float,
    replica_reader: ReplicaReader | None = None,
    sample_every_s: float = 1.0,
    headers: Mapping[str, str] | None = None,
) -> LoadReport:
    """Run each concurrency level in turn (ascending as given) until done or the run's deadline passes."""
    require_loopback(base_url)
    if not bodies or requests_per_level < 1 or max_duration_s <= 0 or any(c < 1 for c in concurrency_levels):
        raise LoadError("need request bodies, requests_per_level >= 1, max_duration_s > 0 and concurrency >= 1")
    report = LoadReport()
    started = time.monotonic()
    deadline = started + max_duration_s
    sampler = None
    if replica_reader is not None:
        sampler = asyncio.create_task(_sample_replicas(replica_reader, report, started, sample_every_s))
    limits = httpx.Limits(max_connections=max(concurrency_levels))
    try:
        async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=auth_headers(),
                                     limits=limits) as client:
            for concurrency in concurrency_levels:
                if time.monotonic() >= deadline:
                    break
                report.levels.append(
                    await _level(client, bodies, concurrency, requests_per_level, deadline, headers or {}))
    finally:
        if sampler is not None:
            sampler.cancel()
    return report
