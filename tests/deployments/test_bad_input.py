"""Every bad input gets a 4xx with an OpenAI-style error body, and the replica keeps serving afterwards."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from auth_keys import ADMIN_HEADERS

GOOD = {"model": "cascade", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def post(base_url: str, data: bytes, content_type: str = "application/json") -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions", data=data, headers={"content-type": content_type, **ADMIN_HEADERS},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def with_(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


BAD_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                        "properties": {"x": {"type": "wrong"}}}}}
OK_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}

CASES: dict[str, tuple[bytes, str, int, str | None]] = {
    "malformed_json": (b'{"model": "cascade", "messages": [', "application/json", 400, None),
    "not_an_object": (b"[1, 2, 3]", "application/json", 400, None),
    "invalid_utf8": (b'{"model": "\xff\xfe"}', "application/json", 400, None),
    "wrong_content_type": (with_(), "text/plain", 415, None),
    "missing_messages": (json.dumps({"model": "cascade"}).encode(), "application/json", 400, "messages"),
    "empty_messages": (with_(messages=[]), "application/json", 400, "messages"),
    "unknown_model": (with_(model="gpt-17"), "application/json", 404, "model"),
    "max_tokens_zero": (with_(max_tokens=0), "application/json", 400, "max_tokens"),
    "max_tokens_above_limit": (with_(max_tokens=10**6), "application/json", 400, "max_tokens"),
    "max_tokens_wrong_type": (with_(max_tokens="many"), "application/json", 400, "max_tokens"),
    "invalid_json_schema": (
        with_(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectz"}}}),
        "application/json", 400, "response_format.json_schema.schema"),
    "unknown_response_format_type": (with_(response_format={"type": "yaml"}), "application/json", 400, None),
    "tool_with_invalid_parameter_schema": (with_(tools=[BAD_TOOL], tool_choice="required"), "application/json",
                                           400, "tools"),
    "named_tool_not_in_tools": (
        with_(tools=[OK_TOOL], tool_choice={"type": "function", "function": {"name": "g"}}),
        "application/json", 400, "tool_choice"),
    "prompt_longer_than_context": (with_(messages=[{"role": "user", "content": "word " * 5000}]),
                                   "application/json", 400, None),
    "oversized_body": (with_(messages=[{"role": "user", "content": "x" * (2 << 20)}]), "application/json", 413, None),
    "bad_temperature": (with_(temperature=-3), "application/json", 400, None),
    "schema_with_remote_ref": (
        with_(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "$ref": "http://169.254.169.254/latest/meta-data"}}}),
        "application/json", 400, "response_format.json_schema.schema"),
    "malformed_named_tool_choice": (with_(tools=[OK_TOOL], tool_choice={"type": "function"}), "application/json",
                                    400, "tool_choice"),
    "unknown_tool_choice_string": (with_(tools=[OK_TOOL], tool_choice="sometimes"), "application/json", 400,
                                   "tool_choice"),
    "deeply_nested_body": (b"[" * 100_000, "application/json", 400, None),
    "n_above_one_on_cascade": (with_(n=2), "application/json", 400, "n"),
    "stream_options_not_an_object": (with_(stream=True, stream_options="yes"), "application/json", 400,
                                     "stream_options"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_openai_error_and_replica_keeps_serving(cluster: str, case: str) -> None:
    data, content_type, expected_status, expected_param = CASES[case]
    status, _, body = post(cluster, data, content_type)
    assert status == expected_status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error"), error
    if expected_param is not None:
        assert error["param"] is not None and error["param"].startswith(expected_param)
    follow_up_status, _, follow_up = post(cluster, with_())
    assert follow_up_status == 200, follow_up
    assert follow_up["choices"][0]["message"]["content"] is not None
