"""A minimal OTLP/HTTP trace receiver on loopback: what a collector does with our exports, minus the rest.

The cluster's real OTLP exporters (gateway and model servers, separate processes) post protobuf
`ExportTraceServiceRequest`s here; tests read the decoded spans back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    def __init__(self, port: int) -> None:
        self.spans: list[ReceivedSpan] = []
        self.payloads: list[bytes] = []  # every export as received, for "this string is nowhere" checks
        lock = threading.Lock()
        received, payloads = self.spans, self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                payload = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(payload)
                with lock:
                    payloads.append(payload)
                    for resource_spans in request.resource_spans:
                        service = next((str(_value(a.value)) for a in resource_spans.resource.attributes
                                        if a.key == "service.name"), "")
                        for scope_spans in resource_spans.scope_spans:
                            received.extend(
                                ReceivedSpan(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                             {a.key: _value(a.value) for a in s.attributes})
                                for s in scope_spans.spans
                            )
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

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in list(self.spans) if span.trace_id == trace_id]
