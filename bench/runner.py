"""Send BFCL cases through a running endpoint, once per policy, and record what happened per request.

A policy is what a client asks for: `slm-only` (model = the SLM tier), `llm-only` (model = the large tier,
`fallback` unless told otherwise) or `cascade[:ROUTE]` (model `cascade` on a route). Each case goes out as a
client would send it, over HTTP. Guided runs force a call (`tool_choice="required"`, which the gateway
enforces with grammar-constrained decoding); unguided runs leave the choice to the model (`"auto"`) with the
tools also described in a system prompt, and read calls from `tool_calls` or from JSON in the text.
Irrelevance cases always use `"auto"`: forcing a call would make the right answer (no call) impossible.

Records are appended to `records.jsonl` as they complete, so an interrupted run keeps its results and the
report is built from whatever exists. Runs into the same folder add up (a guided and an unguided run side by
side); a case run again under the same policy label counts once, the latest record.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from bench import report as report_module
from cluster.evaluation.bfcl import Case, load_cases
from cluster.evaluation.calls import parse_answer, unguided_messages
from cluster.evaluation.scorer import score_case
from cluster.operations.client_auth import auth_headers

__all__ = ["POLICIES", "BenchError", "Policy", "parse_policies", "run_bench"]

POLICIES = ("slm-only", "llm-only", "cascade")
RECORDS_FILE = "records.jsonl"
SIMULATED_FINGERPRINT = "simulated-llm"  # what bench.simulated_llm puts in `system_fingerprint`
MAX_TOKENS = 512
# Every request asks for the top alternatives of each token: the records then hold what a confidence model is
# fitted on (`cascade calibrate --fit`), with the answer they belong to.
TOP_LOGPROBS = 3


class BenchError(RuntimeError):
    """The benchmark cannot run (endpoint unreachable, bad policy); the message says what to do."""


@dataclass(frozen=True)
class Policy:
    name: str  # slm-only, llm-only, cascade
    model: str
    route: str | None = None

    @property
    def report_route(self) -> str:
        """The gateway accounts a tier addressed by name under a route of that name."""
        return self.route or self.model


def parse_policies(names: Iterable[str], slm_tier: str = "slm", llm_tier: str = "fallback") -> list[Policy]:
    """`slm-only`, `llm-only`, `cascade` or `cascade:ROUTE` -> policies (route `default` when not given)."""
    policies = []
    for name in names:
        base, _, route = name.strip().partition(":")
        if base == "slm-only":
            policies.append(Policy(base, slm_tier))
        elif base == "llm-only":
            policies.append(Policy(base, llm_tier))
        elif base == "cascade":
            policies.append(Policy(f"cascade:{route}" if route else base, "cascade", route or "default"))
        else:
            raise BenchError(f"unknown policy {name!r}; known: {', '.join(POLICIES)} (cascade:ROUTE for a route)")
    return policies


def policy_label(policy: Policy, guided: bool) -> str:
    return policy.name if guided else f"{policy.name}+unguided"


def request_body(case: Case, policy: Policy, guided: bool, store: bool = True) -> dict[str, Any]:
    """The case as a client sends it; `store=False` keeps it out of the recordings (an evaluation must not become
    training data)."""
    body: dict[str, Any] = {"model": policy.model, "tools": case.tools, "max_tokens": MAX_TOKENS, "temperature": 0,
                            "logprobs": True, "top_logprobs": TOP_LOGPROBS}
    if not store:
        body["store"] = False
    if guided and case.expects_calls:
        body["tool_choice"] = "required"
        body["parallel_tool_calls"] = case.parallel  # category metadata: BFCL's simple cases want one call
    else:
        body["tool_choice"] = "auto"
    body["messages"] = case.messages if guided else unguided_messages(case)
    return body


async def _send(client: httpx.AsyncClient, case: Case, policy: Policy, guided: bool,
                simulated_tiers: frozenset[str], store: bool) -> dict[str, Any]:
    headers = {"x-cascade-route": policy.route} if policy.route else {}
    started = time.perf_counter()
    record: dict[str, Any] = {"policy": policy_label(policy, guided), "guided": guided, "model": policy.model,
                              "route": policy.route, "case_id": case.id, "category": case.category,
                              "success": False, "schema_valid": False, "executable": None, "status": 0}
    try:
        response = await client.post("chat/completions", json=request_body(case, policy, guided, store),
                                     headers=headers)
        body = response.json()
    except (httpx.HTTPError, ValueError) as error:
        return {**record, "latency_ms": (time.perf_counter() - started) * 1000, "error": type(error).__name__}
    record["latency_ms"] = (time.perf_counter() - started) * 1000
    record["status"] = response.status_code
    if response.status_code != 200 or "choices" not in body:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        return {**record, "error": message or response.reason_phrase}
    cascade = body.get("cascade") or {}
    usage = body.get("usage") or {}
    choice = body["choices"][0]
    parsed = parse_answer(case, choice["message"], guided)
    score = score_case(case, parsed.calls)
    tiers = cascade.get("tiers_tried") or []
    return {**record, "success": score.valid, "score_error": score.error, "schema_valid": parsed.schema_valid,
            "executable": parsed.executable, "verified": cascade.get("verified"), "tiers_tried": tiers,
            "final_tier": cascade.get("final_tier"), "escalated": len(set(tiers)) > 1,
            "confidence": cascade.get("confidence"), "features": cascade.get("features"),
            "cost_usd": cascade.get("cost_usd") or 0.0,
            "tokens_in": usage.get("prompt_tokens", 0), "tokens_out": usage.get("completion_tokens", 0),
            "attempts": [{k: a.get(k) for k in ("tier", "action", "latency_ms", "cost_usd")}
                         for a in cascade.get("attempts", [])],
            "simulated": body.get("system_fingerprint") == SIMULATED_FINGERPRINT or bool(simulated_tiers & set(tiers)),
            "message": choice["message"], "logprobs": (choice.get("logprobs") or {}).get("content"),
            "error": None}


async def _check_endpoint(client: httpx.AsyncClient, base_url: str) -> None:
    try:
        response = await client.get("models", timeout=10)
    except httpx.HTTPError as error:
        raise BenchError(f"cannot reach {base_url}: {type(error).__name__}; is the cluster up (`cascade up`)?") \
            from None
    if response.status_code != 200:
        raise BenchError(f"{base_url}/models answered HTTP {response.status_code}; is this an OpenAI endpoint?")


async def _gateway_route(client: httpx.AsyncClient, route: str) -> dict[str, Any] | None:
    """The gateway's accounting for one route (energy comes from here); None when it has none."""
    try:
        response = await client.get("cascade/report", timeout=10)
        return response.json().get("routes", {}).get(route) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


async def _run(base_url: str, cases: Sequence[Case], policies: Sequence[Policy], concurrency: int, out: Path,
               guided: bool, simulated_tiers: frozenset[str], timeout_s: float, store: bool) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=auth_headers(), timeout=timeout_s,
                                 limits=limits) as client:
        await _check_endpoint(client, base_url)
        gate = asyncio.Semaphore(concurrency)

        async def one(case: Case, policy: Policy) -> dict[str, Any]:
            async with gate:
                return await _send(client, case, policy, guided, simulated_tiers, store)

        with (out / RECORDS_FILE).open("a", encoding="utf-8") as sink, \
                tqdm(total=len(cases) * len(policies), unit="req", desc="bench") as bar:
            for policy in policies:
                bar.set_postfix_str(policy_label(policy, guided))
                for done in asyncio.as_completed([one(case, policy) for case in cases]):
                    sink.write(json.dumps(await done) + "\n")
                    sink.flush()
                    bar.update()
                figures = await _gateway_route(client, policy.report_route)
                report_module.save_gateway_figures(out, policy_label(policy, guided), policy.report_route, figures)


def run_bench(
    base_url: str,
    category: str,
    limit: int | None,
    policies: Sequence[str],
    concurrency: int,
    out_dir: str | Path,
    guided: bool = True,
    *,
    llm_tier: str = "fallback",
    simulated_tiers: Iterable[str] = (),
    sweep_min_success_rate: float | None = None,
    timeout_s: float = 300.0,
    offset: int = 0,
    store: bool = True,
) -> dict[str, Any]:
    """Run the cases, then write report.json, report.md and plots to `out_dir`; returns the report.

    `sweep_min_success_rate` set: also runs slm-only and llm-only if missing and replays them through the
    threshold calibration. Interrupted (Ctrl-C): the report is written from the records so far, then the
    KeyboardInterrupt propagates.
    """
    if concurrency < 1:
        raise BenchError("concurrency must be at least 1")
    parsed = parse_policies(policies, llm_tier=llm_tier)
    if sweep_min_success_rate is not None:
        have = {p.name for p in parsed}
        parsed += parse_policies([n for n in ("slm-only", "llm-only") if n not in have], llm_tier=llm_tier)
    cases = load_cases(category, limit, offset=offset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(_run(base_url, cases, parsed, concurrency, out, guided, frozenset(simulated_tiers), timeout_s,
                         store))
    except KeyboardInterrupt:
        if (out / RECORDS_FILE).exists():
            report_module.write_report(out, sweep_min_success_rate)
        raise
    return report_module.write_report(out, sweep_min_success_rate)
