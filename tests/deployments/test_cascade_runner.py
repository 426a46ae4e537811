"""The cascade loop over scripted tiers (the tier client is the unit boundary; the cluster tests run it for real)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cluster.config import JudgeConfig, RouteConfig
from deployments.cascade import CascadeRunner, Tier, _repair_messages
from deployments.protocol import ChatRequest, GatewayError
from deployments.vllm_engine import ChatResult
from policies.cost import TierPrice
from policies.routing import TierCooldown
from policies.verifiers import Verdict

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
REQUEST = ChatRequest.model_validate({
    "model": "cascade", "messages": [{"role": "user", "content": "a number"}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}},
})


def reply(content: str, logprob: float = -0.01) -> ChatResult:
    body = {
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content},
                     "logprobs": {"content": [{"token": "7", "logprob": logprob, "top_logprobs": [
                         {"token": "7", "logprob": logprob}]}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10},
    }
    return ChatResult(body=body, engine_s=0.01)


class ScriptedTier:
    """Answers from a script; an exception in the script is raised, like a failing tier client."""

    def __init__(self, name: str, *script: ChatResult | Exception) -> None:
        self.name = name
        self.script = list(script)
        self.bodies: list[dict[str, Any]] = []

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        self.bodies.append(body)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def tier(backend: ScriptedTier, per_1m: float) -> Tier:
    return Tier(backend, TierPrice(per_1m, per_1m))


def run(runner: CascadeRunner, request: ChatRequest = REQUEST):
    return asyncio.run(runner.run(request))


def test_valid_answer_on_the_slm_never_reaches_the_fallback() -> None:
    slm, llm = ScriptedTier("slm", reply('{"n": 7}')), ScriptedTier("llm")
    result = run(CascadeRunner(RouteConfig(name="r"), [tier(slm, 1.0), tier(llm, 10.0)]))
    report = result.report()
    assert report["tiers_tried"] == ["slm"] and report["verified"] and report["escalation_reason"] is None
    assert llm.bodies == []
    assert report["cost_usd"] == pytest.approx(110 / 1e6)
    assert slm.bodies[0]["logprobs"] is True, "the cascade needs token logprobs from every attempt"


def test_invalid_answer_is_repaired_then_escalated_and_says_why() -> None:
    slm = ScriptedTier("slm", reply('{"n": "seven"}'), reply('{"m": 7}'))
    llm = ScriptedTier("llm", reply('{"n": 7}'))
    result = run(CascadeRunner(RouteConfig(name="r", max_repairs=1), [tier(slm, 1.0), tier(llm, 10.0)]))
    report = result.report()
    assert report["tiers_tried"] == ["slm", "slm", "llm"]
    assert report["escalation_reason"] == "schema_invalid" and report["final_tier"] == "llm"
    assert report["cost_usd"] == pytest.approx((110 + 110 + 1100) / 1e6), "failed attempts are paid for too"
    repair_messages = slm.bodies[1]["messages"]
    assert repair_messages[-2] == {"role": "assistant", "content": '{"n": "seven"}'}
    assert "rejected" in repair_messages[-1]["content"]
    assert llm.bodies[0]["messages"] == REQUEST.messages, "the next tier gets the original conversation"


def test_unreachable_fallback_returns_the_best_answer_marked_unverified() -> None:
    slm = ScriptedTier("slm", reply('{"n": "x"}'))
    llm = ScriptedTier("llm", GatewayError(503, "tier 'llm' unreachable", code="tier_unavailable"))
    result = run(CascadeRunner(RouteConfig(name="r", max_repairs=0), [tier(slm, 1.0), tier(llm, 10.0)]))
    report = result.report()
    assert report["final_tier"] == "slm" and not report["verified"]
    assert report["stop_reason"] == "tiers_exhausted"
    assert report["attempts"][1]["error"] == "tier 'llm' unreachable"


def test_tier_error_escalates_and_feeds_the_circuit_breaker() -> None:
    breaker = TierCooldown(failure_threshold=1, window_s=60, cooldown_s=60)
    slm = ScriptedTier("slm", GatewayError(504, "timeout", code="timeout"))
    llm = ScriptedTier("llm", reply('{"n": 1}'), reply('{"n": 2}'))
    runner = CascadeRunner(RouteConfig(name="r"), [Tier(slm, TierPrice(1, 1), breaker), tier(llm, 10.0)],
                           clock=lambda: 100.0)
    first = run(runner).report()
    assert first["escalation_reason"] == "tier_timeout" and first["final_tier"] == "llm"
    second = run(runner).report()
    assert second["tiers_tried"] == ["llm"], "a tier in cooldown is skipped"


class GatedTier(ScriptedTier):
    """A scripted tier whose answers wait until the test opens the gate: a probe that is still out."""

    def __init__(self, name: str, *script: ChatResult | Exception) -> None:
        super().__init__(name, *script)
        self.gate = asyncio.Event()

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        self.bodies.append(body)
        await self.gate.wait()
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


@pytest.mark.parametrize("probe_succeeds", [True, False])
def test_after_cooldown_exactly_one_probe_decides_while_concurrent_requests_go_elsewhere(probe_succeeds) -> None:
    now = [0.0]
    breaker = TierCooldown(failure_threshold=1, window_s=60, cooldown_s=10)
    breaker.record_error(0.0)  # open until t=10
    probe_answer = reply('{"n": 1}') if probe_succeeds else GatewayError(503, "down", code="tier_unavailable")
    slm = GatedTier("slm", probe_answer, reply('{"n": 2}'))
    llm = ScriptedTier("llm", *(reply('{"n": 3}') for _ in range(7)))
    runner = CascadeRunner(RouteConfig(name="r"), [Tier(slm, TierPrice(1, 1), breaker), tier(llm, 10.0)],
                           clock=lambda: now[0])

    async def scenario() -> tuple[list, list]:
        now[0] = 10.0  # the cooldown is over
        concurrent = [asyncio.create_task(runner.run(REQUEST)) for _ in range(6)]
        for _ in range(1000):  # let every request run as far as it can while the probe is out
            await asyncio.sleep(0)
        assert (len(slm.bodies), len(llm.bodies)) == (1, 5), "one probe reached the tier, the rest went elsewhere"
        slm.gate.set()
        results = await asyncio.gather(*concurrent)
        now[0] = 11.0
        return [r.report() for r in results], (await runner.run(REQUEST)).report()

    reports, after = asyncio.run(scenario())
    assert sorted(r["tiers_tried"][0] for r in reports) == ["llm"] * 5 + ["slm"]
    if probe_succeeds:
        assert after["tiers_tried"] == ["slm"], "the probe's success closed the breaker"
    else:
        assert after["tiers_tried"] == ["llm"] and len(slm.bodies) == 1, "the probe's error opened it again"


def test_a_refused_provider_key_escalates_with_its_own_reason_and_counts_for_the_breaker() -> None:
    breaker = TierCooldown(failure_threshold=2, window_s=60, cooldown_s=60)
    refused = GatewayError(502, "tier 'remote' refused this cluster's API key (HTTP 401)", code="tier_auth_refused")
    remote = ScriptedTier("remote", refused, refused)
    local = ScriptedTier("local", reply('{"n": 1}'), reply('{"n": 2}'))
    runner = CascadeRunner(RouteConfig(name="r"), [Tier(remote, TierPrice(1, 1), breaker), tier(local, 10.0)],
                           clock=lambda: 5.0)
    report = run(runner).report()
    assert report["escalation_reason"] == "tier_auth_refused" and report["final_tier"] == "local"
    assert "refused this cluster's API key" in report["attempts"][0]["error"]
    run(runner)
    assert not breaker.available(5.0), "two refusals in a row opened the breaker"


def test_client_errors_from_a_tier_are_not_escalated() -> None:
    slm = ScriptedTier("slm", GatewayError(400, "prompt too long"))
    with pytest.raises(GatewayError, match="prompt too long"):
        run(CascadeRunner(RouteConfig(name="r"), [tier(slm, 1.0), tier(ScriptedTier("llm"), 10.0)]))


def test_budget_cap_stops_before_an_unaffordable_tier() -> None:
    slm, llm = ScriptedTier("slm", reply('{"n": "x"}')), ScriptedTier("llm")
    route = RouteConfig(name="r", max_repairs=0, budget_usd=200 / 1e6)
    report = run(CascadeRunner(route, [tier(slm, 1.0), tier(llm, 10.0)])).report()
    assert report["stop_reason"] == "budget_exhausted" and llm.bodies == []


def test_low_confidence_escalates_when_the_threshold_demands_it() -> None:
    slm, llm = ScriptedTier("slm", reply('{"n": 7}', logprob=-3.0)), ScriptedTier("llm", reply('{"n": 7}'))
    report = run(CascadeRunner(RouteConfig(name="r", threshold=0.5), [tier(slm, 1), tier(llm, 10)])).report()
    assert report["escalation_reason"] == "low_confidence" and report["final_tier"] == "llm"


class SlowJudge:
    async def verify(self, body: dict[str, Any], candidate: Any) -> Verdict:
        await asyncio.sleep(5)
        return Verdict("judge", 1.0, True)


class BrokenJudge:
    async def verify(self, body: dict[str, Any], candidate: Any) -> Verdict:
        raise RuntimeError("judge replica died")


@pytest.mark.parametrize("judge", [SlowJudge(), BrokenJudge()])
def test_judge_outage_counts_as_unverified_and_escalates(judge) -> None:
    route = RouteConfig(name="r", judge=JudgeConfig(tier="slm", timeout_s=0.05))
    slm, llm = ScriptedTier("slm", reply('{"n": 7}')), ScriptedTier("llm", reply('{"n": 8}'))
    report = run(CascadeRunner(route, [tier(slm, 1), tier(llm, 10)], judge=judge)).report()
    assert report["escalation_reason"] == "unverified"
    assert report["tiers_tried"] == ["slm", "llm"]


def test_a_later_4xx_fails_that_attempt_not_the_request() -> None:
    """A repair turn can push a prompt past a smaller tier's window: the earlier answer still comes back."""
    slm = ScriptedTier("slm", reply('{"n": "x"}'))
    llm = ScriptedTier("llm", GatewayError(400, "prompt too long for this tier"))
    report = run(CascadeRunner(RouteConfig(name="r", max_repairs=0), [tier(slm, 1), tier(llm, 10)])).report()
    assert report["final_tier"] == "slm" and report["stop_reason"] == "tiers_exhausted"
    assert report["attempts"][1]["error"] == "prompt too long for this tier"


class RecordingJudge:
    def __init__(self) -> None:
        self.seen: list[list[dict]] = []

    async def verify(self, body: dict[str, Any], candidate: Any) -> Verdict:
        self.seen.append(body["messages"])
        return Verdict("judge", 1.0, True)


def test_judge_reads_the_clients_conversation_not_the_repair_turn() -> None:
    judge = RecordingJudge()
    slm = ScriptedTier("slm", reply('{"n": "x"}'), reply('{"n": 7}'))
    route = RouteConfig(name="r", max_repairs=1, judge=JudgeConfig(tier="slm"))
    report = run(CascadeRunner(route, [tier(slm, 1), tier(ScriptedTier("llm"), 10)], judge=judge)).report()
    assert report["tiers_tried"] == ["slm", "slm"] and report["verified"]
    assert judge.seen == [REQUEST.messages]


def test_a_repair_of_an_empty_answer_does_not_crash() -> None:
    """Schemathesis found it: max_tokens 1 gave no content and no tool_calls, and the repair raised (a 500)."""
    failed = Verdict(name="schema", score=0.0, passed=False, reasons=("not JSON",))
    repaired = _repair_messages([{"role": "user", "content": "hi"}], {"role": "assistant", "content": None},
                                [failed])
    assert repaired[1] == {"role": "assistant", "content": ""} and "not JSON" in repaired[2]["content"]


# ---- grounding and the fitted confidence ------------------------------------------------------------------

WEATHER_REQUEST = ChatRequest.model_validate({
    "model": "cascade", "messages": [{"role": "user", "content": "What is the weather in Paris, in celsius?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}}}],
    "tool_choice": "required",
})


def city_call(city: str) -> ChatResult:
    arguments = json.dumps({"city": city, "unit": "celsius"})
    body = {
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "c", "type": "function",
                            "function": {"name": "get_weather", "arguments": arguments}}]},
            "logprobs": None}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10},
    }
    return ChatResult(body=body, engine_s=0.01)


def test_a_grounding_veto_repairs_with_the_unsupported_value_named() -> None:
    slm = ScriptedTier("slm", city_call("Dijon"), city_call("Paris"))
    result = run(CascadeRunner(RouteConfig(name="r", grounding="veto"), [tier(slm, 1.0)]), WEATHER_REQUEST)
    report = result.report()
    assert report["tiers_tried"] == ["slm", "slm"] and report["verified"]
    assert report["attempts"][0]["reason"] == "verifier_failed"
    assert '"Dijon" does not appear in the request' in slm.bodies[1]["messages"][-1]["content"]
    assert report["features"]["grounding"] == 1.0 and report["verifier_scores"]["grounding"] == 1.0


def test_an_ungrounded_answer_is_never_returned_as_verified_under_a_veto() -> None:
    slm = ScriptedTier("slm", city_call("Dijon"), city_call("Lyon"))
    llm = ScriptedTier("llm", city_call("Nice"), city_call("Nice"))
    report = run(CascadeRunner(RouteConfig(name="r", grounding="veto"), [tier(slm, 1.0), tier(llm, 10.0)]),
                 WEATHER_REQUEST).report()
    assert report["tiers_tried"] == ["slm", "slm", "llm", "llm"]
    assert not report["verified"] and report["stop_reason"] == "tiers_exhausted"


def test_as_a_feature_grounding_feeds_the_fitted_confidence_without_gating() -> None:
    model = {"features": ["grounding"], "weights": [4.0], "means": [0.75], "scales": [0.25], "bias": 0.0}
    route = RouteConfig(name="r", grounding="feature", confidence_policy="fitted", confidence_model=model,
                        threshold=0.5)
    slm, llm = ScriptedTier("slm", city_call("Dijon")), ScriptedTier("llm", city_call("Paris"))
    report = run(CascadeRunner(route, [tier(slm, 1.0), tier(llm, 10.0)]), WEATHER_REQUEST).report()
    # grounding 0.5 -> logistic(4 * (0.5 - 0.75) / 0.25) = logistic(-4): low confidence, escalated, not repaired
    assert report["attempts"][0]["reason"] == "low_confidence"
    assert report["attempts"][0]["confidence"] == pytest.approx(0.018, abs=1e-3)
    assert report["tiers_tried"] == ["slm", "llm"] and report["final_tier"] == "llm"
    assert "grounding" not in report["verifier_scores"]


def test_a_fitted_model_escalates_tool_calls_only_on_its_score() -> None:
    """It was fitted on tool calls: free text and JSON answers on its route escalate on checks, not on it."""
    model = {"features": ["mean_logprob"], "weights": [1.0], "means": [0.0], "scales": [1.0], "bias": -5.0}
    route = RouteConfig(name="r", confidence_policy="fitted", confidence_model=model, threshold=0.9, grounding="veto")
    free_text = ChatRequest.model_validate({"model": "cascade", "messages": [{"role": "user", "content": "Hi"}]})
    slm, llm = ScriptedTier("slm", reply("Hello!")), ScriptedTier("llm")
    report = run(CascadeRunner(route, [tier(slm, 1.0), tier(llm, 10.0)]), free_text).report()
    assert report["tiers_tried"] == ["slm"] and report["confidence"] < 0.9
    slm, llm = ScriptedTier("slm", reply('{"n": 8}')), ScriptedTier("llm")  # 8 is nowhere in "a number"
    report = run(CascadeRunner(route, [tier(slm, 1.0), tier(llm, 10.0)])).report()
    assert report["tiers_tried"] == ["slm"] and report["verified"], "a JSON answer is not vetoed for grounding"
    assert report["features"]["grounding"] == 0.0
    slm, llm = ScriptedTier("slm", city_call("Paris")), ScriptedTier("llm", city_call("Paris"))
    report = run(CascadeRunner(route, [tier(slm, 1.0), tier(llm, 10.0)]), WEATHER_REQUEST).report()
    assert report["tiers_tried"] == ["slm", "llm"] and report["escalation_reason"] == "low_confidence"


def test_a_grounding_crash_leaves_the_features_out_and_never_fails_the_request(monkeypatch) -> None:
    from policies.grounding import GroundingVerifier

    def crash(*_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(GroundingVerifier, "report", crash)
    slm = ScriptedTier("slm", city_call("Paris"))
    report = run(CascadeRunner(RouteConfig(name="r", grounding="veto"), [tier(slm, 1.0)]), WEATHER_REQUEST).report()
    assert "grounding" not in report["features"] and report["verifier_scores"]["grounding"] is None
    assert report["stop_reason"] == "tiers_exhausted" and not report["verified"], "unverified, never accepted"
