"""What a cold replica's first requests cost, and what the warm-up leaves of it. Prints tables; not a test.

1. Engine (default): the first tier's vLLM engine started in a fresh process, as a model-server replica starts
   it, twice: without a warm-up and with `VllmChatEngine.warm_up`. Each then answers the same sequence: a plain
   chat twice, a forced tool call (schema A) twice, a forced tool call with another schema (B) twice. From the
   cold run: the first forward passes and chat template (plain #1 - plain #2), xgrammar's per-tokenizer setup
   (tool A #1 - tool A #2 - the compile of a new schema), a grammar-cache miss (tool B #1 - tool B #2), and
   the first request that asks for top logprobs, as every cascade attempt does (logprobs #1 - #2).
   A replica the autoscaler adds runs the same constructor, so the warm run is also its first request.
2. `--gateway`: right after `cascade up`, the README's tool call through the gateway: the first request, then
   the warm p50 of --repeats more, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"]}}}
FLIGHT = {"type": "function", "function": {"name": "book_flight", "parameters": {
    "type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"},
                                     "passengers": {"type": "integer", "minimum": 1}},
    "required": ["origin", "destination", "passengers"]}}}
README_REQUEST = {"messages": [{"role": "user", "content": "What is the weather in Paris, in celsius?"}],
                  "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 60,
                  "temperature": 0.0}
# What the cascade adds to every tier request (deployments.cascade): token logprobs, the top 3 alternatives.
CASCADE_LOGPROBS = {"logprobs": True, "top_logprobs": 3}
SEQUENCE: list[tuple[str, dict[str, Any]]] = [
    ("plain #1", {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16, "temperature": 0.0}),
    ("plain #2", {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16, "temperature": 0.0}),
    ("tool A #1", README_REQUEST),
    ("tool A #2", README_REQUEST),
    ("tool B #1", {**README_REQUEST, "tools": [FLIGHT],
                   "messages": [{"role": "user", "content": "Book a flight from Oslo to Rome for 2 people."}]}),
    ("tool B #2", {**README_REQUEST, "tools": [FLIGHT],
                   "messages": [{"role": "user", "content": "Book a flight from Oslo to Rome for 2 people."}]}),
    ("logprobs #1", {**README_REQUEST, **CASCADE_LOGPROBS}),
    ("logprobs #2", {**README_REQUEST, **CASCADE_LOGPROBS}),
]


async def _engine_run(config_path: str | None, warm: bool) -> dict[str, float]:
    from cluster.config import load_config
    from deployments.vllm_engine import VllmChatEngine

    tier = load_config(config_path).vllm_tiers[0]
    engine = await VllmChatEngine.start(tier)
    timings: dict[str, float] = {}
    try:
        if warm:
            timings["warm-up"] = await engine.warm_up(tier.name)
        for name, body in SEQUENCE:
            started = time.perf_counter()
            result = await engine.chat({**body, "model": tier.name})
            timings[name] = time.perf_counter() - started
            if result.is_error:
                raise RuntimeError(f"{name}: {result.body}")
    finally:
        engine.shutdown()
    return timings


def _in_fresh_process(config_path: str | None, warm: bool) -> dict[str, float]:
    """One run in its own process: process-wide caches (xgrammar's, the template's) start empty, as in a replica."""
    command = [sys.executable, __file__, "--one-run", "warm" if warm else "cold"]
    if config_path:
        command += ["--config", config_path]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def engine_table(config_path: str | None) -> None:
    cold, warm = _in_fresh_process(config_path, warm=False), _in_fresh_process(config_path, warm=True)
    print(f"\nseconds per request on a fresh engine, {SEQUENCE[0][0]!r} first (max_tokens 16 / 60, temperature 0)")
    print(f"  {'request':<12} {'no warm-up':>11} {'warmed up':>10}")
    print(f"  {'warm-up':<12} {'-':>11} {warm['warm-up']:>10.2f}")
    for name, _ in SEQUENCE:
        print(f"  {name:<12} {cold[name]:>11.2f} {warm[name]:>10.2f}")
    miss = cold["tool B #1"] - cold["tool B #2"]
    tokenizer = cold["tool A #1"] - cold["tool A #2"] - miss
    first, second = cold["logprobs #1"], cold["logprobs #2"]
    print("\nfrom the run without warm-up, seconds:")
    print(f"  first forward passes + chat template (plain #1 - #2)      {cold['plain #1'] - cold['plain #2']:6.2f}")
    print(f"  xgrammar tokenizer setup (tool A #1 - #2 - one cache miss) {tokenizer:6.2f}")
    print(f"  grammar cache miss, a schema not seen before (tool B #1 - #2) {miss:6.2f}")
    print(f"  first request with top logprobs (logprobs #1 - #2)         {first - second:6.2f}")
    print(f"first / second tool call with logprobs (what the cascade sends): no warm-up "
          f"{first / second:.2f}x, warmed up {warm['logprobs #1'] / warm['logprobs #2']:.2f}x")


def _post(url: str, body: dict[str, Any]) -> float:
    with httpx.Client(timeout=600) as client:  # a new connection per request, the client's setup not timed
        started = time.perf_counter()
        client.post(url, json=body).raise_for_status()
        return time.perf_counter() - started


def gateway_table(config_path: str | None, repeats: int) -> None:
    from cluster.config import load_config

    gateway = load_config(config_path).gateway
    url = f"http://{gateway.host}:{gateway.port}/v1/chat/completions"
    body = {**README_REQUEST, "model": "cascade"}
    first = _post(url, body)
    warm = statistics.median(_post(url, body) for _ in range(repeats))
    print(f"\nthe README's tool call through the gateway: first {first:.2f} s, warm p50 {warm:.2f} s "
          f"({repeats} more), ratio {first / warm:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="cluster config (default: embedded); its first vLLM tier is measured")
    parser.add_argument("--gateway", action="store_true", help="measure the running cluster's first request instead")
    parser.add_argument("--repeats", type=int, default=9, help="warm requests after the first (--gateway)")
    parser.add_argument("--one-run", choices=["cold", "warm"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:
        print(json.dumps(asyncio.run(_engine_run(args.config, warm=args.one_run == "warm"))))
    elif args.gateway:
        gateway_table(args.config, args.repeats)
    else:
        engine_table(args.config)


if __name__ == "__main__":
    main()
