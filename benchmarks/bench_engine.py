"""Engine and gateway figures on the running cluster (`cascade up` first). Prints a table; not a test.

1. Decode speed with and without guided decoding: the same prompts on the same SLM replica, called through
   its DeploymentHandle, so only the xgrammar constraint differs. tokens/s = completion tokens / engine time.
2. Gateway overhead: end-to-end latency through HTTP -> proxy -> gateway -> tier, minus the latency of a
   direct handle call to the same tier with the same request, interleaved so both see the same load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

import numpy as np
from tqdm import tqdm

PROMPTS = [
    "Describe a city as JSON.",
    "Give a book record as JSON.",
    "A user profile as JSON.",
    "A product with price as JSON.",
]
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "kind": {"enum": ["city", "book", "user", "product"]},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "kind", "rating", "tags"],
    "additionalProperties": False,
}


def _body(prompt: str, guided: bool, max_tokens: int) -> dict:
    body = {"model": "slm", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.0}
    if guided:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA}}
    return body


def decode_speed(tier, rounds: int, max_tokens: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {"unguided": [], "guided": []}
    for _ in tqdm(range(rounds), desc="decode speed", unit="round"):
        for prompt in PROMPTS:
            for mode in rates:
                result = tier.chat.remote(_body(prompt, mode == "guided", max_tokens)).result()
                rates[mode].append(result.body["usage"]["completion_tokens"] / result.engine_s)
    return {mode: statistics.median(values) for mode, values in rates.items()}


def _http(base_url: str, body: dict) -> float:
    request = urllib.request.Request(f"{base_url}/v1/chat/completions", json.dumps(body).encode(),
                                     {"content-type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()
    return time.perf_counter() - started


def gateway_overhead(tier, base_url: str, rounds: int) -> dict[str, float]:
    direct, through = [], []
    for index in tqdm(range(rounds), desc="gateway overhead", unit="req"):
        body = _body(PROMPTS[index % len(PROMPTS)], guided=False, max_tokens=1)
        started = time.perf_counter()
        tier.chat.remote(body).result()
        direct.append(time.perf_counter() - started)
        through.append(_http(base_url, body))
    d, t = np.array(direct) * 1000, np.array(through) * 1000
    overhead = t - d  # per interleaved pair: both calls saw the same load
    return {
        "direct_p50_ms": float(np.percentile(d, 50)), "direct_p95_ms": float(np.percentile(d, 95)),
        "gateway_p50_ms": float(np.percentile(t, 50)), "gateway_p95_ms": float(np.percentile(t, 95)),
        "overhead_p50_ms": float(np.percentile(overhead, 50)),
        "overhead_p95_ms": float(np.percentile(overhead, 95)),
    }


def main() -> None:
    import ray
    from ray import serve

    from cluster.config import load_config
    from cluster.config import tier_deployment_name

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config the cluster was started with (default: embedded)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the prompts for decode speed")
    parser.add_argument("--requests", type=int, default=60, help="request pairs for gateway overhead")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    config = load_config(args.config)
    base_url = f"http://{config.gateway.host}:{config.gateway.port}"
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    tier = serve.get_deployment_handle(tier_deployment_name(config.tiers[0].name), config.app_name)
    tier.chat.remote(_body(PROMPTS[0], True, 8)).result()  # warm-up: first guided request compiles a grammar
    speed = decode_speed(tier, args.rounds, args.max_tokens)
    overhead = gateway_overhead(tier, base_url, args.requests)
    print(f"\ndecode tokens/s (median, batch 1, max_tokens={args.max_tokens}, tier {config.tiers[0].name!r})")
    print(f"  unguided {speed['unguided']:8.1f}   guided (json_schema) {speed['guided']:8.1f}   "
          f"ratio guided/unguided {speed['guided'] / speed['unguided']:.2f}")
    print(f"gateway overhead over {args.requests} interleaved pairs (max_tokens=1)")
    print(f"  direct handle p50 {overhead['direct_p50_ms']:.1f} ms  p95 {overhead['direct_p95_ms']:.1f} ms")
    print(f"  through gateway p50 {overhead['gateway_p50_ms']:.1f} ms  p95 {overhead['gateway_p95_ms']:.1f} ms")
    print(f"  overhead (pairwise) p50 {overhead['overhead_p50_ms']:.1f} ms  p95 {overhead['overhead_p95_ms']:.1f} ms")
    ray.shutdown()


if __name__ == "__main__":
    main()
