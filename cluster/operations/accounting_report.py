"""`cascade report`: the gateway's accounting as a terminal table, JSON, or a PNG of cost and latency.

The figures come from `GET /v1/cascade/report`: the cluster's books, built from every gateway replica's spans.
Energy is labelled with its source on every line: `model` figures are estimates (watts x engine time), `nvml` and
`rapl` are meter readings, `mixed` means both went into the figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from cluster.operations.client_auth import API_KEY_ENV, auth_headers

COLUMNS = (
    ("requests", "requests", "{:d}"),
    ("successes", "ok", "{:d}"),
    ("success_rate", "success", "{:.1%}"),
    ("cps", "CPS $", "{:.3g}"),
    ("schema_validity_rate", "schema ok", "{:.1%}"),
    ("executable_call_rate", "exec ok", "{:.1%}"),
    ("escalation_rate", "escalated", "{:.1%}"),
    ("latency_p50_ms", "p50 ms", "{:.0f}"),
    ("latency_p95_ms", "p95 ms", "{:.0f}"),
    ("energy_per_request_j", "J/req", "{:.2f}"),
    ("energy_source", "energy src", "{}"),
)


class ReportError(RuntimeError):
    """The gateway could not be reached or did not answer with a report."""


def fetch_report(base_url: str) -> dict[str, Any]:
    try:
        response = httpx.get(f"{base_url}/v1/cascade/report", headers=auth_headers(), timeout=10, follow_redirects=True)
    except httpx.HTTPError as error:
        raise ReportError(f"cannot reach the gateway at {base_url}: {error}; is the cluster up?") from None
    if response.is_error:
        hint = f" (set {API_KEY_ENV})" if response.status_code == 401 else ""
        raise ReportError(f"the gateway at {base_url} answered {response.status_code}{hint}")
    return response.json()


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    return fmt.format(value)


def format_table(report: dict[str, Any]) -> str:
    """Overall first, then one line per route and per tier."""
    rows = [("overall", report["overall"])]
    rows += [(f"route {name}", figures) for name, figures in sorted(report["routes"].items())]
    rows += [(f"tier {name}", figures) for name, figures in sorted(report["tiers"].items())]
    header = ["", *(title for _, title, _ in COLUMNS)]
    lines = [[label, *(_cell(figures.get(key), fmt) for key, _, fmt in COLUMNS)] for label, figures in rows]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def render(row: list[str]) -> str:
        cells = (cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths)))
        return "  ".join(cells)

    return "\n".join([render(header), *map(render, lines)])


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Bars of CPS and p50/p95 latency per route and tier, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {**{f"route {k}": v for k, v in report["routes"].items()},
              **{f"tier {k}": v for k, v in report["tiers"].items()}}
    labels = list(groups)
    figure, (cost_axis, latency_axis) = plt.subplots(1, 2, figsize=(11, 4))
    cost_axis.bar(labels, [groups[k]["cps"] or 0 for k in labels], color="#4c72b0")
    cost_axis.set_title("cost per successful task (USD)")
    positions = range(len(labels))
    latency_axis.bar([p - 0.2 for p in positions], [groups[k]["latency_p50_ms"] or 0 for k in labels], 0.4,
                     label="p50")
    latency_axis.bar([p + 0.2 for p in positions], [groups[k]["latency_p95_ms"] or 0 for k in labels], 0.4,
                     label="p95")
    latency_axis.set_xticks(list(positions), labels)
    latency_axis.set_title("latency (ms)")
    latency_axis.legend()
    for axis in (cost_axis, latency_axis):
        axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
