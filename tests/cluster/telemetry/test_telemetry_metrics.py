"""Prometheus exposition reads the accounting snapshot and the span histograms."""

import math

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from cluster.telemetry import semconv as sc
from cluster.telemetry.export import ExportCounter
from cluster.telemetry.metrics import CONTENT_TYPE, AccountingCollector, GenAiMetricsProcessor, exposition


@pytest.fixture
def scraped(harness):
    registry = CollectorRegistry()
    counter = ExportCounter()
    counter.add(exported=5, failed=2, dropped=3)
    registry.register(AccountingCollector(harness.window.snapshot, harness.accounting, counter))
    harness.provider.add_span_processor(GenAiMetricsProcessor(registry))
    model = {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_REQUEST_MODEL: "qwen-0.5b",
        sc.GEN_AI_RESPONSE_MODEL: "qwen-0.5b",
    }
    harness.request(
        "a",
        "chat",
        [
            (
                "small",
                40,
                {
                    **model,
                    sc.CASCADE_COST_USD: 0.002,
                    sc.GEN_AI_USAGE_INPUT_TOKENS: 10,
                    sc.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
                    sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: 0.03,
                    sc.CASCADE_ENERGY_J: 2.0,
                    sc.CASCADE_ENERGY_SOURCE: "nvml",
                },
            )
        ],
        duration_ms=50,
        attrs={sc.CASCADE_OUTCOME: "success"},
    )
    harness.request(
        "b",
        "chat",
        [("small", 40, {**model, sc.CASCADE_COST_USD: 0.002})],
        duration_ms=50,
        attrs={sc.CASCADE_OUTCOME: "failure"},
    )
    text = exposition(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def test_exposition_names_the_agreed_metrics(scraped):
    text, _ = scraped
    for name in (
        "gen_ai_client_token_usage_bucket",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "cascade_cps_usd",
        "cascade_success_rate",
        "cascade_schema_validity_rate",
        "cascade_escalation_rate",
        "cascade_latency_p95_ms",
        "cascade_energy_per_request_joules",
        "cascade_otel_spans_dropped_total",
        "cascade_otel_spans_exported_total",
    ):
        assert name in text, name
    assert CONTENT_TYPE.startswith("text/plain")


def test_gauges_carry_snapshot_values(scraped):
    _, samples = scraped
    overall = (("name", ""), ("scope", "overall"))
    assert samples[("cascade_cps_usd", overall)] == pytest.approx(0.004)
    assert samples[("cascade_success_rate", overall)] == 0.5
    assert samples[("cascade_window_requests", (("name", "small"), ("scope", "tier")))] == 2
    assert (
        samples[("cascade_energy_per_request_joules", (("energy_source", "nvml"), ("name", ""), ("scope", "overall")))]
        == 2.0
    )
    assert ("cascade_schema_validity_rate", overall) not in samples  # no data: absent, not 0


def test_histograms_and_drop_counters(scraped):
    _, samples = scraped
    tokens = (
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_request_model", "qwen-0.5b"),
        ("gen_ai_response_model", "qwen-0.5b"),
    )
    assert samples[("gen_ai_client_token_usage_sum", (*tokens, ("gen_ai_token_type", "input")))] == 10
    assert samples[("gen_ai_client_operation_duration_seconds_count", (("error_type", ""), *tokens))] == 2
    assert samples[("gen_ai_server_time_to_first_token_seconds_count", tokens)] == 1
    assert samples[("cascade_otel_spans_dropped_total", (("reason", "queue_full"),))] == 3
    assert samples[("cascade_otel_spans_dropped_total", (("reason", "export_failed"),))] == 2


def test_infinite_cps_is_exposed_as_plus_inf(harness):
    registry = CollectorRegistry()
    registry.register(AccountingCollector(harness.window.snapshot, harness.accounting))
    harness.request(
        "a", "chat", [("small", 10, {sc.CASCADE_COST_USD: 1.0})], duration_ms=10, attrs={sc.CASCADE_OUTCOME: "failure"}
    )
    text = exposition(registry).decode()
    assert 'cascade_cps_usd{name="",scope="overall"} +Inf' in text
    cps = next(f for f in text_string_to_metric_families(text) if f.name == "cascade_cps_usd")
    assert math.isinf(cps.samples[0].value)
