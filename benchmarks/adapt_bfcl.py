"""Distil escalated answers into a LoRA adapter of the SLM, and measure the route before and after.

    .venv/bin/python benchmarks/adapt_bfcl.py --out adapt-results

1. `cascade simulate-llm` on loopback: a stand-in LLM fallback (accuracy 0.9). Every figure involving it is
   simulated, and labelled so.
2. The cluster: the embedded default, the simulated tier, and route `sim` (SLM, then the simulated LLM, at a
   confidence threshold). The SLM gets LoRA, with its adapter folder in `--out`.
3. Before: `cascade bench run --policies cascade:sim` on BFCL cases [0, eval), recording off.
4. Traffic: recording on, the same route on disjoint cases [eval, eval + traffic). Escalated answers that pass
   verification are recorded.
5. `cascade adapt --route sim`: train on the recordings, replay the held-out ones, then promote and apply the
   adapter only if it wins.
6. After: recording off, the same cases as step 3 on the same route (now with its adapter if promoted).

It writes `--out/adapt_summary.json`, `adapt_before_after.png` and the bench reports of both runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml

from bfcl_compare import BIN, SIM_PORT, SIM_TIER, _wait_http, bench, cluster_config  # same cluster, same bench

ROUTE = "sim"
FIGURES = ("success_rate", "escalation_rate", "cps", "cost_total")


def cascade(*args: str) -> None:
    subprocess.run([str(BIN / "cascade"), *args], check=True)


def write_config(path: Path, config: dict, recording: bool) -> None:
    config["gateway"]["recording"]["enabled"] = recording
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def route_figures(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    return {key: report["policies"][f"cascade:{ROUTE}"][key] for key in FIGURES}


def plot(before: dict, after: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(10, 3.5))
    for axis, key, label in zip(axes, ("success_rate", "escalation_rate", "cps"),
                                ("success rate", "escalation rate", "cost per successful task (USD)"), strict=True):
        axis.bar(["before", "after"], [before[key] or 0, after[key] or 0], color=["grey", "tab:green"])
        axis.set_title(label)
    figure.suptitle(f"route `{ROUTE}` before and after `cascade adapt` (fallback simulated)")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="simple_python")
    parser.add_argument("--eval", type=int, default=50, help="cases measured before and after")
    parser.add_argument("--traffic", type=int, default=200, help="cases sent while recording")
    parser.add_argument("--threshold", type=float, default=0.7, help="route `sim` escalation threshold")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("adapt-results"))
    args = parser.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = cluster_config(args.threshold)
    slm = config["tiers"][0]
    slm["lora"] = {"max_loras": 2, "max_lora_rank": 8, "adapter_dir": str(out / "adapters")}
    config["gateway"]["recording"] = {"enabled": False, "path": str(out / "recordings.sqlite")}
    config_path = out / "cascade.yaml"
    sim = ["--category", args.category, "--concurrency", str(args.concurrency), "--policies", f"cascade:{ROUTE}",
           "--llm-tier", SIM_TIER, "--simulated-tier", SIM_TIER]
    simulator = subprocess.Popen([str(BIN / "cascade"), "simulate-llm", "--category", args.category,
                                  "--port", str(SIM_PORT), "--accuracy", "0.9"])
    try:
        _wait_http(f"http://127.0.0.1:{SIM_PORT}/v1/models", 60)
        write_config(config_path, config, recording=False)
        cascade("up", "--config", str(config_path))
        bench(*sim, "--limit", str(args.eval), "--out", str(out / "before"))

        write_config(config_path, config, recording=True)  # only the gateway's arguments change: a quick update
        cascade("up", "--config", str(config_path))
        bench(*sim, "--offset", str(args.eval), "--limit", str(args.traffic), "--out", str(out / "traffic"))

        cascade("adapt", "--config", str(config_path), "--route", ROUTE, "--epochs", str(args.epochs))

        adapted = yaml.safe_load(config_path.read_text())  # with the route's adapter when it was promoted
        write_config(config_path, adapted, recording=False)
        cascade("up", "--config", str(config_path))
        bench(*sim, "--limit", str(args.eval), "--out", str(out / "after"))
    finally:
        simulator.terminate()
        subprocess.run([str(BIN / "cascade"), "down"], check=False)

    before, after = route_figures(out / "before"), route_figures(out / "after")
    adapter = next(r.get("adapter") for r in adapted["routes"] if r["name"] == ROUTE)
    summary = {"route": ROUTE, "adapter": adapter, "simulated_fallback": True, "before": before, "after": after,
               "eval_cases": args.eval, "traffic_cases": args.traffic, "threshold": args.threshold}
    (out / "adapt_summary.json").write_text(json.dumps(summary, indent=2))
    plot(before, after, out / "adapt_before_after.png")
    print(f"adapter: {adapter or 'not promoted'}")
    for key in FIGURES:
        print(f"{key:<16} before {before[key]!s:<24} after {after[key]!s}")


if __name__ == "__main__":
    main()
