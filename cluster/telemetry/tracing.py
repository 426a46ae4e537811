"""Tracer-provider wiring and W3C trace-context propagation for the gateway.

A request's trace must survive two hops that OpenTelemetry cannot instrument for us: the client's
`traceparent` header into the gateway, and Ray Serve handle calls between deployments (which carry
plain Python objects, not headers). Both are served by dict carriers here. Export is optional and
never on the request path; the processors passed in (accounting, GenAI histograms) run synchronously.
"""

import json
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.telemetry.export import CountingBatchSpanProcessor, ExportCounter
from cluster.telemetry.semconv import GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES

OtlpProtocol = Literal["grpc", "http"]
COMPONENT_ATTRIBUTE = "cascade.component"


class TracingSettings(BaseModel):
    """Where traces go and how hard we try; defaults suit a collector sidecar."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP collector URL, e.g. http://otel-collector:4317 (grpc) or "
        "http://otel-collector:4318 (http; /v1/traces is appended when no path is given). "
        "None disables export; accounting still runs.",
    )
    otlp_protocol: OtlpProtocol = Field(default="grpc", description="OTLP transport.")
    service_name: str = Field(default="slm-cascade-gateway", description="`service.name` resource.")
    capture_content: bool = Field(
        default=False,
        description="Record prompts and completions on spans (gen_ai.input/output.messages). "
        "Off by default: they may hold user data.",
    )
    export_timeout_s: float = Field(default=5.0, gt=0, description="Per-batch export deadline.")
    max_queue_size: int = Field(default=2048, gt=0, description="Spans buffered before dropping.")
    max_export_batch_size: int = Field(default=512, gt=0, description="Spans per export call.")
    schedule_delay_ms: float = Field(default=1000, gt=0, description="Export interval.")

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> "TracingSettings":
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError("max_export_batch_size must not exceed max_queue_size")
        return self


OTEL_PROTOCOLS: dict[str, OtlpProtocol] = {"grpc": "grpc", "http/protobuf": "http"}
"""OTEL_EXPORTER_OTLP_PROTOCOL values the Python SDK can send (it has no http/json exporter)."""


class OtelEnvironmentError(ValueError):
    """An OpenTelemetry environment variable holds a value this process cannot honour."""


def apply_otel_environment(settings: TracingSettings, environ: Mapping[str, str]) -> TracingSettings:
    """OpenTelemetry's own exporter variables, read as the SDK specifies them, win over the config.

    `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is the traces URL; else `OTEL_EXPORTER_OTLP_ENDPOINT` is a base, to
    which OTLP/HTTP appends `/v1/traces`. `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` is `grpc` or `http/protobuf`.
    Headers (`OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`) are read by the SDK's exporters themselves, and the service
    name and resource attributes by `service_resource`.
    """
    update: dict[str, Any] = {}
    protocol_var = next((v for v in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
                         if environ.get(v)), None)
    if protocol_var is not None:
        value = environ[protocol_var].strip()
        if value not in OTEL_PROTOCOLS:
            raise OtelEnvironmentError(f"{protocol_var}={value!r} is not supported here: use "
                                       f"{' or '.join(OTEL_PROTOCOLS)}")
        update["otlp_protocol"] = OTEL_PROTOCOLS[value]
    protocol = update.get("otlp_protocol", settings.otlp_protocol)
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        update["otlp_endpoint"] = environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    elif environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        base = environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
        update["otlp_endpoint"] = base if protocol == "grpc" else base.rstrip("/") + "/v1/traces"
    return settings.model_copy(update=update)


def service_resource(component: str) -> Resource:
    """The resource spans carry: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` as the SDK reads them, the
    component's name as `service.name` only when they set none, and always as `cascade.component`, so the
    gateway and each tier stay apart when a chart gives every pod one service name."""
    attributes = {COMPONENT_ATTRIBUTE: component}
    if SERVICE_NAME not in OTELResourceDetector().detect().attributes:
        attributes[SERVICE_NAME] = component
    return Resource.create(attributes)


def configure_tracing(
    settings: TracingSettings,
    *processors: SpanProcessor,
    export_counter: ExportCounter | None = None,
) -> TracerProvider:
    """Build (not install globally) a provider running `processors` in order, then OTLP export if set.

    Pass the `AccountingSpanProcessor` (and `GenAiMetricsProcessor`) as `processors`; pass the
    `ExportCounter` that the metrics collector reads so dropped spans show on `/metrics`.
    """
    provider = TracerProvider(resource=service_resource(settings.service_name))
    for processor in processors:
        provider.add_span_processor(processor)
    if settings.otlp_endpoint is not None:
        provider.add_span_processor(
            CountingBatchSpanProcessor(
                _EXPORTERS[settings.otlp_protocol](settings),
                export_counter or ExportCounter(),
                max_queue_size=settings.max_queue_size,
                max_export_batch_size=settings.max_export_batch_size,
                schedule_delay_ms=settings.schedule_delay_ms,
            )
        )
    return provider


def _grpc_exporter(settings: TracingSettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=settings.export_timeout_s)


def _http_exporter(settings: TracingSettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = settings.otlp_endpoint or ""
    if urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint, timeout=settings.export_timeout_s)


_EXPORTERS: dict[OtlpProtocol, Callable[[TracingSettings], SpanExporter]] = {
    "grpc": _grpc_exporter,
    "http": _http_exporter,
}

_W3C = TraceContextTextMapPropagator()


def inject_context(context: Context | None = None) -> dict[str, str]:
    """`traceparent`/`tracestate` of `context` (default: current) as a dict for a Ray handle call."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    return carrier


def extract_context(carrier: Mapping[str, str]) -> Context:
    """Context from a dict made by `inject_context` or from HTTP headers (any key case).

    Pass the result as `context=` when starting the span; an absent or malformed `traceparent`
    yields an empty context, so the span simply starts a new trace.
    """
    return _W3C.extract({key.lower(): value for key, value in carrier.items()})


def record_content(span: Span, settings: TracingSettings, *, input_messages: Any, output_messages: Any) -> None:
    """Attach prompt/completion (JSON) to `span` only when `capture_content` allows it."""
    if not settings.capture_content:
        return
    span.set_attribute(GEN_AI_INPUT_MESSAGES, json.dumps(input_messages, default=str))
    span.set_attribute(GEN_AI_OUTPUT_MESSAGES, json.dumps(output_messages, default=str))
