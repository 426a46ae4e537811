"""The remote tier client against a real HTTP server on loopback: how a provider's answers are classified."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from cluster.config import RemoteTierConfig
from deployments.protocol import GatewayError
from deployments.remote_tier import RemoteTierClient

KEY = "sk-provider-key-123"


class Provider(BaseHTTPRequestHandler):
    """Answers with the status and body the test put in the request's `user` field; records the auth header."""

    seen_auth: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        Provider.seen_auth.append(self.headers.get("authorization", ""))
        status, payload = body["user"]
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture(scope="module")
def provider_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def call(url: str, status: int, payload: object, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROVIDER_KEY", KEY)
    client = RemoteTierClient(RemoteTierConfig(kind="remote", name="llm", base_url=url, remote_model="big",
                                               api_key_env="PROVIDER_KEY"))
    return asyncio.run(client.chat({"model": "llm", "messages": [], "user": [status, payload]}))


def test_answer_is_returned_under_the_tier_name_with_the_key_sent(provider_url, monkeypatch) -> None:
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}], "usage": {}}
    result = call(provider_url, 200, answer, monkeypatch)
    assert result.body["model"] == "llm" and result.body["choices"][0]["message"]["content"] == "hi"
    assert Provider.seen_auth[-1] == f"Bearer {KEY}"


@pytest.mark.parametrize(("status", "code"), [(401, "tier_auth_refused"), (403, "tier_auth_refused"),
                                               (404, "tier_error"), (429, "tier_error"), (500, "tier_error"),
                                               (503, "tier_error")])
def test_provider_failures_are_tier_failures_and_never_echo_the_provider(provider_url, monkeypatch, status,
                                                                         code) -> None:
    with pytest.raises(GatewayError) as raised:
        call(provider_url, status, {"error": {"message": f"Incorrect API key provided: {KEY[:6]}***"}}, monkeypatch)
    assert raised.value.status == 502 and raised.value.code == code
    assert KEY[:6] not in raised.value.message
    if code == "tier_auth_refused":  # an operator must act: the message says on what, never with the key
        assert "refused this cluster's API key" in raised.value.message and "PROVIDER_KEY" in raised.value.message


@pytest.mark.parametrize("payload", [{"choices": []}, ["not", "a", "completion"], {"id": "x"}])
def test_a_malformed_200_is_a_tier_failure(provider_url, monkeypatch, payload) -> None:
    with pytest.raises(GatewayError) as raised:
        call(provider_url, 200, payload, monkeypatch)
    assert raised.value.status == 502


def test_the_providers_verdict_on_the_request_is_the_clients_to_fix(provider_url, monkeypatch) -> None:
    with pytest.raises(GatewayError) as raised:
        call(provider_url, 400, {"error": {"message": "context length exceeded"}}, monkeypatch)
    assert raised.value.status == 400 and "context length exceeded" in raised.value.message


def test_unreachable_provider_is_retriable(monkeypatch) -> None:
    with pytest.raises(GatewayError) as raised:
        call("http://127.0.0.1:9/v1", 200, {}, monkeypatch)
    assert raised.value.status == 503 and raised.value.retry_after_s == 1


def test_missing_key_variable_is_a_startup_error(monkeypatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE"):
        RemoteTierClient(RemoteTierConfig(kind="remote", name="llm", base_url="http://x/v1", remote_model="m",
                                          api_key_env="NOT_SET_ANYWHERE"))
