"""What to do after an attempt: accept it, repair it on the same tier, escalate, or stop.

Order of the rules (each reason is a metrics label, so the order is part of the contract):
1. diagnose the attempt: tier error/timeout, then a failed verifier, then an unverified verdict,
   then confidence below the route threshold; nothing wrong -> accept;
2. a verifier failure is repaired on the same tier while repairs remain (the verifier's reasons
   tell the model what to fix, which is far cheaper than a bigger model); anything else, or no
   repairs left, escalates to the next tier that is not cooling down;
3. no tier left -> return the best attempt so far (tiers_exhausted); the next attempt would
   exceed the request budget -> return the best attempt so far (budget_exhausted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from policies.cost import within_budget
from policies.routing import next_available_tier
from policies.verifiers import SchemaVerifier, ToolCallVerifier, Verdict, all_verified, any_failed

__all__ = [
    "Action",
    "AttemptOutcome",
    "Decision",
    "ErrorKind",
    "EscalationPolicy",
    "EscalationReason",
    "RoutePolicy",
    "best_attempt",
    "diagnose",
]


class ErrorKind(StrEnum):
    ERROR = "error"
    TIMEOUT = "timeout"
    AUTH_REFUSED = "auth_refused"  # a remote provider refused the cluster's own API key


class Action(StrEnum):
    ACCEPT = "accept"
    REPAIR = "repair"
    ESCALATE = "escalate"
    RETURN_BEST = "return_best"


class EscalationReason(StrEnum):
    CONFIDENT = "confident"
    LOW_CONFIDENCE = "low_confidence"
    SCHEMA_INVALID = "schema_invalid"
    TOOL_CALL_INVALID = "tool_call_invalid"
    VERIFIER_FAILED = "verifier_failed"  # a verifier other than schema/tool calls failed
    UNVERIFIED = "unverified"
    TIER_ERROR = "tier_error"
    TIER_TIMEOUT = "tier_timeout"
    TIER_AUTH_REFUSED = "tier_auth_refused"
    BUDGET_EXHAUSTED = "budget_exhausted"
    TIERS_EXHAUSTED = "tiers_exhausted"


_ERROR_REASONS = {
    ErrorKind.ERROR: EscalationReason.TIER_ERROR,
    ErrorKind.TIMEOUT: EscalationReason.TIER_TIMEOUT,
    ErrorKind.AUTH_REFUSED: EscalationReason.TIER_AUTH_REFUSED,
}
_VERIFIER_REASONS = {
    SchemaVerifier.name: EscalationReason.SCHEMA_INVALID,
    ToolCallVerifier.name: EscalationReason.TOOL_CALL_INVALID,
}
_REPAIRABLE = frozenset({*_VERIFIER_REASONS.values(), EscalationReason.VERIFIER_FAILED})


@dataclass(frozen=True)
class AttemptOutcome:
    """One finished attempt, as the escalation policy sees it."""

    tier: int
    error: ErrorKind | None = None
    verdicts: tuple[Verdict, ...] = ()
    confidence: float = 0.0  # ConfidencePolicy.score of the answer; ignored when error is set
    cost_usd: float = 0.0  # spent on the whole request so far, this attempt included
    repairs_used: int = 0  # repairs already made on this tier; the caller resets it on escalation

    def __post_init__(self) -> None:
        if self.tier < 0 or self.repairs_used < 0:
            raise ValueError("tier and repairs_used must be non-negative")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")
        if not (math.isfinite(self.cost_usd) and self.cost_usd >= 0):
            raise ValueError(f"cost_usd must be finite and non-negative, got {self.cost_usd}")


@dataclass(frozen=True)
class RoutePolicy:
    """Per-route cascade settings. ``max_tiers`` is how many tiers (0..max_tiers-1) the route may
    use; ``budget_usd`` caps the spend per request (None: no cap)."""

    threshold: float
    max_repairs: int = 1
    budget_usd: float | None = None
    max_tiers: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.max_repairs < 0 or self.max_tiers < 1:
            raise ValueError("max_repairs must be >= 0 and max_tiers >= 1")
        if self.budget_usd is not None and not self.budget_usd >= 0:
            raise ValueError(f"budget_usd must be non-negative, got {self.budget_usd}")


@dataclass(frozen=True)
class Decision:
    """``reason`` explains the action; ``trigger`` is what was wrong with the attempt (None when
    accepted). They differ only for return_best, where the reason is why the cascade stopped."""

    action: Action
    reason: EscalationReason
    target_tier: int | None  # tier of the next attempt (the accepted tier for accept); None for return_best
    trigger: EscalationReason | None = None


def diagnose(outcome: AttemptOutcome, threshold: float) -> EscalationReason | None:
    """The first thing wrong with an attempt, in rule order; None if it can be accepted.

    This is the cascade's one accept rule: verifiers veto, an unverified verdict blocks, and otherwise the
    confidence score decides against the route's threshold (`best_attempt` ranks by the same predicates).
    """
    if outcome.error is not None:
        return _ERROR_REASONS[outcome.error]
    for verdict in outcome.verdicts:
        if verdict.failed:
            return _VERIFIER_REASONS.get(verdict.name, EscalationReason.VERIFIER_FAILED)
    if not all_verified(outcome.verdicts):
        return EscalationReason.UNVERIFIED
    if outcome.confidence < threshold:
        return EscalationReason.LOW_CONFIDENCE
    return None


@dataclass(frozen=True)
class EscalationPolicy:
    route: RoutePolicy

    def decide(
        self,
        outcome: AttemptOutcome,
        cooling: frozenset[int] = frozenset(),
        tier_cost_estimates_usd: Sequence[float] = (),
    ) -> Decision:
        """Next step after ``outcome``.

        ``cooling`` is the snapshot of tiers in cooldown (``routing.cooling_tiers``). The estimate
        for the target tier (index into ``tier_cost_estimates_usd``, 0 if absent) is checked
        against the budget before repairing or escalating.
        """
        if outcome.tier >= self.route.max_tiers:
            raise ValueError(f"attempt on tier {outcome.tier} but the route has {self.route.max_tiers} tiers")
        trigger = diagnose(outcome, self.route.threshold)
        if trigger is None:
            return Decision(Action.ACCEPT, EscalationReason.CONFIDENT, outcome.tier)
        repairable = trigger in _REPAIRABLE and outcome.repairs_used < self.route.max_repairs
        target: int | None
        if repairable and outcome.tier not in cooling:
            action, target = Action.REPAIR, outcome.tier
        else:
            action, target = Action.ESCALATE, next_available_tier(outcome.tier, self.route.max_tiers, cooling)
            if target is None:
                return Decision(Action.RETURN_BEST, EscalationReason.TIERS_EXHAUSTED, None, trigger)
        estimate = tier_cost_estimates_usd[target] if target < len(tier_cost_estimates_usd) else 0.0
        if not within_budget(outcome.cost_usd, self.route.budget_usd, estimate):
            return Decision(Action.RETURN_BEST, EscalationReason.BUDGET_EXHAUSTED, None, trigger)
        return Decision(action, trigger, target, trigger)


def best_attempt(outcomes: Sequence[AttemptOutcome]) -> AttemptOutcome:
    """The attempt to return when the cascade stops without accepting.

    Prefer, in order: no tier error; no failed verifier; fully verified; higher confidence;
    the later (larger) tier. An unverified answer thus beats one that verifiably failed.
    """
    if not outcomes:
        raise ValueError("no attempts to choose from")
    return max(
        outcomes,
        key=lambda o: (
            o.error is None,
            not any_failed(o.verdicts),
            all_verified(o.verdicts),
            o.confidence,
            o.tier,
        ),
    )
