"""The report's PNGs: success vs cost per policy, latency distribution, CPS vs threshold (from the sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: dict[str, Any], by_policy: dict[str, list[dict[str, Any]]], out: Path) -> list[str]:
    """Writes the plots that the data allows; returns their file names (relative to `out`)."""
    if not by_policy:
        return []
    plt = _pyplot()
    names = []
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, figures in report["policies"].items():
        axis.scatter(figures["cost_total"] / figures["n"], figures["success_rate"])
        axis.annotate(label + (" (sim)" if figures["simulated"] else ""),
                      (figures["cost_total"] / figures["n"], figures["success_rate"]))
    axis.set(xlabel="mean cost per request (USD)", ylabel="success rate", title="success vs cost")
    figure.tight_layout()
    figure.savefig(out / "success_vs_cost.png")
    names.append("success_vs_cost.png")

    figure, axis = plt.subplots(figsize=(6, 4))
    labels = list(by_policy)
    axis.boxplot([[r["latency_ms"] for r in by_policy[label]] for label in labels], showfliers=True)
    axis.set_xticks(range(1, len(labels) + 1), labels, rotation=20)
    axis.set(ylabel="latency (ms)", title="latency per request")
    figure.tight_layout()
    figure.savefig(out / "latency.png")
    names.append("latency.png")

    sweep = report.get("threshold_sweep") or {}
    if sweep.get("curve"):
        curve = sweep["curve"]
        figure, axis = plt.subplots(figsize=(6, 4))
        cps = [float("nan") if p["cps_usd"] is None else p["cps_usd"] for p in curve]  # nothing succeeded: no point
        axis.plot([p["threshold"] for p in curve], cps, marker=".", label="CPS")
        rate_axis = axis.twinx()
        rate_axis.plot([p["threshold"] for p in curve], [p["success_rate"] for p in curve], color="tab:green",
                       marker=".", label="success rate")
        if "best" in sweep:
            axis.axvline(sweep["best"]["threshold"], color="tab:red", linestyle="--", label="calibrated")
        axis.set(xlabel="acceptance threshold", ylabel="CPS (USD)", title="CPS vs threshold")
        rate_axis.set_ylabel("success rate")
        figure.legend(loc="lower right")
        figure.tight_layout()
        figure.savefig(out / "cps_vs_threshold.png")
        names.append("cps_vs_threshold.png")
    plt.close("all")
    return names


def plot_fault_timeline(run: dict[str, Any], path: Path) -> Path:
    """Each request of a fault run as a dot (start time, latency), coloured by outcome and answering tier."""
    plt = _pyplot()
    summary, records = run["summary"], run["records"]
    figure, axis = plt.subplots(figsize=(8, 4))
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        label = f"ok ({record['final_tier']})" if record["outcome"] == "ok" else record["outcome"]
        groups.setdefault(label, []).append(record)
    for label, members in sorted(groups.items()):
        axis.scatter([r["started_s"] for r in members], [r["latency_s"] for r in members], s=12, label=label)
    fault_at = run.get("fault_at_s")
    marks = [("fault", fault_at), ("replica replaced", summary["replica_replaced_after_s"]),
             (f"{summary['tier']} serving again", summary["tier_serving_again_after_s"])]
    for (label, offset), style in zip(marks, ("-", "--", ":"), strict=True):
        if fault_at is not None and offset is not None:
            axis.axvline(fault_at + (offset if label != "fault" else 0), color="black", linestyle=style, label=label)
    axis.set(xlabel="request start (s)", ylabel="latency (s)",
             title=f"{summary['fault']} under load: {summary['sent']} sent, {summary['lost']} lost")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_throughput(run: dict[str, Any], path: Path) -> Path:
    """Output tokens/s and time to first token against concurrency, gateway and direct paths side by side."""
    plt = _pyplot()
    figure, (rate_axis, ttft_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style, color in (("gateway", "o-", "tab:blue"), ("direct", "s--", "tab:orange")):
        levels = sorted((r for r in run["levels"] if r["path"] == name), key=lambda r: r["concurrency"])
        concurrency = [r["concurrency"] for r in levels]
        rate_axis.plot(concurrency, [r["output_tokens_per_s"] for r in levels], style, color=color, label=name)
        ttft_axis.plot(concurrency, [r["ttft_p50_ms"] for r in levels], style, color=color, label=f"{name} p50")
        ttft_axis.plot(concurrency, [r["ttft_p95_ms"] for r in levels], style, color=color, alpha=0.4,
                       label=f"{name} p95")
    for axis in (rate_axis, ttft_axis):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted({r["concurrency"] for r in run["levels"]}), [str(c) for c in sorted(
            {r["concurrency"] for r in run["levels"]})])
        axis.legend(fontsize="small")
    rate_axis.set(xlabel="concurrent streams", ylabel="output tokens/s",
                  title=f"tier {run['tier']}: {run['max_tokens']} tokens per answer")
    ttft_axis.set(xlabel="concurrent streams", ylabel="time to first token (ms)", yscale="log",
                  title="time to first token")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_autoscale_timeline(run: dict[str, Any], path: Path) -> Path:
    """Requests in flight, replicas and pool nodes, and p95 latency over one autoscaling run, phases marked."""
    plt = _pyplot()
    summary, samples = run["summary"], run["samples"]
    times = [sample["t_s"] for sample in samples]
    figure, (load_axis, scale_axis, latency_axis) = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    load_axis.step(times, [sample["in_flight"] for sample in samples], where="post", color="tab:gray")
    load_axis.set(ylabel="requests in flight", title=f"{summary['deployment']} on pool {summary['pool']}: "
                  f"{summary['sent']} requests, {summary['lost']} lost")
    scale_axis.step(times, [sample["replicas"].get(summary["deployment"], 0) for sample in samples], where="post",
                    label=f"{summary['deployment']} replicas RUNNING")
    scale_axis.step(times, [sample["nodes"].get(summary["pool"], 0) for sample in samples], where="post",
                    linestyle="--", label=f"{summary['pool']} nodes alive")
    highest_count = max(summary["targets"]["max_replicas"], summary["targets"]["max_nodes"])
    scale_axis.set(ylabel="count", ylim=(0, highest_count + 0.5))
    scale_axis.yaxis.get_major_locator().set_params(integer=True)
    scale_axis.legend(loc="lower right", fontsize="small")
    latency_axis.plot(times, [float("nan") if s["p95_ms"] is None else s["p95_ms"] / 1000 for s in samples],
                      marker=".", color="tab:purple")
    latency_axis.set(xlabel="seconds since the run started", ylabel="p95 latency (s, last 20 s)")
    for event, moment in summary["events"].items():
        for axis in (load_axis, scale_axis, latency_axis):
            axis.axvline(moment, color="black", linewidth=0.6, linestyle=":")
        load_axis.annotate(event.replace("_", " "), (moment, 0), rotation=90, fontsize="x-small",
                           xytext=(2, 2), textcoords="offset points", va="bottom")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write_routing_plots(pooled: dict[str, Any], answers: list[Any], model: Any, fits: dict[str, Any],
                        out: Path) -> list[str]:
    """Risk-coverage of each confidence, and CPS vs success of the cascade against a random router and the
    oracle (simulated fallback), for `cascade bench confidence`."""
    from cluster.operations.confidence_fit import score_answers

    plt = _pyplot()
    labels = [a.success for a in answers]
    figure, axis = plt.subplots(figsize=(6, 4))
    curves = {"served before": [a.confidence or 0.0 for a in answers],
              **{name: score_answers(fit.policy, answers) for name, fit in fits.items()}}
    for name, confidence in curves.items():
        ranked = [right for _, right in sorted(zip(confidence, labels), key=lambda pair: -pair[0])]
        errors, risk = 0, []
        for k, right in enumerate(ranked, start=1):
            errors += not right
            risk.append(errors / k)
        axis.plot([k / len(ranked) for k in range(1, len(ranked) + 1)], risk, label=name)
    axis.set(xlabel="coverage (share of answers kept on the SLM)", ylabel="error rate of kept answers",
             title="risk-coverage on evaluation categories")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "risk_coverage.png")
    plt.close(figure)

    quality = pooled["simulated"]
    figure, axis = plt.subplots(figsize=(6, 4))
    curve = [p for p in quality["curve"] if p["cps_usd"] is not None]
    axis.plot([p["success_rate"] for p in curve], [p["cps_usd"] for p in curve], label="cascade (fitted confidence)")
    first, last = curve[0], quality["curve"][-1]
    # A random router escalating a share x: success and cost per request both move linearly from x=0 to x=1.
    cost_0, cost_1 = first["cps_usd"] * first["success_rate"], last["cps_usd"] * last["success_rate"]
    shares = [i / 50 for i in range(51)]
    success = [first["success_rate"] + x * (last["success_rate"] - first["success_rate"]) for x in shares]
    axis.plot(success, [(cost_0 + x * (cost_1 - cost_0)) / s for x, s in zip(shares, success)], linestyle="--",
              label="random router (expected)")
    axis.scatter([quality["oracle_success_rate"]], [quality["oracle_cps"]], marker="*", s=120, label="oracle",
                 zorder=3)
    axis.set(xlabel="success rate", ylabel="CPS (USD)", yscale="log",
             title=f"CPS vs success, simulated fallback (success {quality['fallback_success_rate']:.2f})")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "cps_vs_success.png")
    plt.close(figure)
    return ["risk_coverage.png", "cps_vs_success.png"]
