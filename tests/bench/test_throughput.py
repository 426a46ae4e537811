"""The throughput harness's own arithmetic: what it counts as shed or failed, tokens from the usage chunk, the table.

The paths it drives (the gateway over HTTP, the tier's handle) are the real ones in `cascade bench throughput`;
here a sender stands in for them, below the harness's boundary.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from bench.throughput import Answer, PathLevel, Shed, _timed, format_table, run_level


async def _lines(*lines: str):
    for line in lines:
        yield line


def test_tokens_come_from_the_usage_chunk_and_first_token_from_the_first_data_line() -> None:
    usage = json.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 32}})
    answer = asyncio.run(_timed(_lines(": keep-alive", 'data: {"choices": [{"delta": {"content": "A"}}]}',
                                       f"data: {usage}", "data: [DONE]"), started=0.0))
    assert answer.output_tokens == 32
    assert 0 < answer.ttft_s <= answer.latency_s


def test_a_level_counts_shed_and_failed_apart_from_answers() -> None:
    outcomes = itertools.cycle(["ok", "shed", "ok", "error"])

    async def send() -> Answer:
        outcome = next(outcomes)
        if outcome == "shed":
            raise Shed("429")
        if outcome == "error":
            raise RuntimeError("HTTP 500")
        return Answer(ttft_s=0.01, latency_s=0.02, output_tokens=32)

    level = asyncio.run(run_level("gateway", send, concurrency=2, requests=8, replicas=lambda: 1))
    assert (level.requests, level.ok, level.shed, level.failed, level.replicas) == (8, 4, 2, 2, 1)
    assert level.output_tokens_per_s == level.requests_per_s * 32
    assert level.ttft_p50_ms == 10.0 and level.latency_p50_ms == 20.0


def _level(path: str, concurrency: int, tokens_per_s: float) -> PathLevel:
    return PathLevel(path, concurrency, 4, 4, 0, 0, 1.0, 1.0, tokens_per_s, 1.0, 1.0, 1.0, 1.0, 1)


def test_the_table_gives_the_gateway_to_direct_ratio_per_level() -> None:
    table = format_table([_level("gateway", 8, 45.0), _level("direct", 8, 50.0), _level("gateway", 1, 14.0),
                          _level("direct", 1, 14.0)])
    assert table.splitlines()[-1].endswith("1: 1.00, 8: 0.90")
