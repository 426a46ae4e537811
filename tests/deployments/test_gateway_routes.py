"""Which runner serves a request, without Ray: routes, tiers by name, adapters, and the ledger's adapter changes."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace

from cluster.config import CascadeConfig, load_config
from deployments.cascade import Tier
from deployments.gateway_routes import RouteTable
from deployments.protocol import ChatRequest, GatewayError
from deployments.tier_client import AdapterClient
from policies.cost import TierPrice


class NamedTier:
    """A tier backend that is never called: the table only builds runners over it."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def chat(self, body: dict[str, Any]) -> Any:
        raise AssertionError("the table builds runners; it runs nothing")


def config() -> CascadeConfig:
    data = load_config().model_dump(mode="json")
    data["tiers"][0]["lora"] = {"max_loras": 2}
    data["routes"] += [{"name": "strict", "tiers": ["slm", "fallback"], "threshold": 1.0},
                       {"name": "adapted", "tiers": ["slm", "fallback"], "adapter": "alpha"}]
    return CascadeConfig.model_validate(data)


class Ledger:
    """The books' serving adapters, as a test sets them."""

    def __init__(self) -> None:
        self.generation, self.serving = 0, {}

    def __call__(self) -> tuple[int, dict[str, str]]:
        return self.generation, dict(self.serving)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def table(ledger: Ledger) -> RouteTable:
    tiers = {name: Tier(NamedTier(name), TierPrice(1.0, 1.0)) for name in ("slm", "fallback")}
    return RouteTable(config(), tiers, {}, trace.get_tracer(__name__), ledger)


def request(**fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": "Hi"}], **fields})


def test_model_cascade_runs_the_header_s_route_then_the_body_s_then_the_default(table: RouteTable) -> None:
    assert table.runner(request(route="strict"), "adapted").route.name == "adapted"
    assert table.runner(request(route="strict"), None).route.name == "strict"
    assert table.runner(request(), None).route.name == "default"
    assert [tier.name for tier in table.runner(request(), None).tiers] == ["slm", "fallback"]


def test_an_unknown_route_is_a_400_that_lists_the_known(table: RouteTable) -> None:
    with pytest.raises(GatewayError) as raised:
        table.runner(request(), "nope")
    assert (raised.value.status, raised.value.param, raised.value.code) == (400, "route", "route_not_found")
    assert raised.value.message.endswith("known: default, strict, adapted")


def test_a_tier_by_name_runs_alone_and_is_never_repaired(table: RouteTable) -> None:
    runner = table.runner(request(model="fallback"), "strict")
    assert runner is table.single_tier["fallback"], "one runner per tier, shared by its requests"
    assert runner.route.name == "fallback" and runner.route.max_repairs == 0
    assert [tier.name for tier in runner.tiers] == ["fallback"]


def test_a_tier_alone_is_scored_as_the_default_route_scores_it_when_it_starts_there(table: RouteTable) -> None:
    default = table.config.route("default")
    assert default.confidence_policy == "fitted", "the embedded default scores with its fitted model"
    slm = table.one_tier_route("slm")
    assert (slm.confidence_policy, slm.confidence_model) == (default.confidence_policy, default.confidence_model)
    assert table.one_tier_route("fallback").confidence_policy == "verifier_gated", "the route never starts there"


def test_a_tier_s_adapter_gets_a_runner_of_its_own_over_the_same_breaker(table: RouteTable) -> None:
    runner = table.runner(request(model="slm:beta"), None)
    backend = runner.tiers[0].backend
    assert isinstance(backend, AdapterClient) and backend.adapter == "beta"
    assert runner.tiers[0].cooldown is table.tiers["slm"].cooldown


def test_a_route_runs_the_ledger_s_adapter_once_its_generation_changes(table: RouteTable, ledger: Ledger) -> None:
    assert table.adapter("adapted") == "alpha" and table.adapter("default") is None
    before = table.runner(request(), None)
    ledger.serving = {"default": "v2"}
    assert table.runner(request(), None) is before, "same generation: nothing is rebuilt"
    ledger.generation = 1
    after = table.runner(request(), None)
    assert after is not before and table.adapter("default") == "v2"
    assert after.tiers[0].backend.adapter == "v2" and after.tiers[1].name == "fallback"
    assert table.runner(request(), "adapted") is table.routes["adapted"], "an unchanged route keeps its runner"
