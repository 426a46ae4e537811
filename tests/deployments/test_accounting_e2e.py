"""The gateway's accounting, read three ways (JSON report, Prometheus, `cascade report`), against the responses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from auth_keys import ADMIN_HEADERS

CASCADE = str(Path(sys.executable).with_name("cascade"))
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def metered(cluster: str) -> list[dict]:
    """Six requests on a route no other test uses: three valid, three cut short (they escalate and fail)."""
    bodies = []
    for max_tokens in (40, 40, 40, 2, 2, 2):
        response = httpx.post(
            f"{cluster}/v1/chat/completions",
            headers={"x-cascade-route": "metered", **ADMIN_HEADERS},
            json={"model": "cascade", "messages": [{"role": "user", "content": "A city as JSON."}],
                  "max_tokens": max_tokens, "temperature": 0,
                  "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}},
            timeout=300,
        )
        assert response.status_code == 200
        bodies.append(response.json())
    return bodies


def route_figures(cluster: str, requests: int = 6) -> dict:
    """The route's figures once its six requests are in the books: a gateway replica sends its records every
    0.2 s, so a report can briefly trail the responses (bounded here at 10 s)."""
    deadline = time.monotonic() + 10.0
    while True:
        report = httpx.get(f"{cluster}/v1/cascade/report", headers=ADMIN_HEADERS, timeout=30).json()
        figures = report["routes"].get("metered", {"requests": 0})
        if figures["requests"] >= requests or time.monotonic() > deadline:
            return figures
        time.sleep(0.25)


def test_report_matches_an_independent_count_of_the_responses(cluster: str, metered: list[dict]) -> None:
    figures = route_figures(cluster)
    reports = [body["cascade"] for body in metered]
    successes = sum(report["verified"] for report in reports)
    total_cost = sum(report["cost_usd"] for report in reports)
    assert figures["requests"] == len(reports) and figures["successes"] == successes == 3
    assert figures["cps"] == pytest.approx(total_cost / successes)
    assert figures["success_rate"] == pytest.approx(successes / len(reports))
    assert figures["schema_validity_rate"] == pytest.approx(0.5)
    assert figures["escalation_rate"] == pytest.approx(sum(len(set(r["tiers_tried"])) > 1 for r in reports) / 6)
    assert figures["latency_p50_ms"] > 0 and figures["latency_p95_ms"] >= figures["latency_p50_ms"]
    # Modelled at 25 W while a replica works on the request: no more than 25 W over the attempts' own latency.
    attempt_s = sum(attempt["latency_ms"] for report in reports for attempt in report["attempts"]) / 1000
    assert figures["energy_source"] == "model"
    assert 0 < figures["energy_per_request_j"] * len(reports) <= 25.0 * attempt_s


def test_feedback_overrides_the_outcome_and_rejects_bad_input(cluster: str, metered: list[dict]) -> None:
    accepted = next(body for body in metered if body["cascade"]["verified"])
    before = route_figures(cluster)["successes"]
    ok = httpx.post(f"{cluster}/v1/cascade/feedback/{accepted['id']}", json={"success": False}, headers=ADMIN_HEADERS)
    assert ok.status_code == 200
    assert route_figures(cluster)["successes"] == before - 1
    unknown = httpx.post(f"{cluster}/v1/cascade/feedback/chatcmpl-nope", json={"success": True}, headers=ADMIN_HEADERS)
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "request_id"
    wrong_type = httpx.post(f"{cluster}/v1/cascade/feedback/{accepted['id']}", json={"success": "yes"},
                            headers=ADMIN_HEADERS)
    assert wrong_type.status_code == 400


def test_prometheus_endpoint_serves_cascade_and_genai_metrics(cluster: str, metered: list[dict]) -> None:
    text = httpx.get(f"{cluster}/metrics", timeout=30).text
    for name in ("cascade_cps_usd", "cascade_success_rate", "gen_ai_client_token_usage",
                 "gen_ai_client_operation_duration_seconds", "cascade_energy_per_request_joules"):
        assert name in text, name


def test_cascade_report_cli_prints_table_json_and_plot(cluster: str, metered: list[dict], tmp_path: Path) -> None:
    as_json = subprocess.run([CASCADE, "report", "--json"], check=False, capture_output=True, text=True, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    for key in ("requests", "successes", "cps", "success_rate", "schema_validity_rate", "executable_call_rate",
                "escalation_rate", "latency_p50_ms", "latency_p95_ms", "energy_per_request_j", "energy_source"):
        assert key in report["overall"] and key in report["routes"]["metered"]
    plot = tmp_path / "report.png"
    table = subprocess.run([CASCADE, "report", "--plot", str(plot)], check=False, capture_output=True, text=True,
                           timeout=60)
    assert "route metered" in table.stdout and plot.stat().st_size > 10_000


def test_report_cli_says_clearly_when_no_gateway_answers() -> None:
    result = subprocess.run([CASCADE, "report", "--url", "http://127.0.0.1:9"], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 2 and "cannot reach the gateway" in result.stderr
