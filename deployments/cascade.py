"""One request through the cascade: attempt a tier, verify, score, and let the policy say what next.

This is the loop that joins the pieces; every decision in it is made by `policies/` (verifiers, confidence,
escalation, start tier, cooldowns, cost). Tiers and the judge are injected as small async clients, so the
loop runs the same over Ray handles (vLLM tiers), HTTP (remote tiers) or, in unit tests, plain objects.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace

from cluster.config import RouteConfig
from cluster.telemetry import semconv
from deployments.protocol import AUTH_REFUSED_CODE, ChatRequest, GatewayError
from deployments.vllm_engine import ChatResult
from policies.answer_features import answer_features
from policies.confidence import ConfidenceSignals, TokenUncertainty, build_confidence_policy
from policies.cost import TierPrice, attempt_cost
from policies.escalation import (
    Action,
    AttemptOutcome,
    Decision,
    ErrorKind,
    EscalationPolicy,
    RoutePolicy,
    best_attempt,
)
from policies.grounding import GroundingReport, GroundingVerifier
from policies.routing import DIFFICULTY_PREDICTORS, TierCooldown, choose_start_tier, cooling_tiers, request_features
from policies.tool_choice import forced_tools
from policies.verifiers import Candidate, SchemaVerifier, ToolCallVerifier, Verdict, Verifier, safe_verify

# Alternatives asked of a tier per token: the confidence features need the top two (the margin); vLLM detokenises
# every alternative it returns, which costs CPU on the engine's side, so no more than a few.
TOP_LOGPROBS = 3
CHARS_PER_TOKEN = 4  # the gateway has no tokenizer; prompt length for pre-routing is estimated from characters


class ChatBackend(Protocol):
    name: str

    async def chat(self, body: dict[str, Any]) -> ChatResult: ...


class ModelVerifier(Protocol):
    async def verify(self, body: dict[str, Any], candidate: Any) -> Verdict: ...


@dataclass
class Tier:
    """A tier as the cascade sees it: how to call it, what it costs, and its circuit breaker."""

    backend: ChatBackend
    price: TierPrice
    cooldown: TierCooldown = field(default_factory=TierCooldown)

    @property
    def name(self) -> str:
        return self.backend.name


@dataclass(frozen=True)
class Attempt:
    tier: str
    outcome: AttemptOutcome
    result: ChatResult | None
    error: GatewayError | None
    cost_usd: float
    latency_s: float
    decision: Decision
    features: dict[str, float] = field(default_factory=dict)  # what the confidence policy scored


@dataclass(frozen=True)
class CascadeResult:
    attempts: tuple[Attempt, ...]
    final: Attempt

    @property
    def accepted(self) -> bool:
        return self.attempts[-1].decision.action is Action.ACCEPT

    @property
    def escalation_reason(self) -> str | None:
        """Why the cascade left the tier it started on; None when it did not."""
        start = self.attempts[0].outcome.tier
        for attempt in self.attempts:
            if attempt.decision.action in (Action.ESCALATE, Action.RETURN_BEST) and attempt.outcome.tier == start:
                return str(attempt.decision.trigger or attempt.decision.reason)
        return None

    def report(self) -> dict[str, Any]:
        """The `cascade` object of the response body."""
        final = self.final
        return {
            "tiers_tried": [attempt.tier for attempt in self.attempts],
            "final_tier": final.tier,
            "confidence": round(final.outcome.confidence, 4),
            "features": {name: round(value, 4) for name, value in final.features.items()},
            "verifier_scores": {v.name: v.score for v in final.outcome.verdicts},
            "verified": self.accepted,
            "escalation_reason": self.escalation_reason,
            "stop_reason": str(self.attempts[-1].decision.reason),
            "cost_usd": sum(attempt.cost_usd for attempt in self.attempts),
            "attempts": [
                {
                    "tier": a.tier,
                    "action": str(a.decision.action),
                    "reason": str(a.decision.reason),
                    "confidence": round(a.outcome.confidence, 4),
                    "cost_usd": a.cost_usd,
                    "latency_ms": round(a.latency_s * 1000, 1),
                    "error": a.error.message if a.error else None,
                }
                for a in self.attempts
            ],
        }


def grounding_verifier(request: ChatRequest) -> GroundingVerifier:
    """The grounding check of a request's answers: against its conversation, its tools or response schema."""
    return GroundingVerifier(request.messages, request.tool_definitions, request.response_schema)


def local_verifiers(request: ChatRequest) -> list[Verifier]:
    """The deterministic form checks a request implies; they run in the gateway (no handle hop)."""
    verifiers: list[Verifier] = []
    if request.response_schema is not None:
        verifiers.append(SchemaVerifier(request.response_schema))
    elif request.response_format is not None and request.response_format.type == "json_object":
        verifiers.append(SchemaVerifier({"type": "object"}))
    if request.tools:
        verifiers.append(ToolCallVerifier(request.tool_definitions,
                                          require_call=forced_tools(request.tier_body("")) is not None))
    return verifiers


def _signals(result: ChatResult, verdicts: Sequence[Verdict], grounding: GroundingReport | None) -> ConfidenceSignals:
    """What the confidence policy scores: token uncertainty, the verdicts and the answer's named features."""
    tokens = ((result.body["choices"][0].get("logprobs") or {}).get("content")) or []
    features = answer_features(tokens, verdicts, grounding, usage=result.body.get("usage"))
    uncertainty = TokenUncertainty(*(features.get(n) for n in ("mean_logprob", "min_logprob", "decision_entropy")))
    return ConfidenceSignals(uncertainty, tuple(verdicts), features)


def _repair_messages(messages: list[dict[str, Any]], message: dict[str, Any], verdicts: Sequence[Verdict]) -> list:
    calls = message.get("tool_calls") or []  # an empty answer (max_tokens reached at once) has neither
    answer = message.get("content") or (
        json.dumps([{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in calls])
        if calls else ""
    )
    reasons = "; ".join(reason for v in verdicts if not v.passed for reason in v.reasons)
    fix = (f"That answer was rejected: {reasons}. Answer again, following the required format exactly and using "
           "only values that the conversation gives.")
    return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": fix}]


class CascadeRunner:
    """Runs one route's cascade; one instance per gateway replica and route, shared by its requests."""

    def __init__(
        self,
        route: RouteConfig,
        tiers: Sequence[Tier],
        judge: ModelVerifier | None = None,
        tracer: trace.Tracer | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.route = route
        self.tiers = list(tiers)
        self.judge = judge
        self.policy = EscalationPolicy(
            RoutePolicy(route.threshold, route.max_repairs, route.budget_usd, max_tiers=len(self.tiers))
        )
        # A fitted model scores the kind of answer it was fitted on, tool calls: their arguments can be grounded
        # and their value tokens read. Other answers on such a route (JSON, free text) escalate on what can be
        # checked (verifiers, tier errors), not on a score the model never learned for them.
        self.unscored_policy = self.policy if route.confidence_model is None else EscalationPolicy(
            RoutePolicy(0.0, route.max_repairs, route.budget_usd, max_tiers=len(self.tiers)))
        self.confidence = build_confidence_policy(
            route.confidence_policy, route.confidence_model.parameters() if route.confidence_model else None
        )
        self.predictor = DIFFICULTY_PREDICTORS[route.difficulty.predictor]()
        self.tracer = tracer or trace.get_tracer(__name__)
        self.clock = clock

    def start_tier(self, request: ChatRequest) -> int:
        prompt_chars = sum(len(str(m.get("content") or "")) for m in request.messages)
        features = request_features(
            prompt_chars // CHARS_PER_TOKEN,
            request.tool_definitions,
            request.response_schema,
        )
        available = [i for i, t in enumerate(self.tiers) if t.cooldown.available(self.clock())]
        start = choose_start_tier(features, self.predictor, self.route.difficulty.hard_threshold, available)
        return 0 if start is None else start

    async def run(self, request: ChatRequest) -> CascadeResult:
        verifiers = local_verifiers(request)
        policy = self.policy if request.tools else self.unscored_policy
        grounding = None if self.route.grounding == "off" else grounding_verifier(request)
        if grounding is not None and self.route.grounding == "veto" and request.tools:
            verifiers.append(grounding)  # a tool call acts on the world; a JSON answer may be made-up content
        messages = list(request.messages)
        index, repairs, spent = self.start_tier(request), 0, 0.0
        attempts: list[Attempt] = []
        while True:
            top = max(TOP_LOGPROBS, (request.model_extra or {}).get("top_logprobs") or 0)
            body = {**request.tier_body(self.tiers[index].name), "messages": messages,
                    "logprobs": True, "top_logprobs": top, "stream": False}
            attempt = await self._attempt(index, body, policy, verifiers, grounding, spent, repairs,
                                          first=not attempts, original_messages=request.messages)
            attempts.append(attempt)
            spent += attempt.cost_usd
            decision = attempt.decision
            if decision.action is Action.ACCEPT:
                return CascadeResult(tuple(attempts), attempt)
            if decision.action is Action.RETURN_BEST:
                best = best_attempt([a.outcome for a in attempts])
                return CascadeResult(tuple(attempts), next(a for a in reversed(attempts) if a.outcome is best))
            if decision.action is Action.REPAIR:
                if attempt.result is None:  # the policy repairs failed verdicts, which only an answer has
                    raise RuntimeError(f"a repair was decided for an attempt on tier {attempt.tier!r} with no answer")
                repairs += 1
                messages = _repair_messages(messages, attempt.result.body["choices"][0]["message"],
                                            attempt.outcome.verdicts)
            else:
                if decision.target_tier is None:  # only return_best has no target, and it returned above
                    raise RuntimeError(f"an escalation from tier {attempt.tier!r} names no tier to escalate to")
                index, repairs, messages = decision.target_tier, 0, list(request.messages)

    async def _attempt(
        self,
        index: int,
        body: dict[str, Any],
        policy: EscalationPolicy,
        verifiers: list[Verifier],
        grounding: GroundingVerifier | None,
        spent: float,
        repairs: int,
        *,
        first: bool,
        original_messages: list[dict[str, Any]],
    ) -> Attempt:
        tier = self.tiers[index]
        with self.tracer.start_as_current_span(semconv.SPAN_TIER_ATTEMPT) as span:
            span.set_attributes({semconv.CASCADE_TIER: tier.name, semconv.CASCADE_TIER_INDEX: index,
                                 semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_REQUEST_MODEL: tier.name})
            started = time.perf_counter()
            result, error = None, None
            if not tier.cooldown.allow(self.clock()):  # half-open, its one probe out: this request goes elsewhere
                error = GatewayError(503, f"tier {tier.name!r} is cooling down", code="tier_cooling_down",
                                     retry_after_s=1)
                span.set_attribute(semconv.ERROR_TYPE, error.code)
            else:
                try:
                    result = await tier.backend.chat(body)
                    tier.cooldown.record_success(self.clock())
                except GatewayError as failure:
                    if first and failure.status < 500 and failure.status != 429:
                        raise  # the client's request is at fault, not the tier: no other tier will do better
                    # Later, a 4xx comes from what the cascade added (a repair turn past the context window)
                    # or a smaller tier: the attempt failed, the answers so far still stand.
                    tier.cooldown.record_error(self.clock())
                    error = failure
                    span.set_attribute(semconv.ERROR_TYPE, failure.code or str(failure.status))
            latency = time.perf_counter() - started
            cost, confidence, features = 0.0, 0.0, {}
            verdicts: list[Verdict] = []
            if result is not None:
                usage = result.body.get("usage") or {}
                cost = attempt_cost(tier.price, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
                # The judge reads the client's conversation, not a repair turn.
                verdicts = await self._verify({**body, "messages": original_messages}, result, verifiers)
                report = _grounding_report(grounding, result)
                signals = _signals(result, verdicts, report)
                confidence, features = self.confidence.score(signals), dict(signals.features)
                span.set_attributes({
                    semconv.GEN_AI_RESPONSE_MODEL: result.body.get("model", tier.name),
                    semconv.GEN_AI_USAGE_INPUT_TOKENS: usage.get("prompt_tokens", 0),
                    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: usage.get("completion_tokens", 0),
                    semconv.GEN_AI_RESPONSE_FINISH_REASONS: [c.get("finish_reason") or "" for c in
                                                             result.body["choices"]],
                })
            outcome = AttemptOutcome(
                tier=index,
                error=None if error is None else _error_kind(error),
                verdicts=tuple(verdicts),
                confidence=confidence,
                cost_usd=spent + cost,
                repairs_used=repairs,
            )
            decision = policy.decide(
                outcome, cooling_tiers([t.cooldown for t in self.tiers], self.clock()), self._estimates(result)
            )
            if result is not None and result.energy_j is not None:  # None: a remote provider's, unknown
                span.set_attributes({semconv.CASCADE_ENERGY_J: result.energy_j,
                                     semconv.CASCADE_ENERGY_SOURCE: result.energy_source or "model"})
            span.set_attributes(_verdict_attributes(verdicts) | {
                semconv.CASCADE_COST_USD: cost,
                semconv.CASCADE_CONFIDENCE: confidence,
                "cascade.decision": str(decision.action),
                semconv.CASCADE_ESCALATION_REASON: str(decision.trigger or ""),
            })
            return Attempt(tier.name, outcome, result, error, cost, latency, decision, features)

    async def _verify(self, body: dict[str, Any], result: ChatResult, verifiers: list[Verifier]) -> list[Verdict]:
        candidate = _candidate(result)
        verdicts = []
        for verifier in verifiers:
            with self.tracer.start_as_current_span(semconv.SPAN_VERIFY, attributes={"cascade.verifier": verifier.name}):
                verdicts.append(safe_verify(verifier, candidate))
        if self.judge is not None and all(v.passed for v in verdicts):
            verdicts.append(await self._judge(self.judge, body, candidate))
        return verdicts

    async def _judge(self, judge: ModelVerifier, body: dict[str, Any], candidate: Any) -> Verdict:
        """The model-based verifier, bounded in time; a crash or timeout means unverified, never a lost request."""
        config = self.route.judge
        if config is None:
            raise RuntimeError(f"route {self.route.name!r} was given a judge but has no `judge` config")
        name = config.method
        with self.tracer.start_as_current_span(semconv.SPAN_VERIFY, attributes={"cascade.verifier": name}):
            try:
                return await asyncio.wait_for(judge.verify(body, candidate), config.timeout_s)
            except TimeoutError:
                return Verdict.unverified(name, f"no verdict within {config.timeout_s:g} s")
            except Exception as error:  # noqa: BLE001 - a verifier outage degrades to unverified by design
                return Verdict.unverified(name, f"verifier failed: {type(error).__name__}")

    def _estimates(self, result: ChatResult | None) -> list[float]:
        """What an attempt on each tier would cost, from this attempt's token counts."""
        usage = (result.body.get("usage") if result is not None else None) or {}
        tokens_in, tokens_out = usage.get("prompt_tokens", 0), max(usage.get("completion_tokens", 0), 1)
        return [attempt_cost(t.price, tokens_in, tokens_out) for t in self.tiers]


def _error_kind(error: GatewayError) -> ErrorKind:
    if error.status == 504:
        return ErrorKind.TIMEOUT
    return ErrorKind.AUTH_REFUSED if error.code == AUTH_REFUSED_CODE else ErrorKind.ERROR


def _grounding_report(grounding: GroundingVerifier | None, result: ChatResult) -> GroundingReport | None:
    """The answer's grounding for the confidence features; a crash means no grounding features, never a 500
    (as a veto the same check runs through ``safe_verify``)."""
    if grounding is None:
        return None
    try:
        return grounding.report(_candidate(result))
    except Exception:  # noqa: BLE001 - a feature we cannot compute is left out, by design
        return None


def _candidate(result: ChatResult) -> Candidate:
    return Candidate.from_message(result.body["choices"][0]["message"])


def _verdict_attributes(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for verdict in verdicts:
        if verdict.name == SchemaVerifier.name:
            attributes[semconv.CASCADE_SCHEMA_VALID] = verdict.passed
        elif verdict.name == ToolCallVerifier.name:
            attributes[semconv.CASCADE_TOOL_CALL_EXECUTABLE] = verdict.passed
    return attributes
