import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.calibration import (
    CalibrationError,
    CalibrationPoint,
    LabelledOutcome,
    calibrate,
)

# SLM costs 1, fallback 10. Hand-computed curve (accept iff confidence >= t):
#   t    escalated  successes  cost  success_rate  CPS
#   0.0  -          A,B   = 2    4    0.50         2.0
#   0.2  -          A,B   = 2    4    0.50         2.0
#   0.5  D          A,B   = 2   14    0.50         7.0
#   0.7  C,D        A,B,C = 3   24    0.75         8.0
#   0.9  B,C,D      A,B,C = 3   34    0.75        11.33
#   1.0  all        A,B,C = 3   44    0.75        14.67
DATA = [
    LabelledOutcome(0.9, True, 1.0, 10.0, True),  # A
    LabelledOutcome(0.7, True, 1.0, 10.0, True),  # B
    LabelledOutcome(0.5, False, 1.0, 10.0, True),  # C
    LabelledOutcome(0.2, False, 1.0, 10.0, False),  # D
]


def test_known_optimum_under_success_floor():
    result = calibrate(DATA, min_success_rate=0.75)
    assert result.best == CalibrationPoint(
        threshold=0.7, success_rate=0.75, cps_usd=8.0, total_cost_usd=24.0, accepted_fraction=0.5
    )


def test_whole_curve_matches_hand_computation():
    curve = calibrate(DATA, min_success_rate=0.0).curve
    assert [p.threshold for p in curve] == [0.0, 0.2, 0.5, 0.7, 0.9, 1.0]
    assert [p.success_rate for p in curve] == [0.5, 0.5, 0.5, 0.75, 0.75, 0.75]
    assert [p.cps_usd for p in curve] == pytest.approx([2.0, 2.0, 7.0, 8.0, 34 / 3, 44 / 3])
    assert [p.accepted_fraction for p in curve] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_cps_tie_goes_to_lower_threshold():
    assert calibrate(DATA, min_success_rate=0.5).best.threshold == 0.0


def test_explicit_thresholds():
    result = calibrate(DATA, min_success_rate=0.7, thresholds=[0.95, 0.6])
    assert [p.threshold for p in result.curve] == [0.6, 0.95]
    assert result.best.threshold == 0.6 and result.best.cps_usd == 8.0


def test_unreachable_floor_raises_with_best_rate():
    with pytest.raises(CalibrationError, match="best is 0.7500"):
        calibrate(DATA, min_success_rate=0.8)


def test_empty_data_raises():
    with pytest.raises(CalibrationError, match="no labelled outcomes"):
        calibrate([], min_success_rate=0.5)


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"min_success_rate": 1.5},
        {"min_success_rate": 0.5, "thresholds": []},
        {"min_success_rate": 0.5, "thresholds": [2.0]},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        calibrate(DATA, **kwargs)


def test_no_success_anywhere_gives_infinite_cps():
    never = [LabelledOutcome(0.5, False, 1.0, 2.0, False)]
    assert all(p.cps_usd == math.inf for p in calibrate(never, 0.0).curve)


@pytest.mark.parametrize("kwargs", [{"confidence": 1.1}, {"slm_cost_usd": -1.0}, {"fallback_cost_usd": math.inf}])
def test_labelled_outcome_is_validated(kwargs):
    with pytest.raises(ValueError):
        LabelledOutcome(
            **{
                "confidence": 0.5,
                "slm_correct": True,
                "slm_cost_usd": 1.0,
                "fallback_cost_usd": 1.0,
                "fallback_correct": True,
                **kwargs,
            }
        )


outcome = st.builds(
    LabelledOutcome,
    confidence=st.floats(0.0, 1.0),
    slm_correct=st.booleans(),
    slm_cost_usd=st.floats(0.0, 10.0),
    fallback_cost_usd=st.floats(0.0, 100.0),
    fallback_correct=st.booleans(),
)


def _naive(outcomes, t):
    """Replay the cascade request by request."""
    cost = successes = 0.0
    for o in outcomes:
        accepted = o.confidence >= t
        cost += o.slm_cost_usd + (0.0 if accepted else o.fallback_cost_usd)
        successes += o.slm_correct if accepted else o.fallback_correct
    return successes / len(outcomes), (math.inf if successes == 0 else cost / successes)


@given(outcomes=st.lists(outcome, min_size=1, max_size=40), floor=st.floats(0.0, 1.0))
def test_chosen_point_is_on_curve_feasible_and_cheapest(outcomes, floor):
    try:
        result = calibrate(outcomes, min_success_rate=floor)
    except CalibrationError:
        candidates = {0.0, 1.0, *(o.confidence for o in outcomes)}
        assert all(_naive(outcomes, t)[0] < floor for t in candidates)
        return
    assert result.best in result.curve
    assert result.best.success_rate >= floor
    feasible = [p.cps_usd for p in result.curve if p.success_rate >= floor]
    assert result.best.cps_usd == min(feasible)
    for point in result.curve:
        rate, cps = _naive(outcomes, point.threshold)
        assert point.success_rate == pytest.approx(rate)
        assert point.cps_usd == pytest.approx(cps, rel=1e-9, abs=1e-12)


# ---- certified thresholds --------------------------------------------------------------------------------


def test_clopper_pearson_matches_the_closed_form_with_no_error():
    from policies.calibration import accepted_needed, clopper_pearson_upper

    assert clopper_pearson_upper(0, 22, 0.1) == pytest.approx(1 - 0.1 ** (1 / 22))
    assert clopper_pearson_upper(3, 3, 0.1) == 1.0
    assert accepted_needed(0.1, 0.1) == 22  # 21 error-free answers bound the error at 0.1036, 22 at 0.0994
    assert clopper_pearson_upper(0, 21, 0.1) > 0.1 > clopper_pearson_upper(0, 22, 0.1)


def test_the_certified_threshold_is_the_lowest_candidate_that_passes_at_delta_over_the_levels():
    from policies.calibration import certify_threshold, clopper_pearson_upper

    # 100 answers, confidence i/100; the top 50 all right, then one wrong in two
    scored = [((100 - i) / 100, i < 50 or i % 2 == 0) for i in range(100)]
    certificate = certify_threshold(scored, target_error=0.15, delta=0.1)
    # candidates accept 10, 20, ..., 100 answers; at delta/10 = 0.01: 60 accepted with 5 wrong -> 0.18 > 0.15,
    # 50 with none -> 0.088; so the lowest passing threshold accepts 50
    assert (certificate.threshold, certificate.n_accepted, certificate.errors) == (0.51, 50, 0)
    assert certificate.upper_bound == clopper_pearson_upper(0, 50, 0.01) and certificate.n_total == 100
    assert clopper_pearson_upper(5, 60, 0.01) > 0.15


def test_ties_are_accepted_together():
    from policies.calibration import certify_threshold

    scored = [(0.9, True)] * 60 + [(0.5, True)] * 20 + [(0.5, False)] * 20
    certificate = certify_threshold(scored, target_error=0.1, delta=0.1)
    assert certificate.threshold == 0.9 and certificate.n_accepted == 60  # 0.5 takes all forty, errors included


@pytest.mark.parametrize(("scored", "message"), [
    ([(0.9, True)] * 10, "label at least 34 more"),
    ([(0.9, False)] * 60, "no threshold certifies"),
])
def test_too_little_evidence_says_how_much_more_is_needed(scored, message):
    from policies.calibration import InsufficientDataError, certify_threshold

    with pytest.raises(InsufficientDataError, match=message) as error:
        certify_threshold(scored, target_error=0.1, delta=0.1)
    assert error.value.needed == 44
