"""Accounting snapshot against hand-computed figures from a synthetic span set."""

import json
import math
import threading

import pytest
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from cluster.telemetry import semconv as sc
from cluster.telemetry.aggregate import SNAPSHOT_KEYS
from cluster.telemetry.service import GatewayTelemetry
from cluster.telemetry.tracing import TracingSettings
from cluster.telemetry.window import RequestWindow, UnknownRequestError

SUCCESS = {sc.CASCADE_OUTCOME: "success"}
FAILURE = {sc.CASCADE_OUTCOME: "failure"}


def _cost(usd, tin=0, tout=0, **extra):
    return {sc.CASCADE_COST_USD: usd, sc.GEN_AI_USAGE_INPUT_TOKENS: tin, sc.GEN_AI_USAGE_OUTPUT_TOKENS: tout, **extra}


def _energy(joules, source):
    return {sc.CASCADE_ENERGY_J: joules, sc.CASCADE_ENERGY_SOURCE: source}


@pytest.fixture
def four_requests(harness):
    """r1 chat: small ok. r2 chat: small (schema fail) -> large ok. r3 tools: small -> large, fails,
    root says schema invalid. r4 tools: small ok but tool call not executable."""
    harness.request(
        "r1",
        "chat",
        [("small", 200, {**_cost(0.001, 100, 50), sc.CASCADE_SCHEMA_VALID: True, **_energy(10.0, "nvml")})],
        duration_ms=250,
        attrs=SUCCESS,
    )
    harness.request(
        "r2",
        "chat",
        [
            (
                "small",
                400,
                {
                    **_cost(0.001, 120, 60),
                    sc.CASCADE_SCHEMA_VALID: False,
                    **_energy(12.0, "nvml"),
                    sc.CASCADE_ESCALATION_REASON: "schema_invalid",
                },
            ),
            ("large", 800, {**_cost(0.010, 120, 80), sc.CASCADE_SCHEMA_VALID: True, **_energy(40.0, "nvml")}),
        ],
        duration_ms=1300,
        attrs=SUCCESS,
    )
    harness.request(
        "r3",
        "tools",
        [
            ("small", 300, {**_cost(0.002, 200, 30), sc.CASCADE_TOOL_CALL_EXECUTABLE: False}),
            ("large", 900, {**_cost(0.020, 200, 90), sc.CASCADE_TOOL_CALL_EXECUTABLE: True, **_energy(50.0, "model")}),
        ],
        duration_ms=1250,
        attrs={**FAILURE, sc.CASCADE_SCHEMA_VALID: False},
    )
    harness.request(
        "r4",
        "tools",
        [("small", 100, {**_cost(0.002, 90, 20), sc.CASCADE_TOOL_CALL_EXECUTABLE: False})],
        duration_ms=150,
        attrs=SUCCESS,
    )
    return harness


def test_snapshot_has_exactly_the_agreed_keys(four_requests):
    snap = four_requests.window.snapshot()
    assert set(snap) == {"overall", "routes", "tiers"}
    groups = [snap["overall"], *snap["routes"].values(), *snap["tiers"].values()]
    assert all(tuple(group) == SNAPSHOT_KEYS for group in groups)
    assert set(SNAPSHOT_KEYS) == {
        "requests",
        "successes",
        "cps",
        "success_rate",
        "schema_validity_rate",
        "executable_call_rate",
        "escalation_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "tokens_in",
        "tokens_out",
        "energy_per_request_j",
        "energy_source",
    }


def test_overall_matches_hand_computation(four_requests):
    overall = four_requests.window.snapshot()["overall"]
    assert overall["requests"] == 4
    assert overall["successes"] == 3
    assert overall["cps"] == pytest.approx(0.036 / 3)  # every attempt's cost, failed r3 included
    assert overall["success_rate"] == 0.75
    assert overall["schema_validity_rate"] == pytest.approx(2 / 3)  # r1, r2 final valid; r3 root invalid
    assert overall["executable_call_rate"] == 0.5  # r3 final executable, r4 not; r1/r2 had no tool call
    assert overall["escalation_rate"] == 0.5
    # latencies 150, 250, 1250, 1300 with linear interpolation
    assert overall["latency_p50_ms"] == pytest.approx(750.0)
    assert overall["latency_p95_ms"] == pytest.approx(1250 + 0.85 * 50)
    assert overall["latency_p99_ms"] == pytest.approx(1250 + 0.97 * 50)
    assert overall["tokens_in"] == 100 + 240 + 400 + 90
    assert overall["tokens_out"] == 50 + 140 + 120 + 20
    assert overall["energy_per_request_j"] == pytest.approx((10 + 52 + 50) / 3)  # r4 has no figure
    assert overall["energy_source"] == sc.MIXED_ENERGY_SOURCE  # nvml + model never pass as measured


def test_routes_and_tiers_match_hand_computation(four_requests):
    snap = four_requests.window.snapshot()
    chat, tools = snap["routes"]["chat"], snap["routes"]["tools"]
    assert (chat["requests"], chat["successes"], chat["cps"]) == (2, 2, pytest.approx(0.012 / 2))
    assert (chat["energy_per_request_j"], chat["energy_source"]) == (31.0, "nvml")
    assert (tools["requests"], tools["successes"], tools["cps"]) == (2, 1, pytest.approx(0.024))
    assert (tools["energy_per_request_j"], tools["energy_source"]) == (50.0, "model")

    small, large = snap["tiers"]["small"], snap["tiers"]["large"]
    assert (small["requests"], small["successes"]) == (4, 2)  # r2/r3 small attempts escalated
    assert small["cps"] == pytest.approx(0.006 / 2)
    assert small["escalation_rate"] == 0.5
    assert small["schema_validity_rate"] == 0.5
    assert small["executable_call_rate"] == 0.0
    assert small["latency_p50_ms"] == pytest.approx(250.0)  # 100, 200, 300, 400
    assert (large["requests"], large["successes"], large["cps"]) == (2, 1, pytest.approx(0.030))
    assert large["escalation_rate"] == 0.0
    assert large["energy_source"] == sc.MIXED_ENERGY_SOURCE


def test_late_feedback_updates_request_and_final_attempt(four_requests):
    four_requests.window.record_feedback("r3", True)
    snap = four_requests.window.snapshot()
    assert snap["overall"]["successes"] == 4
    assert snap["overall"]["cps"] == pytest.approx(0.036 / 4)
    assert snap["tiers"]["large"]["successes"] == 2
    assert snap["tiers"]["small"]["successes"] == 2  # escalated attempts stay unsuccessful


def test_feedback_for_unknown_request_raises(harness):
    with pytest.raises(UnknownRequestError):
        harness.window.record_feedback("never-seen", True)


def test_time_window_evicts_old_requests_and_their_feedback(make_harness, clock):
    h = make_harness(window_s=10.0, max_requests=None)
    h.request("old", "chat", [("small", 10, _cost(1.0))], duration_ms=10, attrs=SUCCESS)
    clock.now = 5.0
    h.request("new", "chat", [("small", 10, _cost(3.0))], duration_ms=10, attrs=SUCCESS)
    assert h.window.snapshot()["overall"]["requests"] == 2
    clock.now = 12.0
    overall = h.window.snapshot()["overall"]
    assert (overall["requests"], overall["cps"]) == (1, 3.0)
    with pytest.raises(UnknownRequestError):
        h.window.record_feedback("old", False)
    h.window.record_feedback("new", False)
    clock.now = 15.01
    assert h.window.snapshot()["overall"]["requests"] == 0


def test_count_window_keeps_the_newest(make_harness):
    h = make_harness(max_requests=2)
    for i in range(5):
        h.request(f"r{i}", "chat", [("small", 10, _cost(float(i)))], duration_ms=10, attrs=SUCCESS)
    overall = h.window.snapshot()["overall"]
    assert (overall["requests"], overall["cps"]) == (2, pytest.approx((3 + 4) / 2))


def test_cps_rule_for_no_successes(make_harness):
    spent = make_harness()
    spent.request("a", "chat", [("small", 10, _cost(0.5))], duration_ms=10, attrs=FAILURE)
    assert spent.window.snapshot()["overall"]["cps"] == math.inf
    # The one CPS rule (policies.cost): a free tier that never succeeds is not cheap either.
    free = make_harness()
    free.request("a", "chat", [("small", 10, {})], duration_ms=10, attrs=FAILURE)
    assert free.window.snapshot()["overall"]["cps"] == math.inf


def test_empty_window_reports_none_not_zero(harness):
    overall = harness.window.snapshot()["overall"]
    assert overall["requests"] == 0
    assert all(overall[k] is None for k in ("cps", "success_rate", "latency_p50_ms", "energy_source"))


def test_unlabelled_energy_counts_as_modelled(harness):
    harness.request("a", "chat", [("small", 10, {sc.CASCADE_ENERGY_J: 3.0})], duration_ms=10, attrs=SUCCESS)
    assert harness.window.snapshot()["overall"]["energy_source"] == "model"


def test_outcome_falls_back_to_span_status(harness):
    from opentelemetry.trace import StatusCode

    root = harness.tracer.start_span(sc.SPAN_REQUEST, attributes={sc.CASCADE_REQUEST_ID: "x"})
    root.set_status(StatusCode.ERROR)
    root.end()
    assert harness.window.snapshot()["overall"]["successes"] == 0


def test_requests_sharing_a_client_trace_keep_their_own_attempts(harness):
    client = SpanContext(trace_id=0xABC, span_id=0x1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = set_span_in_context(NonRecordingSpan(client))
    harness.request("a", "chat", [("small", 10, _cost(1.0))], duration_ms=10, attrs=SUCCESS, context=parent)
    harness.request(
        "b",
        "chat",
        [("small", 10, _cost(2.0)), ("large", 10, _cost(4.0))],
        duration_ms=20,
        attrs=SUCCESS,
        context=parent,
    )
    snap = harness.window.snapshot()
    assert snap["overall"]["cps"] == pytest.approx(7.0 / 2)
    assert snap["tiers"]["small"]["requests"] == 2 and snap["tiers"]["large"]["requests"] == 1


def test_orphaned_child_spans_are_bounded_and_counted(make_harness):
    h = make_harness(max_pending_traces=1)
    for _ in range(3):
        h.tracer.start_span(sc.SPAN_TIER_ATTEMPT).end()  # each in its own trace, root never ends
    assert h.accounting.orphaned_spans == 2


def test_concurrent_requests_are_all_counted(harness):
    def worker(n):
        for i in range(50):
            harness.request(f"{n}-{i}", "chat", [("small", 5, _cost(0.01))], duration_ms=5, attrs=SUCCESS)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    overall = harness.window.snapshot()["overall"]
    assert overall["requests"] == 400
    assert overall["cps"] == pytest.approx(0.01)


def test_window_must_be_bounded():
    with pytest.raises(ValueError):
        RequestWindow(max_requests=None, window_s=None)


def test_the_json_report_carries_a_cps_with_no_success_as_null(make_harness):
    """JSON has no infinity: Starlette refuses to encode one, so the report route would answer 500."""
    spent = make_harness()
    spent.request("a", "chat", [("small", 10, _cost(0.5))], duration_ms=10, attrs=FAILURE)
    snapshot = spent.window.snapshot()
    assert snapshot["overall"]["cps"] == math.inf
    telemetry = GatewayTelemetry(TracingSettings(service_name="report-test"), sink=lambda record: None)
    report = telemetry.report({**snapshot, "nested": [math.nan, 1.5]})
    assert report["overall"]["cps"] is None and report["nested"] == [None, 1.5]
    assert report["spans"] == {"exported": 0, "failed": 0, "dropped": 0}
    json.dumps(report, allow_nan=False)  # raises on any inf or nan left
