"""Minimal OTLP trace receivers on loopback, over HTTP and over gRPC: what a collector does with our exports,
minus the rest.

The cluster's real OTLP exporters (gateway and model servers, separate processes) send protobuf
`ExportTraceServiceRequest`s here; tests read the decoded spans, their resources and the request headers back.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict
    resource: dict


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class _Received:
    """What every export brought, whichever transport carried it."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.payloads: list[bytes] = []  # every export as received, for "this string is nowhere" checks
        self.headers: list[dict[str, str]] = []  # request headers (gRPC metadata), lower-case names
        self._lock = threading.Lock()

    def add(self, payload: bytes, headers: dict[str, str]) -> None:
        request = ExportTraceServiceRequest.FromString(payload)
        with self._lock:
            self.payloads.append(payload)
            self.headers.append(headers)
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                service = str(resource.get("service.name", ""))
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(
                        ReceivedSpan(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                     {a.key: _value(a.value) for a in s.attributes}, resource)
                        for s in scope_spans.spans
                    )

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in list(self.spans) if span.trace_id == trace_id]

    def wait_for(self, trace_id: str, names: set[str], timeout_s: float = 60.0) -> list[ReceivedSpan]:
        """The trace's spans once spans of all `names` arrived (exporters batch every 200 ms in the test cluster;
        the timeout is a cap for a loaded machine), or what came by the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            if names <= {span.name for span in spans}:
                return spans
            time.sleep(0.2)
        return self.trace(trace_id)


class OtlpReceiver(_Received):
    """OTLP/HTTP (protobuf) on `endpoint`; exporters post to `<endpoint>/v1/traces`."""

    def __init__(self, port: int) -> None:
        super().__init__()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers["content-length"]))
                received.add(payload, {name.lower(): value for name, value in self.headers.items()})
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class GrpcOtlpReceiver(_Received):
    """OTLP/gRPC: the collector's `TraceService/Export` on `endpoint`."""

    def __init__(self) -> None:
        super().__init__()
        received = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                received.add(request.SerializeToString(), {k.lower(): v for k, v in context.invocation_metadata()})
                return ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)
        self._port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop(grace=None)
