"""Schemathesis against the real gateway's own OpenAPI document: no input, valid or not, gets a 5xx.

Positive cases (bodies that match the documented schemas) reach the real engines; negative cases (bodies that
break the schemas) must be refused with an OpenAI-style 4xx. Either way generation is bounded by adding or
lowering valid fields only (at most 8 new tokens; a 240 s deadline, far above what 8 tokens take even
when a case escalates on a loaded machine), to keep CPU time bounded. Every case carries
a valid key: the unauthenticated paths are the access tests' job.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import requests
import schemathesis
from auth_keys import ADMIN_HEADERS
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.modes import GenerationMode

pytestmark = pytest.mark.cluster

KNOWN_MODELS = ("cascade", "slm", "fallback")


def bounded(case, mode: GenerationMode) -> None:
    """Caps what a chat case may cost the engines, by adding or lowering valid fields only (a negative case
    keeps whatever makes it invalid); other operations are sent as generated."""
    body = case.body
    if case.path != "/v1/chat/completions" or not isinstance(body, dict):
        return
    if mode is GenerationMode.POSITIVE and isinstance(body.get("model"), str):
        body["model"] = KNOWN_MODELS[len(body["model"]) % len(KNOWN_MODELS)]  # reach tiers, not only the 404
    for field in ("max_tokens", "max_completion_tokens"):
        if field in body and body[field] is None:  # a valid null means "no limit": generation up to the deadline
            body[field] = 8
        if isinstance(body.get(field), int) and body[field] > 8:
            body[field] = 8
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = 8
    if body.get("stream") is True:
        body["stream"] = False  # a stream's status is sent before its end: keep the case, read one body
    deadline = body.get("deadline_s")
    if deadline is None or (isinstance(deadline, (int, float)) and not isinstance(deadline, bool) and deadline > 0):
        body["deadline_s"] = 240  # a valid deadline of 5e-324 s would rightly expire (504) before any answer


def fuzz(cluster: str, mode: GenerationMode, max_examples: int) -> Counter:
    schema = schemathesis.openapi.from_url(f"{cluster}/openapi.json", headers=ADMIN_HEADERS)
    statuses: Counter = Counter()
    server_errors: list[str] = []

    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=schema.as_strategy(generation_mode=mode))
    def send(case) -> None:
        bounded(case, mode)
        try:
            response = case.call(base_url=cluster, headers=ADMIN_HEADERS, timeout=300)
        except requests.RequestException as error:  # no answer at all: as bad as a 5xx
            server_errors.append(f"{case.method} {case.path} {case.body!r:.2000} -> {type(error).__name__}")
            return
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            server_errors.append(f"{case.method} {case.path} {case.body!r:.2000} -> {response.status_code} "
                                 f"{response.text[:300]}")
        elif response.status_code >= 400:
            error = response.json().get("error")
            assert isinstance(error, dict) and error.get("message"), \
                f"{case.method} {case.path}: {response.status_code} without an OpenAI error body: {response.text[:200]}"

    send()
    print(f"{mode} cases by status: {dict(sorted(statuses.items()))}")
    assert not server_errors, "\n".join(server_errors)
    return statuses


def test_no_valid_request_gets_a_server_error(cluster: str) -> None:
    statuses = fuzz(cluster, GenerationMode.POSITIVE, max_examples=150)
    assert statuses[200] > 0, f"some generated cases were served: {dict(statuses)}"
    assert httpx.get(f"{cluster}/healthz", timeout=30).status_code == 200


def test_no_invalid_request_gets_a_server_error(cluster: str) -> None:
    statuses = fuzz(cluster, GenerationMode.NEGATIVE, max_examples=200)
    assert sum(count for status, count in statuses.items() if 400 <= status < 500) > 0, dict(statuses)
    assert httpx.get(f"{cluster}/healthz", timeout=30).status_code == 200
