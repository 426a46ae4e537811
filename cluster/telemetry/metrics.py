"""Prometheus exposition: windowed accounting figures, GenAI histograms and span-export losses.

The accounting figures are read from the books' snapshot at scrape time by a custom collector (the gateway
passes the cluster-wide one), so there is one set of books. Histograms cannot be rebuilt from a snapshot (it keeps
percentiles, not buckets), so `GenAiMetricsProcessor` observes tier-attempt spans as they end and feeds
the GenAI client/server histograms, named as OpenTelemetry's Prometheus mapping names them.
"""

from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cluster.telemetry import semconv as sc
from cluster.telemetry.accounting import AccountingSpanProcessor
from cluster.telemetry.export import ExportCounter

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""`Content-Type` header to serve `exposition()` with."""

_GAUGES: dict[str, tuple[str, str]] = {
    # snapshot key -> (metric name, help); the window makes counts gauges, not counters
    "requests": ("cascade_window_requests", "Requests in the accounting window."),
    "successes": ("cascade_window_successes", "Successful requests in the accounting window."),
    "cps": ("cascade_cps_usd", "Cost per success: cost of all attempts / successes (+Inf: none)."),
    "success_rate": ("cascade_success_rate", "Successes / requests."),
    "schema_validity_rate": ("cascade_schema_validity_rate", "Schema-valid / checked responses."),
    "executable_call_rate": ("cascade_executable_call_rate", "Executable / attempted tool calls."),
    "escalation_rate": ("cascade_escalation_rate", "Requests (or attempts) escalated to a higher tier."),
    "latency_p50_ms": ("cascade_latency_p50_ms", "Median latency in the window."),
    "latency_p95_ms": ("cascade_latency_p95_ms", "95th percentile latency in the window."),
    "latency_p99_ms": ("cascade_latency_p99_ms", "99th percentile latency in the window."),
    "tokens_in": ("cascade_window_input_tokens", "Input tokens in the window, all attempts."),
    "tokens_out": ("cascade_window_output_tokens", "Output tokens in the window, all attempts."),
}
_ENERGY = ("cascade_energy_per_request_joules", "Mean energy per request; see energy_source label.")
_SCOPES = (("routes", "route"), ("tiers", "tier"))

# Bucket boundaries advised by the OpenTelemetry GenAI metric conventions.
_TOKEN_BUCKETS = tuple(4.0**i for i in range(14))  # 1 .. 67108864
_DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 .. 81.92 s
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_MODEL_LABELS = ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_response_model")


class AccountingCollector(Collector):
    """Scrape-time view of the accounting snapshot and of export losses.

    Each gauge has labels `scope` (overall|route|tier) and `name`; a figure that is None (no data) is
    left out rather than reported as 0.
    """

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        accounting: AccountingSpanProcessor,
        export_counter: ExportCounter | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._accounting = accounting
        self._export_counter = export_counter

    def collect(self) -> Iterator[Metric]:
        rows = self._rows(self._snapshot())
        for key, (name, doc) in _GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=("scope", "name"))
            for scope, label, figures in rows:
                if figures[key] is not None:
                    family.add_metric((scope, label), float(figures[key]))
            yield family
        energy = GaugeMetricFamily(*_ENERGY, labels=("scope", "name", "energy_source"))
        for scope, label, figures in rows:
            if figures["energy_per_request_j"] is not None:
                energy.add_metric((scope, label, figures["energy_source"]), figures["energy_per_request_j"])
        yield energy
        discarded = CounterMetricFamily(
            "cascade_accounting_discarded", "Spans or requests left out of the books.", labels=("reason",)
        )
        discarded.add_metric(("orphaned_span",), self._accounting.orphaned_spans)
        discarded.add_metric(("malformed_request",), self._accounting.malformed_requests)
        yield discarded
        if self._export_counter is not None:
            counts = self._export_counter.snapshot()
            exported = CounterMetricFamily("cascade_otel_spans_exported", "Spans accepted by the collector.")
            exported.add_metric((), counts.exported)
            yield exported
            lost = CounterMetricFamily(
                "cascade_otel_spans_dropped", "Spans that never reached the collector.", labels=("reason",)
            )
            lost.add_metric(("queue_full",), counts.dropped)
            lost.add_metric(("export_failed",), counts.failed)
            yield lost

    @staticmethod
    def _rows(snapshot: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
        rows = [("overall", "", snapshot["overall"])]
        for key, scope in _SCOPES:
            rows.extend((scope, name, figures) for name, figures in snapshot[key].items())
        return rows


class GenAiMetricsProcessor(SpanProcessor):
    """Feeds GenAI histograms from each `cascade.tier_attempt` span (one model call per attempt)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._tokens = Histogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used.",
            (*_MODEL_LABELS, "gen_ai_token_type"),
            registry=registry,
            buckets=_TOKEN_BUCKETS,
        )
        self._duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration.",
            (*_MODEL_LABELS, "error_type"),
            registry=registry,
            buckets=_DURATION_BUCKETS,
        )
        self._ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to generate the first token.",
            _MODEL_LABELS,
            registry=registry,
            buckets=_TTFT_BUCKETS,
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if span.name != sc.SPAN_TIER_ATTEMPT:
            return
        attrs = span.attributes or {}
        model = tuple(
            str(attrs.get(key, ""))
            for key in (sc.GEN_AI_OPERATION_NAME, sc.GEN_AI_REQUEST_MODEL, sc.GEN_AI_RESPONSE_MODEL)
        )
        seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
        self._duration.labels(*model, str(attrs.get(sc.ERROR_TYPE, ""))).observe(seconds)
        for token_type, key in (("input", sc.GEN_AI_USAGE_INPUT_TOKENS), ("output", sc.GEN_AI_USAGE_OUTPUT_TOKENS)):
            if key in attrs:
                self._tokens.labels(*model, token_type).observe(float(attrs[key]))
        if sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in attrs:
            self._ttft.labels(*model).observe(float(attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]))

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def exposition(registry: CollectorRegistry) -> bytes:
    """Prometheus text format for a `/metrics` handler; serve with `CONTENT_TYPE`."""
    return generate_latest(registry)
