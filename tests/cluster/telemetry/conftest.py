"""Shared fixtures: a real TracerProvider with the accounting processor and an in-memory exporter,
a fake clock, and a builder for synthetic `cascade.request` traces with exact timings."""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer, set_span_in_context

from cluster.telemetry import semconv as sc
from cluster.telemetry.accounting import AccountingSpanProcessor
from cluster.telemetry.window import RequestWindow

MS = 1_000_000  # ns per ms


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    provider: TracerProvider
    tracer: Tracer
    accounting: AccountingSpanProcessor
    window: RequestWindow
    exported: InMemorySpanExporter
    clock: FakeClock

    def request(
        self,
        request_id: str,
        route: str,
        attempts: list[tuple[str, int, Mapping[str, Any]]],
        *,
        duration_ms: int,
        attrs: Mapping[str, Any] | None = None,
        start_ms: int = 0,
        context: Any = None,
    ) -> None:
        """End one root span with its tier attempts, given as (tier, duration_ms, attributes) and laid
        out back to back from `start_ms`."""
        root = self.tracer.start_span(
            sc.SPAN_REQUEST,
            context=context,
            start_time=start_ms * MS,
            attributes={sc.CASCADE_REQUEST_ID: request_id, sc.CASCADE_ROUTE: route, **(attrs or {})},
        )
        inside = set_span_in_context(root)
        at = start_ms
        for index, (tier, attempt_ms, attempt_attrs) in enumerate(attempts):
            span = self.tracer.start_span(
                sc.SPAN_TIER_ATTEMPT,
                context=inside,
                start_time=at * MS,
                attributes={sc.CASCADE_TIER: tier, sc.CASCADE_TIER_INDEX: index, **attempt_attrs},
            )
            at += attempt_ms
            span.end(end_time=at * MS)
        root.end(end_time=(start_ms + duration_ms) * MS)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_harness(clock: FakeClock) -> Iterator[Callable[..., Harness]]:
    providers: list[TracerProvider] = []

    def make(max_pending_traces: int = 10_000, **window_kwargs: Any) -> Harness:
        window = RequestWindow(clock=clock, **window_kwargs)
        accounting = AccountingSpanProcessor(window.add, max_pending_traces=max_pending_traces)
        exported = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(accounting)
        provider.add_span_processor(SimpleSpanProcessor(exported))
        providers.append(provider)
        return Harness(provider, provider.get_tracer("test"), accounting, window, exported, clock)

    yield make
    for provider in providers:
        provider.shutdown()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()
