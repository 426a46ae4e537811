"""Per-policy figures from the recorded requests: report.json, report.md and the plots.

CPS (cost per successful task) is all spend, failed and escalated attempts included, over successful tasks,
as in `policies.cost`. Energy is never invented here: it is the gateway's own per-route figure
(`GET /v1/cascade/report`, labelled with the gateway's source, e.g. `model` for its watts x engine-time
estimate), read right after the policy ran, so it covers the route's sliding window, other clients' traffic on
that route included; `energy_origin` says so. Where the gateway had no figure, energy is null. Figures that
involved a simulated tier (bench.simulated_llm) carry `simulated: true` and are marked in report.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.cost import cost_per_successful_task

__all__ = ["REPORT_KEYS", "load_records", "save_gateway_figures", "summarise", "write_report"]

REPORT_KEYS = ("n", "success_rate", "cps", "cost_total", "schema_validity_rate", "executable_call_rate",
               "escalation_rate", "latency_p50_ms", "latency_p95_ms", "energy_per_request_j", "energy_source",
               "tokens_in", "tokens_out")
GATEWAY_FILE = "gateway_figures.json"


def load_records(out_dir: Path) -> list[dict[str, Any]]:
    """Every complete record, the latest per (policy, case); a line cut short by an interrupt is skipped."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    path = Path(out_dir) / "records.jsonl"
    if not path.exists():
        return []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        latest[(record["policy"], record["case_id"])] = record
    return list(latest.values())


def save_gateway_figures(out_dir: Path, label: str, route: str, figures: dict[str, Any] | None) -> None:
    path = Path(out_dir) / GATEWAY_FILE
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[label] = {"route": route, "figures": figures}
    path.write_text(json.dumps(saved, indent=2))


def _rate(flags: Sequence[bool | None]) -> float | None:
    known = [flag for flag in flags if flag is not None]
    return sum(map(bool, known)) / len(known) if known else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarise(records: Sequence[dict[str, Any]], gateway: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figures of one policy's records (non-empty)."""
    n = len(records)
    successes = sum(r["success"] for r in records)
    cost = math.fsum(r.get("cost_usd") or 0.0 for r in records)
    latencies = [r["latency_ms"] for r in records]
    figures = (gateway or {}).get("figures") or {}
    energy = figures.get("energy_per_request_j")
    errors: dict[str, int] = {}
    for r in records:
        if r.get("error"):
            errors[str(r["status"] or r["error"])] = errors.get(str(r["status"] or r["error"]), 0) + 1
    return {
        "n": n,
        "success_rate": successes / n,
        "cps": _finite(cost_per_successful_task(cost, successes)),
        "cost_total": cost,
        "schema_validity_rate": _rate([r["schema_valid"] for r in records]),
        "executable_call_rate": _rate([r["executable"] for r in records]),
        "escalation_rate": _rate([r.get("escalated") for r in records if not r.get("error")]),
        "verified_rate": _rate([r.get("verified") for r in records if not r.get("error")]),
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "latency_p95_ms": float(np.percentile(latencies, 95)),
        "energy_per_request_j": energy,
        "energy_source": figures.get("energy_source") if energy is not None else None,
        "energy_origin": (f"gateway report, route {gateway['route']!r} (sliding window, all traffic on that route)"
                          if energy is not None else "not reported by the gateway"),
        "tokens_in": sum(r.get("tokens_in", 0) for r in records),
        "tokens_out": sum(r.get("tokens_out", 0) for r in records),
        "errors": errors,
        "simulated": any(r.get("simulated") for r in records),
        "guided": records[0]["guided"],
        "categories": sorted({r["category"] for r in records}),
    }


def _markdown(report: dict[str, Any]) -> str:
    columns = [("n", "{:d}"), ("success_rate", "{:.1%}"), ("cps", "{:.3g}"), ("cost_total", "{:.3g}"),
               ("schema_validity_rate", "{:.1%}"), ("executable_call_rate", "{:.1%}"), ("escalation_rate", "{:.1%}"),
               ("latency_p50_ms", "{:.0f}"), ("latency_p95_ms", "{:.0f}"), ("energy_per_request_j", "{:.2f}"),
               ("energy_source", "{}"), ("tokens_in", "{:d}"), ("tokens_out", "{:d}")]
    lines = ["# slm-cascade BFCL benchmark", "", "| policy | " + " | ".join(k for k, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for label, figures in report["policies"].items():
        cells = ["-" if figures[k] is None else fmt.format(figures[k]) for k, fmt in columns]
        name = f"{label} (simulated)" if figures["simulated"] else label
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", ("CPS: all spend (failed and escalated attempts included) over successful tasks, USD. Energy: "
              "the gateway's per-route figure and its source label (`model` = modelled, watts x engine time; "
              "never measured unless labelled `nvml`/`rapl`); see `energy_origin` in report.json."),
              "Rows marked (simulated) involved a simulated LLM tier: their accuracy, latency and cost are simulated."]
    sweep = report.get("threshold_sweep")
    if sweep and "best" in sweep:
        best = sweep["best"]
        lines += ["", (f"Threshold sweep ({sweep['slm']} vs {sweep['llm']}, {sweep['n']} cases): calibrated threshold "
                  f"{best['threshold']:.3f}, success {best['success_rate']:.1%}, CPS {best['cps_usd']}, "
                  f"accepted on the SLM {best['accepted_fraction']:.1%}.")]
    elif sweep:
        lines += ["", f"Threshold sweep: {sweep['error']}"]
    routing = report.get("routing")
    if routing:
        lines += ["", (f"Routing ({routing['n']} cases answered by both slm-only and llm-only; the SLM's served "
                  f"confidence): AUROC {_maybe(routing['auroc'])}, SLM {routing['slm_success_rate']:.1%}, fallback "
                  f"{routing['fallback_success_rate']:.1%}, oracle cascade {routing['oracle_success_rate']:.1%}, "
                  f"APGR {_maybe(routing['apgr'])}, CPS at {routing['target_success_rate']:.1%} success / oracle's "
                  f"{_maybe(routing['cps_ratio_to_oracle'])}.")]
    lines += ["", *[f"![{p}]({p})" for p in report["plots"]]]
    return "\n".join(lines) + "\n"


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def routing_of(by_policy: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """Routing quality of the SLM's confidence (`bench.routing_quality`) where slm-only and llm-only ran on the
    same cases; the curve is left out of the report (the plots show it)."""
    from bench.routing_quality import routing_quality
    from bench.sweep import labelled_outcomes

    slm, llm = by_policy.get("slm-only"), by_policy.get("llm-only")
    outcomes = labelled_outcomes([r for r in slm or [] if not r.get("error")], llm or [])
    if not outcomes:
        return None
    return {k: v for k, v in routing_quality(outcomes).items() if k != "curve"}


def write_report(out_dir: str | Path, sweep_min_success_rate: float | None = None) -> dict[str, Any]:
    """Build the report from the records in `out_dir` and write report.json, report.md and PNG plots."""
    from bench.plots import write_plots
    from bench.sweep import sweep_thresholds

    out = Path(out_dir)
    records = load_records(out)
    gateway_path = out / GATEWAY_FILE
    gateway = json.loads(gateway_path.read_text()) if gateway_path.exists() else {}
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_policy.setdefault(record["policy"], []).append(record)
    report: dict[str, Any] = {"policies": {label: summarise(rows, gateway.get(label))
                                           for label, rows in by_policy.items()}}
    routing = routing_of(by_policy)
    if routing is not None:
        report["routing"] = routing
    if sweep_min_success_rate is not None:
        report["threshold_sweep"] = sweep_thresholds(by_policy, sweep_min_success_rate, out)
    report["plots"] = write_plots(report, by_policy, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    return report
