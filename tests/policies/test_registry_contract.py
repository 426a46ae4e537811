"""Every registered verifier, confidence policy and difficulty predictor honours the same contract:
registered under its own name, scores in [0, 1], same input -> same output."""

import json

import pytest

from policies.confidence import (
    CONFIDENCE_POLICIES,
    ConfidenceSignals,
    token_uncertainty,
)
from policies.escalation import AttemptOutcome, diagnose
from policies.routing import DIFFICULTY_PREDICTORS, RequestFeatures
from policies.verifiers import (
    Candidate,
    SchemaVerifier,
    ToolCall,
    ToolCallVerifier,
    Verdict,
)

TOOLS = [
    {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
]
# Every verifier class with the spec it checks against.
VERIFIER_BUILDERS = {
    SchemaVerifier: lambda: SchemaVerifier(
        {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}),
    ToolCallVerifier: lambda: ToolCallVerifier(TOOLS),
}
CANDIDATES = [
    Candidate(text='{"x": 1}'),
    Candidate(text='{"x": "1"}'),
    Candidate(text="not json"),
    Candidate(text=""),
    Candidate(tool_calls=(ToolCall("f", json.dumps({"x": 1})),)),
    Candidate(tool_calls=(ToolCall("f", '{"x": "a"}'), ToolCall("g", "{}"), ToolCall("f", "{"))),
]
SIGNALS = [
    ConfidenceSignals(token_uncertainty([], None)),
    ConfidenceSignals(token_uncertainty([-0.01, -0.02], [[-0.01, -5.0]]), (Verdict("schema", 1.0, True),)),
    ConfidenceSignals(token_uncertainty([-3.0, -9999.0], [[-0.7, -0.7]]), (Verdict("schema", 0.0, False),)),
    ConfidenceSignals(
        token_uncertainty([-0.2]), (Verdict("tool_calls", 0.5, False), Verdict.unverified("schema", "t/o"))
    ),
]
FEATURES = [RequestFeatures(0, 0, 0), RequestFeatures(50_000, 40, 12), RequestFeatures(900, 3, 2)]


@pytest.mark.parametrize("registry", [CONFIDENCE_POLICIES, DIFFICULTY_PREDICTORS])
def test_registry_keys_are_class_names(registry):
    assert registry and all(cls.name == key for key, cls in registry.items())


def test_every_verifier_class_has_a_builder():
    import policies.verifiers as verifiers

    classes = {cls for cls in vars(verifiers).values()
               if isinstance(cls, type) and issubclass(cls, verifiers.Verifier) and cls is not verifiers.Verifier}
    assert classes == set(VERIFIER_BUILDERS)


@pytest.mark.parametrize("verifier_class", list(VERIFIER_BUILDERS), ids=lambda cls: cls.name)
@pytest.mark.parametrize("candidate", CANDIDATES)
def test_verifier_contract(verifier_class, candidate):
    verifier = VERIFIER_BUILDERS[verifier_class]()
    verdict = verifier.verify(candidate)
    assert verdict.name == verifier_class.name and verdict.verified
    assert 0.0 <= verdict.score <= 1.0
    assert verdict.passed == (verdict.score == 1.0 and not verdict.reasons)
    assert VERIFIER_BUILDERS[verifier_class]().verify(candidate) == verdict


@pytest.mark.parametrize("name", sorted(CONFIDENCE_POLICIES))
@pytest.mark.parametrize("signals", SIGNALS)
def test_confidence_policy_contract(name, signals):
    policy = CONFIDENCE_POLICIES[name]()
    score = policy.score(signals)
    assert 0.0 <= score <= 1.0
    assert CONFIDENCE_POLICIES[name]().score(signals) == score
    clean = all(v.verified and v.passed for v in signals.verdicts)
    for threshold in (0.0, score, 1.0):
        accepted = diagnose(AttemptOutcome(tier=0, verdicts=signals.verdicts, confidence=score), threshold) is None
        assert accepted == (clean and score >= threshold)


@pytest.mark.parametrize("name", sorted(DIFFICULTY_PREDICTORS))
@pytest.mark.parametrize("features", FEATURES)
def test_difficulty_predictor_contract(name, features):
    score = DIFFICULTY_PREDICTORS[name]().score(features)
    assert 0.0 <= score <= 1.0
    assert DIFFICULTY_PREDICTORS[name]().score(features) == score
