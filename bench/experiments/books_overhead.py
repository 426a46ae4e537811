"""What the cluster-wide books add to a request, against the per-replica books they replaced. Prints a table.

Runs the real `ClusterBooks` actor on a local Ray instance of its own (no cluster needed; stop any `cascade up`
first or pass --address) and times, in this process as a gateway replica would call them:

- the hot path of every request: `BooksClient.add_record` (the span processor's sink) and `admit` for a key
  without a limit, with a high limit (tokens taken from a held lease) and with a low one (a lease of one token
  per request, so an actor round trip each, back to back and spaced as a limited key's requests are);
- the calls off the hot path: feedback and the report (each one actor round trip, plus the replica's flush);
- the per-replica path they replaced: `RequestWindow.add` and `RateLimiter.acquire` in process.

    .venv/bin/python bench/experiments/books_overhead.py --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import numpy as np

from cluster.telemetry.aggregate import RequestRecord, Unit
from cluster.telemetry.window import RequestWindow
from policies.access import ApiKey, RateLimiter

UNIT = Unit(success=True, escalated=False, latency_ms=12.0, cost_usd=1e-5, tokens_in=200, tokens_out=20)


def record(i: int) -> RequestRecord:
    return RequestRecord(f"bench-{i}", "default", 0.0, UNIT, (("slm", UNIT),))


def key(name: str, rpm: float | None, burst: int = 1) -> ApiKey:
    return ApiKey(name, "sha256:" + "0" * 64, frozenset(), False, rpm, burst)


def timed(n: int, call: Callable[[int], object]) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


async def timed_async(n: int, call: Callable[[int], Awaitable[object]], gap_s: float = 0.0) -> list[float]:
    """Each call timed alone; `gap_s` between calls (untimed) is the time between a key's requests."""
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - started) * 1e6)
        await asyncio.sleep(gap_s)
    return samples


def row(name: str, samples: list[float]) -> str:
    p50, p95 = np.percentile(samples, [50, 95])
    return f"| {name} | {len(samples)} | {p50:,.1f} | {p95:,.1f} | {statistics.fmean(samples):,.1f} |"


async def measure(n: int) -> list[str]:
    from deployments.books import books_actor
    from deployments.books_client import BooksClient

    client = BooksClient(books_actor("books-bench", None))
    unlimited, busy, slow = key("unlimited", None), key("busy", 6e9, 1000), key("slow", 6e9, 1)
    rows = [
        row("cluster: add_record (every request)", timed(n, lambda i: client.add_record(record(i)))),
        row("cluster: admit, key without a limit", await timed_async(n, lambda _: client.admit(unlimited))),
        row("cluster: admit, lease held (high rate)", await timed_async(n, lambda _: client.admit(busy))),
        row("cluster: admit, leases of 1 token, back to back", await timed_async(n // 4, lambda _: client.admit(slow))),
        row("cluster: admit, leases of 1 token, 20 ms apart",
            await timed_async(n // 4, lambda _: client.admit(slow), gap_s=0.02)),
        row("cluster: feedback (off the hot path)",
            await timed_async(n // 10, lambda i: client.feedback(f"bench-{i}", False))),
        row("cluster: report (off the hot path)", await timed_async(n // 20, lambda _: client.snapshot())),
    ]
    client.close()
    window, limiter = RequestWindow(), RateLimiter()
    rows += [
        row("per replica (before): RequestWindow.add", timed(n, lambda i: window.add(record(i)))),
        row("per replica (before): RateLimiter.acquire, high rate", timed(n, lambda _: limiter.acquire(busy))),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--address", default=None, help="an existing Ray cluster; default: a local one of its own")
    args = parser.parse_args()
    import ray

    ray.init(address=args.address, num_cpus=None if args.address else 1, logging_level="ERROR",
             log_to_driver=False, namespace="books-bench")
    try:
        rows = asyncio.run(measure(args.requests))
    finally:
        ray.shutdown()
    print("| call | n | p50 µs | p95 µs | mean µs |\n| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
