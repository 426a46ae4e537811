import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.confidence import (
    CONFIDENCE_POLICIES,
    LOGPROB_FLOOR,
    ConfidenceSignals,
    TokenUncertainty,
    VerifierGatedPolicy,
    WeightedPolicy,
    logistic,
    token_uncertainty,
)
from policies.escalation import AttemptOutcome, diagnose
from policies.verifiers import Verdict

PASS = Verdict("schema", 1.0, True)
FAIL = Verdict("schema", 0.0, False, ("bad",))
UNVERIFIED = Verdict.unverified("tool_calls", "timeout")


def _signals(mean=None, verdicts=(), minimum=None, entropy=None):
    return ConfidenceSignals(TokenUncertainty(mean, minimum if minimum is not None else mean, entropy), tuple(verdicts))


# --- token_uncertainty ---------------------------------------------------------------------


def test_mean_and_min_logprob():
    t = token_uncertainty([-0.1, -0.5, -0.3])
    assert t.mean_logprob == pytest.approx(-0.3) and t.min_logprob == -0.5 and t.decision_entropy is None


def test_no_logprobs_gives_no_features():
    assert token_uncertainty([], None) == TokenUncertainty(None, None, None)


def test_logprobs_are_clamped_to_floor_and_zero():
    t = token_uncertainty([-math.inf, 1e-9])
    assert t.min_logprob == LOGPROB_FLOOR and t.mean_logprob == LOGPROB_FLOOR / 2


def test_nan_logprob_raises():
    with pytest.raises(ValueError, match="NaN"):
        token_uncertainty([-0.1, math.nan])


def test_decision_entropy_uniform_is_one_and_peaked_is_near_zero():
    uniform = math.log(0.25)
    assert token_uncertainty([-0.1], [[uniform] * 4]).decision_entropy == pytest.approx(1.0)
    peaked = token_uncertainty([-0.1], [[-1e-6, -20.0, -20.0]]).decision_entropy
    assert 0.0 <= peaked < 1e-6


def test_decision_entropy_is_mean_over_positions_and_renormalises_top_k():
    # top-2 of probabilities (0.4, 0.4) renormalises to uniform -> 1; a single candidate -> 0
    t = token_uncertainty([-0.1], [[math.log(0.4), math.log(0.4)], [-0.2]])
    assert t.decision_entropy == pytest.approx(0.5)


@pytest.mark.parametrize("top", [[], [-math.inf, -math.inf]])
def test_degenerate_decision_position_raises(top):
    with pytest.raises(ValueError):
        token_uncertainty([-0.1], [top])


def test_token_uncertainty_fields_are_validated():
    with pytest.raises(ValueError, match="mean_logprob"):
        TokenUncertainty(mean_logprob=0.5)
    with pytest.raises(ValueError, match="decision_entropy"):
        TokenUncertainty(decision_entropy=math.nan)


# --- policies ------------------------------------------------------------------------------


def test_logistic_is_stable_at_extremes():
    assert logistic(1e6) == 1.0 and logistic(-1e6) == 0.0 and logistic(0.0) == 0.5


def test_verifier_gated_zero_when_any_verifier_failed():
    assert VerifierGatedPolicy().score(_signals(-0.01, [PASS, FAIL])) == 0.0


def test_verifier_gated_is_logistic_of_mean_logprob():
    policy = VerifierGatedPolicy(midpoint=-0.3, slope=10.0)
    assert policy.score(_signals(-0.3, [PASS])) == pytest.approx(0.5)
    assert policy.score(_signals(-0.05, [PASS])) == pytest.approx(1 / (1 + math.exp(-2.5)))
    assert policy.score(_signals(-1.0)) < policy.score(_signals(-0.5)) < policy.score(_signals(-0.1))


def test_verifier_gated_without_logprobs_uses_prior():
    assert VerifierGatedPolicy(no_logprobs_score=0.7).score(_signals(None, [PASS])) == 0.7


def _accepted(policy, signals, threshold: float) -> bool:
    """The cascade's accept rule (`diagnose`) over this policy's score."""
    return diagnose(AttemptOutcome(tier=0, verdicts=signals.verdicts, confidence=policy.score(signals)),
                    threshold) is None


def test_unverified_is_ignored_by_score_but_blocks_accept():
    policy = VerifierGatedPolicy()
    with_unverified = _signals(-0.01, [PASS, UNVERIFIED])
    assert policy.score(with_unverified) == policy.score(_signals(-0.01, [PASS])) > 0.9
    assert not _accepted(policy, with_unverified, 0.1)


def test_accept_is_score_at_or_above_threshold():
    policy = VerifierGatedPolicy()
    at_half = _signals(policy.midpoint, [PASS])
    assert _accepted(policy, at_half, 0.5)
    assert not _accepted(policy, at_half, 0.5000001)


def test_failed_verdict_blocks_accept_even_with_high_weighted_score():
    policy = WeightedPolicy(bias=20.0)
    signals = _signals(-0.01, [FAIL])
    assert policy.score(signals) > 0.99 and not _accepted(policy, signals, 0.5)


def test_weighted_score_by_hand():
    policy = WeightedPolicy(bias=0.5, w_mean_logprob=2.0, w_min_logprob=1.0, w_decision_entropy=-1.0, w_verifier=3.0)
    signals = _signals(-0.2, [PASS, Verdict("tool_calls", 0.5, False)], minimum=-1.0, entropy=0.4)
    expected = logistic(0.5 + 2.0 * -0.2 + 1.0 * -1.0 - 1.0 * 0.4 + 3.0 * 0.75)
    assert policy.score(signals) == pytest.approx(expected)


def test_weighted_missing_features_contribute_nothing():
    assert WeightedPolicy(bias=1.0).score(_signals(None, [UNVERIFIED])) == pytest.approx(logistic(1.0))


@pytest.mark.parametrize(
    ("cls", "kwargs"), [(WeightedPolicy, {"w_verifier": math.inf}), (VerifierGatedPolicy, {"slope": 0.0})]
)
def test_policy_parameters_are_validated(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)


# --- properties ----------------------------------------------------------------------------

logprob = st.one_of(st.floats(max_value=0.0, allow_nan=False), st.floats(min_value=0.0, max_value=1e-6))
top_k = st.lists(st.floats(min_value=-1e6, max_value=0.0), min_size=1, max_size=8)
verdict = st.one_of(
    st.builds(lambda s: Verdict("schema", s, s == 1.0), st.floats(0.0, 1.0)),
    st.just(UNVERIFIED),
)


@given(
    logprobs=st.lists(logprob, max_size=50),
    tops=st.one_of(st.none(), st.lists(top_k, max_size=5)),
    verdicts=st.lists(verdict, max_size=3),
    weights=st.lists(st.floats(-1e3, 1e3), min_size=5, max_size=5),
)
def test_every_policy_scores_any_logprobs_in_unit_interval(logprobs, tops, verdicts, weights):
    signals = ConfidenceSignals(token_uncertainty(logprobs, tops), tuple(verdicts))
    t = signals.tokens
    assert t.decision_entropy is None or 0.0 <= t.decision_entropy <= 1.0
    policies = [cls() for cls in CONFIDENCE_POLICIES.values()] + [WeightedPolicy(*weights)]
    for policy in policies:
        assert 0.0 <= policy.score(signals) <= 1.0


# ---- the fitted policy -----------------------------------------------------------------------------------


def test_the_fitted_policy_is_a_standardised_logistic_and_a_missing_feature_sits_at_its_mean():
    from policies.confidence import ConfidenceSignals, FittedPolicy, TokenUncertainty, build_confidence_policy

    policy = build_confidence_policy("fitted", {"features": ["grounding", "value_min_logprob"], "weights": [2.0, 1.0],
                                                "means": [0.5, -1.0], "scales": [0.25, 2.0], "bias": -1.0})
    assert isinstance(policy, FittedPolicy)
    both = ConfidenceSignals(TokenUncertainty(), (), {"grounding": 1.0, "value_min_logprob": 0.0})
    assert policy.score(both) == pytest.approx(1 / (1 + math.exp(-(-1.0 + 2.0 * 2.0 + 1.0 * 0.5))))
    only_grounding = ConfidenceSignals(TokenUncertainty(), (), {"grounding": 0.5})
    assert policy.score(only_grounding) == pytest.approx(1 / (1 + math.exp(1.0)))


@pytest.mark.parametrize("parameters", [
    {"features": ["a"], "weights": [1.0, 2.0], "means": [0.0], "scales": [1.0]},
    {"features": ["a"], "weights": [1.0], "means": [0.0], "scales": [0.0]},
    {"features": ["a", "a"], "weights": [1.0, 1.0], "means": [0.0, 0.0], "scales": [1.0, 1.0]},
    {"features": ["a"], "weights": [float("nan")], "means": [0.0], "scales": [1.0]},
])
def test_a_malformed_fitted_model_is_refused(parameters):
    from policies.confidence import build_confidence_policy

    with pytest.raises(ValueError):
        build_confidence_policy("fitted", parameters)
