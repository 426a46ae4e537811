"""Adaptation over several rounds of traffic: does the cascade get cheaper as it serves?

    .venv/bin/python bench/experiments/adapt_rounds.py --out adapt-rounds

1. `cascade simulate-llm` on loopback: a stand-in LLM fallback that answers from BFCL's ground truth at 90%
   accuracy. Every figure that involves it is simulated, and labelled so.
2. The cluster: the embedded default, the simulated tier, route `sim` (SLM, then the simulated LLM, at a
   confidence threshold) and route `general` (straight to the simulated LLM), recording on. The SLM gets LoRA,
   with its adapter folder in `--out`; route `sim` replays `general`'s recorded requests as its regression set.
3. Regression set: `general` serves BFCL `simple_python` cases [eval, eval + regression), recorded.
4. Round 0: route `sim` is measured on cases [0, eval), sent with `store: false` so no measured case is ever
   trained on.
5. Rounds 1..R: `sim` serves the next `traffic` cases (its escalations are recorded), `cascade adapt run
   --route sim` runs a round on the cluster (train on everything recorded so far, replay the held-out split and
   the regression set, promote only if better, cheaper and not forgetting), then the same cases [0, eval) are
   measured again.

Writes `--out/rounds.json` (per round: the measured success, escalation share, CPS and cost, and the round's
ledger entry) and `--out/adapt_rounds.png`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from bench.experiments.bfcl_compare import (  # same cluster, same bench
    BIN,
    SIM_PORT,
    SIM_TIER,
    _wait_http,
    bench,
    cluster_config,
)

ROUTE = "sim"
REGRESSION_ROUTE = "general"
FIGURES = ("success_rate", "escalation_rate", "cps", "cost_total", "n")


def cascade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cascade"), *args], check=True, capture_output=True, text=True)


def route_figures(out: Path, route: str = ROUTE) -> dict[str, Any]:
    report = json.loads((out / "report.json").read_text())
    return {key: report["policies"][f"cascade:{route}"][key] for key in FIGURES}


def config_for(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    config = cluster_config(args.threshold)
    config["tiers"][0]["lora"] = {"max_loras": 2, "max_lora_rank": 8, "adapter_dir": str(out / "adapters")}
    config["gateway"]["recording"] = {"enabled": True, "path": str(out / "recordings.sqlite")}
    config["routes"].append({"name": REGRESSION_ROUTE, "tiers": ["slm", SIM_TIER],
                             "difficulty": {"predictor": "constant", "hard_threshold": 0.0}})
    sim = next(route for route in config["routes"] if route["name"] == ROUTE)
    sim["adaptation"] = {"regression_routes": [REGRESSION_ROUTE], "regression_margin": args.regression_margin,
                         "regression_cases": args.regression, "train_resources": {"num_cpus": 0.05}}
    return config


def plot(rounds: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = [entry["round"] for entry in rounds]
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.5))
    for axis, key, label in zip(axes, ("success_rate", "escalation_rate", "cps"),
                                ("success rate", "escalated share", "cost per successful task (USD)"), strict=True):
        values = [entry["measured"][key] or 0 for entry in rounds]
        axis.plot(index, values, marker="o", color="tab:green")
        for x, entry in zip(index, rounds, strict=True):
            if entry.get("decision") == "promoted":
                axis.axvline(x, color="grey", linestyle=":", linewidth=1)
        axis.set_title(label)
        axis.set_xlabel("round (dotted: an adapter was promoted)")
        axis.set_xticks(index)
    figure.suptitle(f"route `{ROUTE}` over adaptation rounds (fallback simulated)")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--traffic", type=int, default=60, help="cases route `sim` serves before each round")
    parser.add_argument("--eval", type=int, default=40, help="cases measured after each round")
    parser.add_argument("--regression", type=int, default=24, help="cases `general` serves for the regression set")
    parser.add_argument("--regression-margin", type=float, default=0.1)
    parser.add_argument("--threshold", type=float, default=0.7, help="route `sim` escalation threshold")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("adapt-rounds"))
    args = parser.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "cascade.yaml"
    config_path.write_text(yaml.safe_dump(config_for(args, out), sort_keys=False))
    common = ["--category", "simple_python", "--concurrency", str(args.concurrency), "--llm-tier", SIM_TIER,
              "--simulated-tier", SIM_TIER]
    measured = ["--policies", f"cascade:{ROUTE}", "--limit", str(args.eval), "--no-store", *common]
    simulator = subprocess.Popen([str(BIN / "cascade"), "simulate-llm", "--category", "simple_python",
                                  "--port", str(SIM_PORT), "--accuracy", "0.9"])
    rounds: list[dict[str, Any]] = []
    try:
        _wait_http(f"http://127.0.0.1:{SIM_PORT}/v1/models", 60)
        cascade("up", "--config", str(config_path))
        bench("--policies", f"cascade:{REGRESSION_ROUTE}", "--offset", str(args.eval), "--limit",
              str(args.regression), *common, "--out", str(out / "regression"))
        bench(*measured, "--out", str(out / "round0"))
        rounds.append({"round": 0, "measured": route_figures(out / "round0")})
        offset = args.eval + args.regression
        for number in range(1, args.rounds + 1):
            bench("--policies", f"cascade:{ROUTE}", "--offset", str(offset), "--limit", str(args.traffic), *common,
                  "--out", str(out / f"traffic{number}"))
            offset += args.traffic
            subprocess.run([str(BIN / "cascade"), "adapt", "run", "--config", str(config_path), "--route", ROUTE,
                            "--epochs", str(args.epochs)], check=False)  # a failed round is a result too
            ledger = json.loads(cascade("adapt", "status", "--config", str(config_path), "--route", ROUTE,
                                        "--json").stdout)
            bench(*measured, "--out", str(out / f"round{number}"))
            latest = ledger["rounds"][0]
            rounds.append({"round": number, "measured": route_figures(out / f"round{number}"),
                           "decision": latest["state"], "reason": latest["reason"], "adapter": latest["adapter"],
                           "facts": latest["facts"], "traffic": route_figures(out / f"traffic{number}")})
            (out / "rounds.json").write_text(json.dumps({"simulated_fallback": True, "rounds": rounds}, indent=2))
    finally:
        simulator.terminate()
        subprocess.run([str(BIN / "cascade"), "down"], check=False)

    summary = {"route": ROUTE, "simulated_fallback": True, "eval_cases": args.eval, "traffic_per_round":
               args.traffic, "regression_cases": args.regression, "threshold": args.threshold, "rounds": rounds}
    (out / "rounds.json").write_text(json.dumps(summary, indent=2))
    plot(rounds, out / "adapt_rounds.png")
    print(f"{'round':<6} {'success':>8} {'escalated':>10} {'CPS $':>10}  decision")
    for entry in rounds:
        figures = entry["measured"]
        cps = "-" if figures["cps"] is None else f"{figures['cps']:.3g}"
        print(f"{entry['round']:<6} {figures['success_rate']:>8.0%} {figures['escalation_rate']:>10.0%} {cps:>10}  "
              f"{entry.get('decision', '-')}: {entry.get('reason', '')[:90]}")


if __name__ == "__main__":
    main()
