"""The gateway's HTTP edge: its FastAPI app, every error in OpenAI's shape, and reading a request body safely.

No Ray here beyond asking which replica answers, so the error mapping and body limits are testable with a plain
ASGI test client. The deployment class (`gateway`) declares its routes on the app `gateway_api` builds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.protocol import GatewayError
from deployments.replica import current_replica_id

DEADLINE_HEADER = "x-cascade-deadline-s"
ROUTE_HEADER = "x-cascade-route"
REPLICA_HEADER = "x-cascade-gateway-replica"
TRACE_HEADERS = ("traceparent", "tracestate")


def replica_headers() -> dict[str, str]:
    """Which gateway replica answered, so an operator (or a test) can tell; empty outside a Serve replica."""
    replica = current_replica_id()
    return {REPLICA_HEADER: replica} if replica is not None else {}


def error_response(error: GatewayError) -> JSONResponse:
    """The OpenAI error body with the headers its status calls for: Retry-After (429, 503) and, on a 401, the
    scheme the client should authenticate with."""
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else {}
    headers.update(replica_headers())
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def _gateway_error(_: Request, error: GatewayError) -> JSONResponse:
    return error_response(error)


async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    """Routing errors (unknown path 404, wrong method 405) in the same OpenAI shape as every other error."""
    code = "not_found" if error.status_code == 404 else "invalid_request"
    return error_response(GatewayError(error.status_code, str(error.detail), code=code))


async def _request_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's own parameter checks (a path or query parameter), named like the gateway's other 400s."""
    return error_response(GatewayError.from_errors(error.errors()))


async def _unexpected_error(_: Request, error: Exception) -> JSONResponse:
    """A bug still answers in OpenAI's error shape, without internals; Serve logs the traceback."""
    return error_response(GatewayError(500, "internal error", code="internal_error"))


def gateway_api() -> FastAPI:
    """A FastAPI app on which no error, the gateway's own or the framework's, leaves in any but OpenAI's shape.

    Built by a function, not at import, so a test gets an app of its own to add routes to.
    """
    api = FastAPI(title="slm-cascade", description="OpenAI-compatible gateway of an SLM-first serving cluster.")
    api.exception_handler(GatewayError)(_gateway_error)
    api.exception_handler(StarletteHTTPException)(_http_error)
    api.exception_handler(RequestValidationError)(_request_validation_error)
    api.exception_handler(Exception)(_unexpected_error)
    return api


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The request body as JSON, refusing oversized, non-JSON and non-UTF-8 bodies with a 4xx.

    The size is checked as the body arrives, not after: a client cannot make the replica buffer more than
    `max_bytes`, whatever its Content-Length says.
    """
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise GatewayError(415, f"content type {content_type!r} is not supported; send application/json")
    too_large = GatewayError(413, f"request body exceeds {max_bytes} bytes", code="body_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise GatewayError(400, "request body is not valid UTF-8", code="invalid_encoding") from None
    except json.JSONDecodeError as error:
        raise GatewayError(400, f"request body is not valid JSON: {error}", code="invalid_json") from None
    except RecursionError:
        raise GatewayError(400, "request body is nested too deeply", code="invalid_json") from None


def trace_carrier(headers: Mapping[str, str]) -> dict[str, str]:
    """Only the W3C trace headers travel on; the rest (the caller's key among them) stays at the edge."""
    return {name: headers[name] for name in TRACE_HEADERS if name in headers}
