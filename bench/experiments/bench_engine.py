"""Engine and gateway figures on the running cluster (`cascade up` first). Prints a table; not a test.

1. Decode speed with and without guided decoding: the same prompts on the same SLM replica, called through
   its DeploymentHandle, so only the xgrammar constraint differs. tokens/s = completion tokens / engine time.
2. Gateway overhead against Ray Serve's floor, in one run: for the same one-token request on the SLM, the
   latency of a direct handle call to the tier, of HTTP -> proxy -> a no-op relay deployment -> tier (the
   floor: what an HTTP deployment in front of the tier costs on Serve; once as a plain Starlette callable, once
   behind FastAPI as the gateway is), and of HTTP -> proxy -> gateway (model `cascade`: the accepted-on-SLM
   path) -> tier. All four per round, in shuffled order, so all see the same load; each HTTP path's overhead
   is its latency minus the direct call's in the same round.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import httpx
import numpy as np
from starlette.requests import Request  # at module level: FastAPI resolves the route's annotations from here
from starlette.responses import JSONResponse
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
            for mode, values in rates.items():
                result = tier.chat.remote(_body(prompt, mode == "guided", max_tokens)).result()
                values.append(result.body["usage"]["completion_tokens"] / result.engine_s)
    return {mode: statistics.median(values) for mode, values in rates.items()}


def _http(url: str, body: dict) -> tuple[float, dict]:
    """Seconds the call took, and the answer's body."""
    with httpx.Client(timeout=300) as client:  # a new connection per request, the client's setup not timed
        started = time.perf_counter()
        response = client.post(url, json=body).raise_for_status()
        elapsed = time.perf_counter() - started
    return elapsed, response.json()


FLOOR_APP = "serve-floor"


def deploy_floor_relays(app_name: str, tier_deployment: str) -> dict[str, str]:
    """Two no-op HTTP deployments that hand the body to the tier and return its answer: Serve's own cost of an
    HTTP deployment in front of the tier (proxy, replica, one handle hop). `starlette` is the plainest Serve
    HTTP deployment; `fastapi` is the same behind a FastAPI ingress, which the gateway is. Returns URL paths."""
    from fastapi import FastAPI
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class StarletteRelay:
        def __init__(self) -> None:
            self.tier = serve.get_deployment_handle(tier_deployment, app_name)

        async def __call__(self, request: Request) -> JSONResponse:
            result = await self.tier.chat.remote(await request.json())
            return JSONResponse(result.body)

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    @serve.ingress(api)
    class FastApiRelay:
        def __init__(self) -> None:
            self.tier = serve.get_deployment_handle(tier_deployment, app_name)

        @api.post("/")
        async def relay(self, request: Request) -> JSONResponse:
            result = await self.tier.chat.remote(await request.json())
            return JSONResponse(result.body)

    paths = {}
    for name, relay in (("starlette", StarletteRelay), ("fastapi", FastApiRelay)):
        serve.run(relay.bind(), name=f"{FLOOR_APP}-{name}", route_prefix=f"/{FLOOR_APP}-{name}")
        paths[name] = f"/{FLOOR_APP}-{name}/"  # FastAPI answers the bare prefix with a redirect to this
    return paths


def gateway_overhead(tier, tier_name: str, base_url: str, floor_urls: dict[str, str],
                     rounds: int) -> tuple[dict[str, np.ndarray], int]:
    """Latencies (ms) per round for the same prompt: a direct handle call, each floor relay, and the gateway, in a
    seeded shuffled order per round so no path always runs first or last. A round whose gateway request left
    the first tier (escalated: a second tier's work) is dropped from every path; how many were is returned too."""
    rng = random.Random(0)
    escalated = 0
    latency: dict[str, list[float]] = {"direct": [], **{name: [] for name in floor_urls}, "gateway": []}
    for index in tqdm(range(rounds), desc="gateway overhead", unit="round"):
        prompt = PROMPTS[index % len(PROMPTS)]
        client_body = {**_body(prompt, guided=False, max_tokens=1), "model": "cascade"}
        # What the gateway's cascade sends the tier for this request (cascade.TOP_LOGPROBS): the same engine work.
        tier_body = {**_body(prompt, guided=False, max_tokens=1), "logprobs": True, "top_logprobs": 3}
        order = list(latency)
        rng.shuffle(order)
        timed: dict[str, float] = {}
        for path in order:
            if path == "direct":
                started = time.perf_counter()
                tier.chat.remote(tier_body).result()
                timed[path] = time.perf_counter() - started
            elif path == "gateway":
                timed[path], answer = _http(f"{base_url}/v1/chat/completions", client_body)
                stayed = answer["cascade"]["tiers_tried"] == [tier_name]
            else:
                timed[path], _ = _http(floor_urls[path], tier_body)
        if not stayed:
            escalated += 1
            continue
        for path, seconds in timed.items():
            latency[path].append(seconds)
    return {path: np.array(values) * 1000 for path, values in latency.items()}, escalated


def _p(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    import ray
    from ray import serve

    from cluster.config import load_config, tier_deployment_name

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config the cluster was started with (default: embedded)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the prompts for decode speed")
    parser.add_argument("--requests", type=int, default=100, help="rounds (one request per path) for gateway overhead")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    config = load_config(args.config)
    base_url = f"http://{config.gateway.host}:{config.gateway.port}"
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    tier = serve.get_deployment_handle(tier_deployment_name(config.tiers[0].name), config.app_name)
    tier.chat.remote(_body(PROMPTS[0], True, 8)).result()  # warm-up: first guided request compiles a grammar
    speed = decode_speed(tier, args.rounds, args.max_tokens)
    floors = {name: base_url + path for name, path in deploy_floor_relays(
        config.app_name, tier_deployment_name(config.tiers[0].name)).items()}
    try:
        latency, escalated = gateway_overhead(tier, config.tiers[0].name, base_url, floors, args.requests)
    finally:
        for name in floors:
            serve.delete(f"{FLOOR_APP}-{name}")
    print(f"\ndecode tokens/s (median, batch 1, max_tokens={args.max_tokens}, tier {config.tiers[0].name!r})")
    print(f"  unguided {speed['unguided']:8.1f}   guided (json_schema) {speed['guided']:8.1f}   "
          f"ratio guided/unguided {speed['guided'] / speed['unguided']:.2f}")
    print(f"latency over {len(latency['direct'])} rounds (max_tokens=1, paths in shuffled order; {escalated} dropped: "
          "the gateway's cascade escalated), ms:   p50      p95")
    labels = {"direct": "direct handle to the tier", "starlette": "HTTP -> Starlette relay -> tier",
              "fastapi": "HTTP -> FastAPI relay -> tier", "gateway": "HTTP -> gateway (cascade) -> tier"}
    for path, values in latency.items():
        print(f"  {labels[path]:<36} {_p(values, 50):7.1f}  {_p(values, 95):7.1f}")
    added = {path: values - latency["direct"] for path, values in latency.items() if path != "direct"}
    print("over the direct call, per round, ms:       p50      p95")
    for path, values in added.items():
        print(f"  {labels[path]:<36} {_p(values, 50):7.1f}  {_p(values, 95):7.1f}")
    for floor in floors:
        differences = _p(added["gateway"] - added[floor], 50)
        print(f"gateway - {floor} floor: p50 of the rounds' differences {differences:.2f} ms,"
              f" difference of p50s {_p(added['gateway'], 50) - _p(added[floor], 50):.2f} ms")
    ray.shutdown()


if __name__ == "__main__":
    main()
