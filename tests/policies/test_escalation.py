import pytest

from policies.escalation import (
    Action,
    AttemptOutcome,
    Decision,
    ErrorKind,
    EscalationPolicy,
    RoutePolicy,
    best_attempt,
    diagnose,
)
from policies.escalation import (
    EscalationReason as R,
)
from policies.verifiers import Verdict

OK_SCHEMA = Verdict("schema", 1.0, True)
BAD_SCHEMA = Verdict("schema", 0.0, False, ("at 'qty': not an integer",))
BAD_TOOL = Verdict("tool_calls", 0.5, False, ("unknown function 'x'",))
BAD_OTHER = Verdict("pii", 0.0, False, ("leaks an email",))
UNVERIFIED = Verdict.unverified("schema", "timeout")

ROUTE = RoutePolicy(threshold=0.7, max_repairs=1, budget_usd=None, max_tiers=3)


def decide(route=ROUTE, **outcome):
    kwargs = {k: outcome.pop(k) for k in ("cooling", "tier_cost_estimates_usd") if k in outcome}
    return EscalationPolicy(route).decide(AttemptOutcome(**outcome), **kwargs)


def test_confident_valid_answer_is_accepted():
    assert decide(tier=0, verdicts=(OK_SCHEMA,), confidence=0.7) == Decision(Action.ACCEPT, R.CONFIDENT, 0, None)


def test_low_confidence_escalates_to_next_tier():
    assert decide(tier=0, verdicts=(OK_SCHEMA,), confidence=0.69) == Decision(
        Action.ESCALATE, R.LOW_CONFIDENCE, 1, R.LOW_CONFIDENCE
    )


@pytest.mark.parametrize(
    ("verdict", "reason"),
    [(BAD_SCHEMA, R.SCHEMA_INVALID), (BAD_TOOL, R.TOOL_CALL_INVALID), (BAD_OTHER, R.VERIFIER_FAILED)],
)
def test_verifier_failure_is_repaired_on_same_tier_then_escalated(verdict, reason):
    assert decide(tier=1, verdicts=(verdict,), confidence=0.99) == Decision(Action.REPAIR, reason, 1, reason)
    assert decide(tier=1, verdicts=(verdict,), confidence=0.99, repairs_used=1) == Decision(
        Action.ESCALATE, reason, 2, reason
    )


def test_no_repairs_configured_escalates_immediately():
    route = RoutePolicy(threshold=0.5, max_repairs=0, max_tiers=2)
    assert decide(route, tier=0, verdicts=(BAD_SCHEMA,)).action is Action.ESCALATE


def test_unverified_escalates_without_repair():
    assert decide(tier=0, verdicts=(OK_SCHEMA, UNVERIFIED), confidence=0.99) == Decision(
        Action.ESCALATE, R.UNVERIFIED, 1, R.UNVERIFIED
    )


@pytest.mark.parametrize(("error", "reason"), [(ErrorKind.ERROR, R.TIER_ERROR), (ErrorKind.TIMEOUT, R.TIER_TIMEOUT)])
def test_tier_failure_escalates_without_repair(error, reason):
    assert decide(tier=0, error=error) == Decision(Action.ESCALATE, reason, 1, reason)


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        ({"error": ErrorKind.TIMEOUT, "verdicts": (BAD_SCHEMA,)}, R.TIER_TIMEOUT),
        ({"verdicts": (UNVERIFIED, BAD_TOOL)}, R.TOOL_CALL_INVALID),
        ({"verdicts": (BAD_TOOL, BAD_SCHEMA)}, R.TOOL_CALL_INVALID),
        ({"verdicts": (UNVERIFIED,), "confidence": 0.1}, R.UNVERIFIED),
        ({"verdicts": (OK_SCHEMA,), "confidence": 0.1}, R.LOW_CONFIDENCE),
        ({"verdicts": (OK_SCHEMA,), "confidence": 0.9}, None),
        ({"verdicts": (), "confidence": 0.9}, None),
    ],
)
def test_diagnosis_follows_rule_order(outcome, reason):
    assert diagnose(AttemptOutcome(tier=0, **outcome), threshold=0.5) == reason


def test_top_tier_failure_returns_best_and_keeps_trigger():
    d = decide(tier=2, verdicts=(OK_SCHEMA,), confidence=0.1)
    assert d == Decision(Action.RETURN_BEST, R.TIERS_EXHAUSTED, None, R.LOW_CONFIDENCE)


def test_max_tiers_limits_escalation():
    route = RoutePolicy(threshold=0.7, max_tiers=1)
    assert decide(route, tier=0, confidence=0.1).reason is R.TIERS_EXHAUSTED


def test_tiers_in_cooldown_are_skipped():
    assert decide(tier=0, confidence=0.1, cooling=frozenset({1})).target_tier == 2
    assert decide(tier=0, confidence=0.1, cooling=frozenset({1, 2})).reason is R.TIERS_EXHAUSTED


def test_repair_is_skipped_when_current_tier_is_cooling():
    d = decide(tier=0, verdicts=(BAD_SCHEMA,), cooling=frozenset({0}))
    assert (d.action, d.target_tier, d.reason) == (Action.ESCALATE, 1, R.SCHEMA_INVALID)


@pytest.mark.parametrize(
    ("spent", "estimates", "action"),
    [
        (0.010, (0.001, 0.010, 0.05), Action.ESCALATE),  # 0.010 + 0.010 == budget: allowed
        (0.011, (0.001, 0.010, 0.05), Action.RETURN_BEST),  # would overshoot
        (0.020, (), Action.RETURN_BEST),  # already spent past the cap
        (0.019, (), Action.ESCALATE),  # no estimate -> only what is spent counts
    ],
)
def test_budget_cap(spent, estimates, action):
    route = RoutePolicy(threshold=0.7, budget_usd=0.02, max_tiers=3)
    d = decide(route, tier=0, confidence=0.1, cost_usd=spent, tier_cost_estimates_usd=estimates)
    assert d.action is action
    if action is Action.RETURN_BEST:
        assert (d.reason, d.trigger, d.target_tier) == (R.BUDGET_EXHAUSTED, R.LOW_CONFIDENCE, None)


def test_budget_applies_to_repairs_with_the_current_tier_estimate():
    route = RoutePolicy(threshold=0.7, budget_usd=0.01, max_tiers=2)
    d = decide(route, tier=0, verdicts=(BAD_SCHEMA,), cost_usd=0.006, tier_cost_estimates_usd=(0.005, 0.0))
    assert d.reason is R.BUDGET_EXHAUSTED


def test_accept_ignores_budget():
    route = RoutePolicy(threshold=0.7, budget_usd=0.0, max_tiers=2)
    assert decide(route, tier=0, confidence=0.9, cost_usd=5.0).action is Action.ACCEPT


def test_attempt_on_tier_beyond_route_raises():
    with pytest.raises(ValueError, match="tier 3"):
        decide(tier=3, confidence=0.9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1.2},
        {"threshold": 0.5, "max_repairs": -1},
        {"threshold": 0.5, "max_tiers": 0},
        {"threshold": 0.5, "budget_usd": -1.0},
    ],
)
def test_route_policy_is_validated(kwargs):
    with pytest.raises(ValueError):
        RoutePolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"tier": -1}, {"tier": 0, "confidence": 1.5}, {"tier": 0, "cost_usd": float("inf")}]
)
def test_attempt_outcome_is_validated(kwargs):
    with pytest.raises(ValueError):
        AttemptOutcome(**kwargs)


def test_best_attempt_prefers_working_then_valid_then_verified_then_confident():
    errored = AttemptOutcome(tier=2, error=ErrorKind.ERROR)
    invalid = AttemptOutcome(tier=1, verdicts=(BAD_SCHEMA,), confidence=0.99)
    unverified = AttemptOutcome(tier=0, verdicts=(UNVERIFIED,), confidence=0.9)
    valid_low = AttemptOutcome(tier=0, verdicts=(OK_SCHEMA,), confidence=0.3)
    valid_high = AttemptOutcome(tier=1, verdicts=(OK_SCHEMA,), confidence=0.4)
    assert best_attempt([errored, invalid]) is invalid
    assert best_attempt([invalid, unverified]) is unverified
    assert best_attempt([unverified, valid_low]) is valid_low
    assert best_attempt([valid_low, valid_high, errored]) is valid_high
    with pytest.raises(ValueError):
        best_attempt([])
