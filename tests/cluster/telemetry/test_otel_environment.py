"""OpenTelemetry's own environment variables, honoured as the SDK defines them: protocol, endpoint, headers,
service name and resource attributes, sent by the real exporters to real receivers over each protocol."""

from __future__ import annotations

import pytest
from otlp_receiver import GrpcOtlpReceiver, OtlpReceiver

from cluster.telemetry.service import resolve_settings
from cluster.telemetry.tracing import (
    OtelEnvironmentError,
    TracingSettings,
    apply_otel_environment,
    configure_tracing,
    service_resource,
)

CONFIGURED = TracingSettings(otlp_endpoint="http://configured:4317", otlp_protocol="grpc")


@pytest.mark.parametrize(("environ", "endpoint", "protocol"), [
    ({}, "http://configured:4317", "grpc"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "http://c:4317", "grpc"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
     "http://c:4318/v1/traces", "http"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/base", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
     "http://c:4318/base/v1/traces", "http"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "http://t:4318/v1/traces", "http"),
])
def test_the_sdks_variables_win_over_the_config(environ, endpoint, protocol):
    settings = apply_otel_environment(CONFIGURED, environ)
    assert (settings.otlp_endpoint, settings.otlp_protocol) == (endpoint, protocol)


def test_a_protocol_the_sdk_cannot_send_is_refused_by_name():
    with pytest.raises(OtelEnvironmentError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='http/json'.*grpc or http/protobuf"):
        apply_otel_environment(CONFIGURED, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


@pytest.mark.parametrize(("protocol", "receiver_type"), [("grpc", GrpcOtlpReceiver),
                                                         ("http/protobuf", OtlpReceiver)])
def test_spans_reach_a_real_receiver_over_each_protocol_with_the_environments_settings(
        protocol, receiver_type, monkeypatch):
    receiver = receiver_type() if receiver_type is GrpcOtlpReceiver else receiver_type(port=0)
    with receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout-agents")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=gateway-0,deployment.environment=test")
        provider = configure_tracing(resolve_settings(TracingSettings(schedule_delay_ms=10), "slm-cascade-gateway"))
        provider.get_tracer("test").start_span("cascade.request").end()
        provider.shutdown()  # exports what is queued
    spans = [span for span in receiver.spans if span.name == "cascade.request"]
    assert len(spans) == 1
    assert spans[0].service == "checkout-agents"
    assert spans[0].resource["k8s.pod.name"] == "gateway-0"
    assert spans[0].resource["cascade.component"] == "slm-cascade-gateway"
    assert receiver.headers[0]["x-tenant"] == "blue"


def test_without_the_environment_the_component_names_the_service(monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert service_resource("slm-cascade-gateway").attributes["service.name"] == "slm-cascade-gateway"
