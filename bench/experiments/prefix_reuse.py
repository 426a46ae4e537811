"""Time to first token on repeated tool lists, with vLLM's prefix caching on and off. Prints a table; not a test.

The workload an agent sends: a few tool lists (BFCL live_multiple cases, the largest that fit), each asked several
different questions, interleaved. Each request is a one-token answer, so its latency is its time to first token
(prefill plus one decode step). The first request of each tool list fills the cache; the repeats are where
prefix caching (and `prefix_affinity` routing, which sends them to the replica holding that cache) pays.
The first vLLM tier's engine runs in a fresh process per setting, as a model-server replica runs it.
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

MAX_TOOLS_JSON_CHARS = 4500


def workload(tool_lists: int, repeats: int) -> list[tuple[int, int, dict[str, Any]]]:
    """(tool list, repeat, body), interleaved so repeats of one list are never back to back."""
    from cluster.evaluation.bfcl import load_cases
    from policies.tool_choice import tools_system_prompt

    # The largest tool lists that still leave room in the bundled SLM's 2048-token context (about 3.5 characters
    # of JSON per token): the long shared prefix agents send.
    sized = [case for case in load_cases("live_multiple") if len(json.dumps(case.tools)) <= MAX_TOOLS_JSON_CHARS]
    cases = sorted(sized, key=lambda case: len(json.dumps(case.tools)), reverse=True)
    chosen, questions = cases[:tool_lists], [case.messages for case in cases[tool_lists:tool_lists + repeats]]
    # The prompt a forced tool call gets on a tier whose chat template ignores `tools` (the bundled SLM's):
    # the tool list described in a system message first (policies.tool_choice), then the conversation.
    return [(index, repeat, {"messages": [{"role": "system", "content": tools_system_prompt(case.tools)},
                                          *questions[repeat]], "max_tokens": 1, "temperature": 0.0})
            for repeat in range(repeats) for index, case in enumerate(chosen)]


async def _run(config_path: str | None, caching: bool, tool_lists: int, repeats: int) -> list[dict[str, Any]]:
    from cluster.config import load_config
    from deployments.vllm_engine import VllmChatEngine

    tier = load_config(config_path).vllm_tiers[0]
    tier = tier.model_copy(update={"engine_args": {**tier.engine_args, "enable_prefix_caching": caching}})
    engine = await VllmChatEngine.start(tier)
    rows = []
    try:
        await engine.warm_up(tier.name)
        for index, repeat, body in workload(tool_lists, repeats):
            started = time.perf_counter()
            result = await engine.chat({**body, "model": tier.name})
            if result.is_error:
                raise RuntimeError(result.body)
            rows.append({"list": index, "repeat": repeat, "ttft_s": time.perf_counter() - started,
                         "prompt_tokens": result.body["usage"]["prompt_tokens"]})
    finally:
        engine.shutdown()
    return rows


def _fresh_process(args: argparse.Namespace, caching: bool) -> list[dict[str, Any]]:
    config_args = ["--config", args.config] if args.config else []
    command = [sys.executable, __file__, "--one-run", "on" if caching else "off", "--tool-lists",
               str(args.tool_lists), "--repeats", str(args.repeats)] + config_args
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="cluster config (default: embedded); its first vLLM tier is measured")
    parser.add_argument("--tool-lists", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="questions per tool list")
    parser.add_argument("--one-run", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 2 or args.tool_lists < 1:
        parser.error("need --repeats >= 2 (a first request and a repeat) and --tool-lists >= 1")
    if args.one_run:
        print(json.dumps(asyncio.run(_run(args.config, args.one_run == "on", args.tool_lists, args.repeats))))
        return
    runs = {"off": _fresh_process(args, caching=False), "on": _fresh_process(args, caching=True)}
    tokens = statistics.median(row["prompt_tokens"] for row in runs["on"])
    print(f"\ntime to first token (one-token answers), {args.tool_lists} tool lists x {args.repeats} questions, "
          f"median prompt {tokens:.0f} tokens; ms")
    print(f"  {'prefix caching':<15} {'first of a list p50':>20} {'repeats p50':>12} {'repeats p95':>12}")
    for setting, rows in runs.items():
        first = [row["ttft_s"] * 1000 for row in rows if row["repeat"] == 0]
        again = sorted(row["ttft_s"] * 1000 for row in rows if row["repeat"] > 0)
        print(f"  {setting:<15} {statistics.median(first):>20.0f} {statistics.median(again):>12.0f} "
              f"{again[int(0.95 * (len(again) - 1))]:>12.0f}")
    off = statistics.median(row["ttft_s"] for row in runs["off"] if row["repeat"] > 0)
    on = statistics.median(row["ttft_s"] for row in runs["on"] if row["repeat"] > 0)
    print(f"repeats: {off / on:.1f}x faster to first token with prefix caching")


if __name__ == "__main__":
    main()
