"""When a route adapts: a policy round is due only with enough new examples and not too soon; a promoted
adapter is rolled back only when enough live requests on both sides show a drop beyond the allowed one."""

import pytest

from policies.adaptation import LiveOutcomes, judge_live, round_due


@pytest.mark.parametrize(("new", "after", "since_s", "running", "due"), [
    (50, 50, None, False, True),     # the first round, once enough examples arrived
    (49, 50, None, False, False),
    (80, 50, 3600.0, False, True),   # the interval has passed
    (80, 50, 3599.0, False, False),  # too soon after the last round
    (80, 50, 9999.0, True, False),   # one round of a route at a time
    (500, None, None, False, False),  # no policy: rounds start only by command
])
def test_a_round_is_due_with_enough_new_examples_and_not_too_soon(new, after, since_s, running, due):
    assert round_due(new, after, since_s, min_interval_s=3600.0, last_round_running=running) is due


def test_a_drop_beyond_the_allowed_one_rolls_back_with_the_figures():
    decision = judge_live(LiveOutcomes(20, 18), LiveOutcomes(20, 10), min_requests=20, max_drop=0.1)
    assert decision.roll_back
    assert decision.reason == ("live success 10/20 (50%) since promotion vs 18/20 (90%) before: dropped more "
                               "than 10%")


@pytest.mark.parametrize(("before", "after", "why"), [
    (LiveOutcomes(20, 18), LiveOutcomes(20, 16), "within 10%"),            # exactly the allowed drop
    (LiveOutcomes(20, 18), LiveOutcomes(20, 20), "within 10%"),            # better
    (LiveOutcomes(19, 19), LiveOutcomes(20, 0), "no baseline: 19 live requests before promotion"),
    (LiveOutcomes(20, 20), LiveOutcomes(19, 0), "watching: 19 of 20 live requests so far"),
])
def test_too_little_evidence_or_a_small_drop_keeps_the_adapter(before, after, why):
    decision = judge_live(before, after, min_requests=20, max_drop=0.1)
    assert not decision.roll_back and why in decision.reason


@pytest.mark.parametrize(("requests", "successes"), [(3, 4), (0, 1), (2, -1)])
def test_impossible_outcomes_are_refused(requests, successes):
    with pytest.raises(ValueError, match="successes"):
        LiveOutcomes(requests, successes)


@pytest.mark.parametrize(("min_requests", "max_drop"), [(0, 0.1), (5, 1.0), (5, -0.1)])
def test_the_watch_needs_sane_settings(min_requests, max_drop):
    with pytest.raises(ValueError, match="min_requests"):
        judge_live(LiveOutcomes(5, 5), LiveOutcomes(5, 5), min_requests, max_drop)
