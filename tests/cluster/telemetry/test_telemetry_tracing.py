"""Provider wiring, W3C propagation across dict carriers, bounded export with counted losses."""

import socket
import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from cluster.telemetry import semconv as sc
from cluster.telemetry.export import CountingBatchSpanProcessor, ExportCounter
from cluster.telemetry.tracing import (
    TracingSettings,
    configure_tracing,
    extract_context,
    inject_context,
    record_content,
)


@pytest.fixture(params=["closed_port", "blackhole"])
def dead_collector(request):
    """A port that refuses connections, or one that accepts them and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        if request.param == "blackhole":
            sock.listen(64)
            yield f"http://127.0.0.1:{port}"
            return
    yield f"http://127.0.0.1:{port}"


def _provider_with_memory() -> tuple[TracerProvider, InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    provider = configure_tracing(TracingSettings(), SimpleSpanProcessor(exported))
    return provider, exported


def test_context_survives_a_dict_carrier_hop():
    provider, exported = _provider_with_memory()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span(sc.SPAN_REQUEST) as root:
        carrier = inject_context()
    assert set(carrier) == {"traceparent"}
    tracer.start_span(sc.SPAN_TIER_ATTEMPT, context=extract_context(carrier)).end()
    child = exported.get_finished_spans()[-1]
    assert child.context.trace_id == root.get_span_context().trace_id
    assert child.parent.span_id == root.get_span_context().span_id


def test_incoming_traceparent_header_any_case_is_honoured():
    provider, exported = _provider_with_memory()
    header = {"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    provider.get_tracer("t").start_span(sc.SPAN_REQUEST, context=extract_context(header)).end()
    span = exported.get_finished_spans()[-1]
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent.span_id == 0xB7AD6B7169203331


def test_malformed_traceparent_starts_a_new_trace():
    provider, exported = _provider_with_memory()
    provider.get_tracer("t").start_span("x", context=extract_context({"traceparent": "garbage"})).end()
    assert exported.get_finished_spans()[-1].parent is None


def test_service_name_reaches_the_resource():
    provider = configure_tracing(TracingSettings(service_name="gw-test"))
    assert provider.resource.attributes["service.name"] == "gw-test"


def test_settings_reject_batch_larger_than_queue():
    with pytest.raises(ValidationError):
        TracingSettings(max_queue_size=8, max_export_batch_size=16)


@pytest.mark.parametrize("capture", [False, True])
def test_content_is_recorded_only_when_allowed(capture):
    provider, exported = _provider_with_memory()
    span = provider.get_tracer("t").start_span("x")
    record_content(
        span, TracingSettings(capture_content=capture), input_messages=[{"role": "user"}], output_messages=["hi"]
    )
    span.end()
    assert (sc.GEN_AI_INPUT_MESSAGES in exported.get_finished_spans()[-1].attributes) is capture


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unreachable_collector_never_slows_span_end_and_losses_are_counted(protocol, dead_collector):
    counter = ExportCounter()
    settings = TracingSettings(
        otlp_endpoint=dead_collector,
        otlp_protocol=protocol,
        export_timeout_s=3.0,  # a span.end() that waited on an export would take this long; none may
        max_queue_size=16,
        max_export_batch_size=8,
        schedule_delay_ms=10,
    )
    provider = configure_tracing(settings, export_counter=counter)
    tracer = provider.get_tracer("t")
    n = 2000
    worst = 0.0
    for _ in range(n):
        span = tracer.start_span(sc.SPAN_TIER_ATTEMPT)
        began = time.perf_counter()
        span.end()
        worst = max(worst, time.perf_counter() - began)
    # Half the export timeout: six times the worst seen on a loaded 2-core machine, yet no blocked call fits.
    assert worst < settings.export_timeout_s / 2, f"span.end() blocked for {worst:.3f}s"

    began = time.perf_counter()
    provider.shutdown()
    assert time.perf_counter() - began < 4 * settings.export_timeout_s, "shutdown not bounded by the export timeout"
    counts = counter.snapshot()
    assert counts.exported == 0
    assert counts.dropped > 0 and counts.failed > 0
    assert counts.lost == n  # every span accounted for exactly once


class _GatedExporter(SpanExporter):
    """Holds the first export until released, so the queue fills deterministically."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received = 0

    def export(self, spans):
        self.release.wait(5)
        self.received += len(spans)
        return SpanExportResult.SUCCESS


def test_queue_full_drops_are_counted_and_totals_conserved():
    counter, exporter = ExportCounter(), _GatedExporter()
    processor = CountingBatchSpanProcessor(
        exporter, counter, max_queue_size=10, max_export_batch_size=5, schedule_delay_ms=5
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    for _ in range(100):
        provider.get_tracer("t").start_span("s").end()
    exporter.release.set()
    provider.shutdown()
    counts = counter.snapshot()
    assert counts.failed == 0
    assert counts.exported == exporter.received
    assert counts.dropped >= 100 - 15  # at most one batch in flight plus a full queue got through
    assert counts.exported + counts.dropped == 100


def test_export_failures_and_exceptions_count_as_failed():
    class Failing(SpanExporter):
        def __init__(self):
            self.calls = 0

        def export(self, spans):
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("boom")
            return SpanExportResult.FAILURE

    counter = ExportCounter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(CountingBatchSpanProcessor(Failing(), counter, max_export_batch_size=1))
    for _ in range(3):
        provider.get_tracer("t").start_span("s").end()
    provider.shutdown()
    assert counter.snapshot().failed == 3


def test_spans_after_shutdown_are_dropped_not_lost():
    counter = ExportCounter()
    processor = CountingBatchSpanProcessor(InMemorySpanExporter(), counter)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    tracer.start_span("before").end()
    provider.shutdown()
    tracer.start_span("after").end()
    assert counter.snapshot() == type(counter.snapshot())(exported=1, failed=0, dropped=1)
