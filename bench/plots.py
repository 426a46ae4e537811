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
