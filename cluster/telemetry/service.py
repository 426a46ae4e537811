"""The gateway's telemetry in one object: tracer, accounting books, Prometheus registry, export counts.

Built once per gateway replica. Everything the product reports (the JSON report, `/metrics`, `cascade
report`) reads the same books, fed by records built from the same spans that are exported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry
from pydantic_core import to_jsonable_python

from cluster.telemetry.accounting import AccountingSpanProcessor
from cluster.telemetry.aggregate import RequestRecord
from cluster.telemetry.export import ExportCounter
from cluster.telemetry.metrics import AccountingCollector, GenAiMetricsProcessor, exposition
from cluster.telemetry.tracing import TracingSettings, apply_otel_environment, configure_tracing


def resolve_settings(settings: TracingSettings, service_name: str) -> TracingSettings:
    """The config's settings under OpenTelemetry's own environment variables (what the Helm chart sets)."""
    return apply_otel_environment(settings, os.environ).model_copy(update={"service_name": service_name})


def deployment_tracer(settings: TracingSettings, service_name: str) -> trace.Tracer:
    """A tracer for a deployment other than the gateway: its spans are exported, not accounted."""
    return configure_tracing(resolve_settings(settings, service_name)).get_tracer("slm-cascade")


class GatewayTelemetry:
    """Tracer, span-built accounting records, Prometheus registry and export counts of one gateway replica.

    Records go to `sink` (the cluster's books); the report and `/metrics` are rendered from a snapshot of those
    books that the caller fetched, so every replica reports the same figures.
    """

    def __init__(self, settings: TracingSettings, sink: Callable[[RequestRecord], None]) -> None:
        settings = resolve_settings(settings, settings.service_name)
        self.accounting = AccountingSpanProcessor(sink)
        self.registry = CollectorRegistry()
        self.export_counter = ExportCounter()
        self._scraped: dict[str, Any] = {}
        self.registry.register(AccountingCollector(lambda: self._scraped, self.accounting, self.export_counter))
        provider = configure_tracing(settings, self.accounting, GenAiMetricsProcessor(self.registry),
                                     export_counter=self.export_counter)
        self.tracer: trace.Tracer = provider.get_tracer("slm-cascade")

    def report(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """The books' snapshot with this replica's span-export counts, every non-finite figure as null.

        JSON has no infinity (Starlette would refuse to encode one, and the route answer 500), and a CPS with no
        success is `math.inf` in the books (`/metrics` keeps it as +Inf). So in the JSON report a null CPS means
        "nothing succeeded" where the group has requests, and "no requests" where it has none."""
        report = {**snapshot, "spans": self.export_counter.snapshot()}
        return to_jsonable_python(report, inf_nan_mode="null")

    def metrics_text(self, snapshot: dict[str, Any]) -> bytes:
        self._scraped = snapshot  # read by the collector within this same synchronous call
        return exposition(self.registry)
