"""The BFCL comparison behind the README's tables, in one reproducible command.

Starts `cascade simulate-llm` (a stand-in 7B-70B fallback on loopback), starts the cluster on the embedded
default plus that simulated tier and a route `sim` (SLM -> simulated LLM), then runs `cascade bench`:

1. embedded default: slm-only, llm-only (Gemma-3-270M), cascade; guided (and, on fewer cases, unguided);
   threshold sweep;
2. simulated fallback: slm-only, llm-only (simulated), cascade on route `sim`; threshold sweep.

    .venv/bin/python bench/experiments/bfcl_compare.py --limit 50 --out bench-results

Figures that involve the simulated tier are labelled simulated in every report.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from cluster.config import load_config

BIN = Path(sys.executable).parent
SIM_PORT = 8100
SIM_TIER = "sim-llm"


def cluster_config(sim_threshold: float) -> dict:
    config = load_config().model_dump(mode="json")
    config["tiers"].append({
        "kind": "remote", "name": SIM_TIER, "base_url": f"http://127.0.0.1:{SIM_PORT}/v1",
        "remote_model": "simulated", "price": {"input_per_1m_usd": 0.60, "output_per_1m_usd": 0.80},
    })
    config["routes"].append({"name": "sim", "tiers": ["slm", SIM_TIER], "threshold": sim_threshold})
    return config


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s:g} s")


def bench(*args: str) -> None:
    subprocess.run([str(BIN / "cascade"), "bench", "run", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="simple_python")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--unguided-limit", type=int, default=20,
                        help="unguided answers run to max_tokens far more often; fewer cases keep the run short")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--sim-accuracy", type=float, default=0.9)
    parser.add_argument("--sim-threshold", type=float, default=0.5, help="route `sim` escalation threshold")
    parser.add_argument("--min-success-rate", type=float, default=0.6)
    args = parser.parse_args()

    common = ["--category", args.category, "--limit", str(args.limit), "--concurrency", str(args.concurrency)]
    simulator = subprocess.Popen([str(BIN / "cascade"), "simulate-llm", "--category", args.category,
                                  "--port", str(SIM_PORT), "--accuracy", str(args.sim_accuracy)])
    try:
        _wait_http(f"http://127.0.0.1:{SIM_PORT}/v1/models", 60)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config_file:
            yaml.safe_dump(cluster_config(args.sim_threshold), config_file)
        subprocess.run([str(BIN / "cascade"), "up", "--config", config_file.name], check=True)
        embedded, simulated = str(args.out / "embedded"), str(args.out / "simulated")
        sweep = ["--sweep-thresholds", "--min-success-rate", str(args.min_success_rate)]
        bench(*common, "--policies", "slm-only,llm-only,cascade", "--out", embedded, *sweep)
        unguided = ["--category", args.category, "--limit", str(args.unguided_limit),
                    "--concurrency", str(args.concurrency)]
        bench(*unguided, "--policies", "slm-only,llm-only,cascade", "--out", embedded, "--no-guided")
        bench(*common, "--policies", "slm-only,llm-only,cascade:sim", "--llm-tier", SIM_TIER,
              "--simulated-tier", SIM_TIER, "--out", simulated, *sweep)
    finally:
        simulator.terminate()
        subprocess.run([str(BIN / "cascade"), "down"], check=False)


if __name__ == "__main__":
    main()
