"""The gateway's HTTP edge without Ray: every error in OpenAI's shape, and request bodies read within limits."""

from __future__ import annotations

import json

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from deployments.gateway_http import gateway_api, read_json_body, replica_headers, trace_carrier
from deployments.protocol import GatewayError

MAX_BYTES = 200_000  # room for the deeply nested body below: it must fail as JSON, not for its size


@pytest.fixture(scope="module")
def client() -> TestClient:
    """An app of the gateway's making, with routes that raise what the gateway's routes raise."""
    api = gateway_api()

    @api.post("/echo")
    async def echo(request: Request) -> dict:
        return {"body": await read_json_body(request, MAX_BYTES)}

    @api.get("/refuse/{status}")
    async def refuse(status: int, retry_after_s: int | None = None) -> dict:
        raise GatewayError(status, "refused", param="p", code="some_code", retry_after_s=retry_after_s)

    @api.get("/bug")
    async def bug() -> dict:
        raise RuntimeError("secret internals")

    return TestClient(api, raise_server_exceptions=False)


def assert_openai_error(response, status: int, code: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["code"] == code
    return error


def test_a_gateway_error_becomes_its_status_and_openai_body(client) -> None:
    error = assert_openai_error(client.get("/refuse/400"), 400, "some_code")
    assert error == {"message": "refused", "type": "invalid_request_error", "param": "p", "code": "some_code"}


def test_a_401_names_the_scheme_and_a_429_says_when_to_retry(client) -> None:
    unauthenticated = client.get("/refuse/401")
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    assert unauthenticated.json()["error"]["type"] == "authentication_error"
    limited = client.get("/refuse/429", params={"retry_after_s": 7})
    assert limited.headers["retry-after"] == "7" and limited.json()["error"]["type"] == "rate_limit_error"
    assert "www-authenticate" not in limited.headers and "retry-after" not in unauthenticated.headers


def test_routing_errors_are_in_the_same_shape(client) -> None:
    assert_openai_error(client.get("/no/such/path"), 404, "not_found")
    assert_openai_error(client.get("/echo"), 405, "invalid_request")


def test_a_framework_parameter_error_names_the_parameter(client) -> None:
    error = assert_openai_error(client.get("/refuse/not-a-number"), 400, "invalid_value")
    assert error["param"] == "path.status" and error["message"].startswith("path.status: ")


def test_a_bug_answers_500_without_internals(client) -> None:
    response = client.get("/bug")
    assert_openai_error(response, 500, "internal_error")
    assert response.json()["error"]["type"] == "server_error" and "secret" not in response.text


def post(client: TestClient, data: bytes, content_type: str = "application/json", **headers: str):
    return client.post("/echo", content=data, headers={"content-type": content_type, **headers})


def test_each_app_is_its_own(client) -> None:
    """The routes a test adds never reach another app of the gateway's making, the deployment's among them."""
    def paths(app) -> set:
        return {getattr(route, "path", None) for route in app.routes}

    assert "/echo" in paths(client.app) and "/echo" not in paths(gateway_api())


@pytest.mark.parametrize(("data", "content_type", "status", "code"), [
    (b'{"model": "cascade", "messages": [', "application/json", 400, "invalid_json"),
    (b'{"model": "\xff\xfe"}', "application/json", 400, "invalid_encoding"),
    (b"[" * 100_000, "application/json", 400, "invalid_json"),
    (b"{}", "text/plain", 415, None),
    (json.dumps({"text": "x" * MAX_BYTES}).encode(), "application/json", 413, "body_too_large"),
])
def test_bad_bodies_get_a_4xx(client, data: bytes, content_type: str, status: int, code: str | None) -> None:
    assert_openai_error(post(client, data, content_type), status, code)


def test_a_body_within_limits_is_parsed_whatever_the_content_type_parameters(client) -> None:
    response = post(client, b'{"a": [1, 2]}', "application/json; charset=utf-8")
    assert response.status_code == 200 and response.json() == {"body": {"a": [1, 2]}}


def test_a_declared_oversized_body_is_refused_before_it_is_read(client) -> None:
    response = post(client, b"{}", **{"content-length": str(MAX_BYTES + 1)})
    assert_openai_error(response, 413, "body_too_large")


def test_only_trace_headers_travel_on_and_no_replica_is_named_outside_serve() -> None:
    headers = {"traceparent": "00-abc-def-01", "tracestate": "k=v", "authorization": "Bearer sk-secret"}
    assert trace_carrier(headers) == {"traceparent": "00-abc-def-01", "tracestate": "k=v"}
    assert replica_headers() == {}
