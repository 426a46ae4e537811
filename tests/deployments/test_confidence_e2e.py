"""Knowing when the SLM is wrong, on the running cluster: what vLLM's logprobs mean, and the README's example.

Real engines: the SLM's guided tool call through the gateway, and the embedded default route's fitted
confidence, grounding veto and threshold.
"""

from __future__ import annotations

import json

import httpx
import pytest
from auth_keys import ADMIN_HEADERS

pytestmark = pytest.mark.cluster

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"]}}}
README_EXAMPLE = {"messages": [{"role": "user", "content": "What is the weather in Paris, in celsius?"}],
                  "tools": [WEATHER_TOOL], "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 80}
SAMPLINGS = {"temperature-0": {"temperature": 0}, **{f"default-sampling-seed-{s}": {"seed": s} for s in range(4)},
             "parallel-calls-allowed-temperature-0": {"temperature": 0, "parallel_tool_calls": True},
             "parallel-calls-allowed-seed-1": {"seed": 1, "parallel_tool_calls": True}}
MASKED = -9000.0  # vLLM reports a token the grammar forbids at -9999


def chat(base_url: str, body: dict) -> dict:
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=ADMIN_HEADERS, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_vllm_returns_logprobs_taken_after_the_grammar_mask(cluster: str) -> None:
    """The value-level confidence features rely on this: a forced token comes back at logprob 0.0 with its
    alternatives masked to -9999, so scaffolding carries no signal. A vLLM that returned pre-mask logprobs
    would break the features silently; this fails loudly instead."""
    body = chat(cluster, {**README_EXAMPLE, "model": "slm", "temperature": 0, "logprobs": True, "top_logprobs": 3})
    assert body["cascade"]["confidence"] > 0.5, "the README's answer, scored by the default route's fitted model"
    tokens = body["choices"][0]["logprobs"]["content"]
    text = "".join(t["token"] for t in tokens)
    assert text.startswith("[{")  # the forced tool-call array
    first = tokens[0]
    assert first["token"] == "[" and first["logprob"] == 0.0, "the grammar allows only '[' first"
    assert [alt["logprob"] <= MASKED for alt in first["top_logprobs"][1:]] == [True, True]
    forced = [t for t in tokens if t["logprob"] == 0.0 and all(a["logprob"] <= MASKED for a in t["top_logprobs"][1:])]
    assert len(forced) >= 3, "keys and brackets the schema fixes are forced"
    features = body["cascade"]["features"]
    assert {"value_mean_logprob", "value_min_margin", "grounding"} <= set(features)


@pytest.mark.parametrize("sampling", list(SAMPLINGS.values()), ids=list(SAMPLINGS))
def test_the_readme_example_never_comes_back_as_a_confident_hallucinated_city(cluster: str, sampling: dict) -> None:
    """At temperature 0 and at the model's default sampling (seeded, so every run sends the same requests), an
    answer the cascade accepts names Paris and nothing else; anything else (another city, fahrenheit, the same
    call twice) is repaired, escalated or returned marked unverified."""
    body = chat(cluster, {**README_EXAMPLE, "model": "cascade", **sampling})
    report = body["cascade"]
    calls = body["choices"][0]["message"].get("tool_calls") or []
    cities = [json.loads(c["function"]["arguments"]).get("city", "") for c in calls]
    units = [json.loads(c["function"]["arguments"]).get("unit") for c in calls]
    if report["verified"]:
        assert cities and all("paris" in city.lower() for city in cities), (cities, report)
        assert set(units) == {"celsius"} and len(calls) == len({c["function"]["arguments"] for c in calls})
        assert report["verifier_scores"]["grounding"] >= 0.5


def test_the_readme_example_as_written_is_answered_by_the_slm_at_temperature_0(cluster: str) -> None:
    """The accept path too: the README's request (one call) is grounded and confident on the SLM alone."""
    report = chat(cluster, {**README_EXAMPLE, "model": "cascade", "temperature": 0})["cascade"]
    assert report["verified"] and report["tiers_tried"] == ["slm"], report
    assert report["confidence"] > 0.5 and report["verifier_scores"]["grounding"] == 1.0
