"""The gateway's telemetry in one object: tracer, accounting books, Prometheus registry, export counts.

Built once per gateway replica. Everything the product reports (the JSON report, `/metrics`, `cascade
report`) reads the same `AccountingSpanProcessor`, which is fed by the same spans that are exported.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from cluster.telemetry.accounting import AccountingSpanProcessor
from cluster.telemetry.export import ExportCounter
from cluster.telemetry.metrics import AccountingCollector, GenAiMetricsProcessor, exposition
from cluster.telemetry.tracing import TracingSettings, configure_tracing

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"


def resolve_settings(settings: TracingSettings, service_name: str) -> TracingSettings:
    """The standard OTEL_EXPORTER_OTLP_ENDPOINT variable (what the Helm chart sets) wins over the config."""
    endpoint = os.environ.get(OTLP_ENDPOINT_ENV) or settings.otlp_endpoint
    return settings.model_copy(update={"otlp_endpoint": endpoint, "service_name": service_name})


def deployment_tracer(settings: TracingSettings, service_name: str) -> trace.Tracer:
    """A tracer for a deployment other than the gateway: its spans are exported, not accounted."""
    return configure_tracing(resolve_settings(settings, service_name)).get_tracer("slm-cascade")


@dataclass
class GatewayTelemetry:
    tracer: trace.Tracer
    accounting: AccountingSpanProcessor
    registry: CollectorRegistry
    export_counter: ExportCounter

    @classmethod
    def start(cls, settings: TracingSettings) -> GatewayTelemetry:
        settings = resolve_settings(settings, settings.service_name)
        accounting = AccountingSpanProcessor()
        registry = CollectorRegistry()
        counter = ExportCounter()
        registry.register(AccountingCollector(accounting, counter))
        provider = configure_tracing(settings, accounting, GenAiMetricsProcessor(registry), export_counter=counter)
        return cls(provider.get_tracer("slm-cascade"), accounting, registry, counter)

    def report(self) -> dict[str, Any]:
        return {**self.accounting.snapshot(), "spans": dataclasses.asdict(self.export_counter.snapshot())}

    def metrics_text(self) -> bytes:
        return exposition(self.registry)
