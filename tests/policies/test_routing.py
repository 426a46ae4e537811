import pytest

from policies.routing import (
    ConstantDifficulty,
    HeuristicDifficulty,
    RequestFeatures,
    TierCooldown,
    choose_start_tier,
    cooling_tiers,
    next_available_tier,
    request_features,
    schema_depth,
)

OBJ = {"type": "object", "properties": {"a": {"type": "string"}}}
NESTED = {"type": "object", "properties": {"rows": {"type": "array", "items": OBJ}, "n": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("schema", "depth"),
    [
        (None, 0),
        ({}, 0),
        ({"type": "string"}, 0),
        ({"type": "object"}, 1),
        (OBJ, 1),
        (NESTED, 3),
        ({"anyOf": [{"type": "string"}, NESTED]}, 3),
        ({"type": "object", "properties": {"x": {"oneOf": [OBJ]}}}, 2),
        ({"type": "array", "prefixItems": [{"type": "integer"}, OBJ]}, 2),
        ({"type": "object", "additionalProperties": OBJ}, 2),
        ({"type": "object", "properties": {"self": {"$ref": "#"}}}, 1),
    ],
)
def test_schema_depth(schema, depth):
    assert schema_depth(schema) == depth


def test_schema_depth_is_bounded_on_hostile_nesting():
    deep = {"type": "string"}
    for _ in range(5000):
        deep = {"anyOf": [{"type": "array", "items": deep}]}
    assert 1 <= schema_depth(deep) <= 64


def test_request_features_take_deepest_schema_and_count_tools():
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": NESTED}},
        {"type": "function", "function": {"name": "g"}},
    ]
    assert request_features(1200, tools, OBJ) == RequestFeatures(prompt_tokens=1200, n_tools=2, schema_depth=3)
    assert request_features(10, None, None) == RequestFeatures(10, 0, 0)


@pytest.mark.parametrize("kwargs", [{"prompt_tokens": -1}, {"n_tools": -1}])
def test_request_features_are_validated(kwargs):
    with pytest.raises(ValueError):
        RequestFeatures(**{"prompt_tokens": 1, "n_tools": 0, "schema_depth": 0, **kwargs})


def test_heuristic_difficulty_by_hand():
    h = HeuristicDifficulty(long_prompt_tokens=1000, many_tools=10, deep_schema=4, weights=(0.2, 0.2, 0.6))
    # terms: 500/1000=0.5, 5/10=0.5, 4/4=1.0 -> 0.1 + 0.1 + 0.6 = 0.8
    assert h.score(RequestFeatures(500, 5, 4)) == pytest.approx(0.8)
    # saturation: far past every saturation point -> 1
    assert h.score(RequestFeatures(10**9, 1000, 100)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs", [{"many_tools": 0}, {"weights": (0.0, 0.0, 0.0)}, {"weights": (-1.0, 1.0, 1.0)}]
)
def test_heuristic_difficulty_parameters_are_validated(kwargs):
    with pytest.raises(ValueError):
        HeuristicDifficulty(**kwargs)


EASY = RequestFeatures(10, 0, 0)


@pytest.mark.parametrize(
    ("difficulty", "available", "start"),
    [
        (0.1, [0, 1, 2], 0),  # easy -> SLM
        (0.9, [0, 1, 2], 1),  # hard -> skip the SLM
        (0.9, [2, 0], 2),  # hard, tier 1 cooling -> next one up
        (0.9, [0], 0),  # hard but only the SLM is up -> an answer beats none
        (0.1, [1, 2], 1),  # SLM cooling -> lowest available
        (0.1, [], None),
        (0.5, [0, 1], 1),  # the threshold itself counts as hard
    ],
)
def test_choose_start_tier(difficulty, available, start):
    assert choose_start_tier(EASY, ConstantDifficulty(difficulty), 0.5, available) == start


@pytest.mark.parametrize(
    ("current", "n_tiers", "cooling", "expected"),
    [(0, 3, frozenset(), 1), (0, 3, frozenset({1}), 2), (0, 3, frozenset({1, 2}), None), (2, 3, frozenset(), None)],
)
def test_next_available_tier(current, n_tiers, cooling, expected):
    assert next_available_tier(current, n_tiers, cooling) == expected


# --- TierCooldown --------------------------------------------------------------------------


def test_cooldown_trips_after_consecutive_errors_within_window_and_recovers():
    breaker = TierCooldown(failure_threshold=3, window_s=10.0, cooldown_s=30.0)
    for t in (0.0, 1.0):
        breaker.record_error(t)
    assert breaker.available(1.0)
    breaker.record_error(2.0)
    assert not breaker.available(2.0) and not breaker.available(31.9)
    assert breaker.available(32.0)


def test_errors_spread_beyond_window_do_not_trip():
    breaker = TierCooldown(failure_threshold=3, window_s=10.0, cooldown_s=30.0)
    for t in (0.0, 6.0, 12.0, 18.0, 24.0):
        breaker.record_error(t)
    assert breaker.available(24.0)


def test_success_resets_the_consecutive_count():
    breaker = TierCooldown(failure_threshold=2, window_s=10.0, cooldown_s=30.0)
    breaker.record_error(0.0)
    breaker.record_success(1.0)
    breaker.record_error(2.0)
    assert breaker.available(2.0)


def test_failed_probe_after_cooldown_reopens_at_once_and_success_closes():
    breaker = TierCooldown(failure_threshold=3, window_s=10.0, cooldown_s=30.0)
    for t in (0.0, 0.1, 0.2):
        breaker.record_error(t)
    assert breaker.allow(40.0)  # the probe
    breaker.record_error(40.0)  # it fails
    assert not breaker.available(40.0) and breaker.available(70.0)
    assert breaker.allow(70.0)
    breaker.record_success(70.0)
    breaker.record_error(71.0)  # closed again: one error is not enough
    assert breaker.available(71.0)


def test_errors_while_open_do_not_extend_the_cooldown():
    breaker = TierCooldown(failure_threshold=1, window_s=10.0, cooldown_s=30.0)
    breaker.record_error(0.0)
    breaker.record_error(20.0)  # an in-flight request failing during the cooldown
    assert breaker.available(30.0)


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"window_s": 0.0}, {"cooldown_s": -1.0}])
def test_cooldown_parameters_are_validated(kwargs):
    with pytest.raises(ValueError):
        TierCooldown(**kwargs)


def test_cooling_tiers_snapshot():
    breakers = [TierCooldown(failure_threshold=1) for _ in range(3)]
    breakers[1].record_error(5.0)
    assert cooling_tiers(breakers, 6.0) == frozenset({1})
    assert cooling_tiers(breakers, 5.0 + breakers[1].cooldown_s) == frozenset()


def test_half_open_lets_exactly_one_probe_through_until_it_reports_or_goes_stale():
    breaker = TierCooldown(failure_threshold=1, window_s=10.0, cooldown_s=30.0)
    breaker.record_error(0.0)
    assert not breaker.allow(29.9)
    assert breaker.allow(30.0)  # the probe
    assert not breaker.available(30.0) and not breaker.allow(31.0), "one probe at a time"
    breaker.record_error(35.0)  # an error while half-open: the probe failed, open again
    assert not breaker.allow(64.9) and breaker.allow(65.0)
    assert not breaker.allow(90.0)  # that probe is still out
    assert breaker.allow(95.0), "a probe silent for a whole cooldown is given up"
    breaker.record_success(96.0)
    assert all(breaker.allow(96.0) for _ in range(3)), "closed: everyone"


def test_errors_of_requests_sent_before_it_opened_do_not_extend_the_cooldown():
    breaker = TierCooldown(failure_threshold=1, window_s=10.0, cooldown_s=30.0)
    breaker.record_error(0.0)
    breaker.record_error(5.0)  # in flight when it opened
    assert breaker.allow(30.0)
