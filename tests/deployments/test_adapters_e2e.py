"""LoRA adapters on the real cluster: served by name, routed to the replica holding them, run by a route."""

from __future__ import annotations

import httpx
import pytest
from auth_keys import ADMIN_HEADERS

pytestmark = pytest.mark.cluster

PROMPT = [{"role": "user", "content": "Name three colours."}]


def ask(cluster: str, model: str, route: str | None = None, max_tokens: int = 16) -> httpx.Response:
    headers = {**ADMIN_HEADERS, **({"x-cascade-route": route} if route else {})}
    return httpx.post(f"{cluster}/v1/chat/completions", headers=headers, timeout=300,
                      json={"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0})


def content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_models_list_the_adapters(cluster: str) -> None:
    ids = {m["id"] for m in httpx.get(f"{cluster}/v1/models", headers=ADMIN_HEADERS, timeout=30).json()["data"]}
    assert {"cascade", "slm", "fallback", "slm:alpha", "slm:beta"} <= ids
    assert not any(i.startswith("fallback:") for i in ids), "the fallback tier has no LoRA"


def test_an_adapter_changes_the_answer_and_a_route_runs_its_adapter(cluster: str) -> None:
    base, alpha, beta = (content(ask(cluster, model)) for model in ("slm", "slm:alpha", "slm:beta"))
    assert alpha != base and beta != base and alpha != beta
    assert content(ask(cluster, "slm:alpha")) == alpha, "greedy decoding with one adapter is repeatable"
    routed = ask(cluster, "cascade", route="adapted")
    # threshold 0 and no schema: nothing to verify, so only a tier error could escalate
    assert routed.status_code == 200 and routed.json()["cascade"]["tiers_tried"] == ["slm"]
    assert content(routed) == alpha, "route `adapted` answers with adapter alpha"


@pytest.mark.parametrize(("model", "status"), [("slm:nope", 404), ("slm:Bad Name", 404), ("fallback:alpha", 404)])
def test_unknown_adapters_are_refused_and_the_tier_keeps_serving(cluster: str, model: str, status: int) -> None:
    refused = ask(cluster, model)
    assert refused.status_code == status and refused.json()["error"]["param"] == "model"
    assert ask(cluster, "slm").status_code == 200


def test_requests_for_an_adapter_stay_on_the_replica_that_holds_it(cluster: str, deployment_handle) -> None:
    for _ in range(6):
        for adapter in ("alpha", "beta"):
            assert ask(cluster, f"slm:{adapter}", max_tokens=2).status_code == 200
    tier = deployment_handle("tier-slm")
    held: dict[str, list[str]] = {}
    for _ in range(40):  # the router spreads these plain calls over both replicas
        answer = tier.adapters.remote().result()
        held[answer["replica"]] = answer["adapters"]
    assert len(held) == 2, f"both SLM replicas answered: {held}"
    for adapter in ("alpha", "beta"):
        holders = [replica for replica, adapters in held.items() if adapter in adapters]
        assert len(holders) == 1, f"{adapter} loaded once, on one replica, despite 6 requests: {held}"
