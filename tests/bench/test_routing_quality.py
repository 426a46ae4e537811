import pytest

from bench.routing_quality import auroc, operating_points, routing_quality
from policies.calibration import LabelledOutcome


def outcome(confidence: float, slm: bool, fallback: bool) -> LabelledOutcome:
    return LabelledOutcome(confidence, slm, slm_cost_usd=1.0, fallback_cost_usd=10.0, fallback_correct=fallback)


def test_auroc_counts_ties_half_and_needs_both_kinds():
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(7 / 8)
    assert auroc([0.3], [True]) is None


def test_a_perfect_ranking_recovers_the_gap_early_and_matches_the_oracle():
    # SLM right on A, B; the fallback right on C, D, and on A
    data = [outcome(0.9, True, True), outcome(0.8, True, False), outcome(0.2, False, True), outcome(0.1, False, True)]
    quality = routing_quality(data, target_fraction_of_fallback=1.0)
    assert (quality["slm_success_rate"], quality["fallback_success_rate"], quality["oracle_success_rate"]) == \
        (0.5, 0.75, 1.0)
    assert quality["auroc"] == 1.0
    points = operating_points(data)
    assert [p.success_rate for p in points] == [0.5, 0.75, 1.0, 0.75, 0.75]
    assert [p.accepted_error_rate for p in points] == [0.5, 1 / 3, 0.0, 0.0, None]
    # PGR per share 0, .25, .5, .75, 1 = 0, 1, 2, 1, 1; trapezoid with dx .25
    assert quality["apgr"] == pytest.approx(0.25 * (0 / 2 + 1 + 2 + 1 + 1 / 2))
    assert quality["escalation_for_50pct_gap"] == 0.25 and quality["escalation_for_80pct_gap"] == 0.25
    # target 0.75: one escalation; cost 4 + 10, 3 successes; the oracle escalates one wrong answer too
    assert quality["cascade_at_target"]["cps_usd"] == pytest.approx(14 / 3)
    assert quality["oracle_cps_at_target"] == pytest.approx(14 / 3)
    assert quality["cps_ratio_to_oracle"] == pytest.approx(1.0)
    assert quality["fallback_cps"] == pytest.approx(40 / 3)
    assert quality["oracle_cps"] == pytest.approx(24 / 4)


def test_a_reversed_ranking_escalates_the_right_answers_first():
    data = [outcome(0.1, True, False), outcome(0.9, False, True)]
    quality = routing_quality(data)
    assert quality["auroc"] == 0.0
    assert [p.success_rate for p in operating_points(data)] == [0.5, 0.0, 0.5]


def test_no_gap_means_no_apgr():
    quality = routing_quality([outcome(0.5, True, True), outcome(0.4, False, False)])
    assert quality["apgr"] is None and quality["escalation_for_50pct_gap"] is None
