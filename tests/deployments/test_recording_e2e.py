"""Recording on the real cluster: verified answers from above the SLM are stored, with nothing else of the user's."""

from __future__ import annotations

import httpx
import pytest
from auth_keys import ADMIN_HEADERS
from cluster_state import cluster_state_dir

pytestmark = pytest.mark.cluster

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def send(cluster: str, route: str, **extra: object) -> dict:
    response = httpx.post(
        f"{cluster}/v1/chat/completions", headers={**ADMIN_HEADERS, "x-cascade-route": route}, timeout=300,
        json={"model": "cascade", "messages": [{"role": "user", "content": "A city in France, as JSON."}],
              "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}},
              "max_tokens": 40, "temperature": 0, "user": "customer-42", "metadata": {"ticket": "T-9"}, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_only_verified_answers_from_above_the_slm_are_recorded_with_only_the_contract(cluster: str) -> None:
    from cluster.store.recording import RecordingStore

    with RecordingStore(cluster_state_dir() / "recordings.sqlite") as store:
        before_recorded, before_default = store.count("recorded"), store.count("default")
        escalated = send(cluster, "recorded")
        kept_on_slm = send(cluster, "default")
        assert escalated["cascade"]["tiers_tried"] == ["fallback"] and escalated["cascade"]["verified"]
        assert kept_on_slm["cascade"]["tiers_tried"] == ["slm"]
        assert store.count("recorded") == before_recorded + 1
        assert store.count("default") == before_default, "an answer the SLM gave is not recorded"
        example = store.examples("recorded")[-1]
    assert example.tier == "fallback"
    assert set(example.request) == {"messages", "response_format"}, "no user id, metadata or sampling settings"
    assert example.answer["content"] == escalated["choices"][0]["message"]["content"]


def test_a_request_sent_with_store_false_is_answered_but_never_recorded(cluster: str) -> None:
    from cluster.store.recording import RecordingStore

    with RecordingStore(cluster_state_dir() / "recordings.sqlite") as store:
        before = store.count("recorded")
        answered = send(cluster, "recorded", store=False)  # OpenAI's own opt-out of distillation
        assert answered["cascade"]["tiers_tried"] == ["fallback"] and answered["cascade"]["verified"]
        assert store.count("recorded") == before
