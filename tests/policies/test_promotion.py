"""Promotion of a trained adapter: strictly better success rate AND strictly lower cost per successful task."""

import math

import pytest

from policies.promotion import HeldOutResult, RegressionCheck, decide_promotion


def test_success_rate_and_cps():
    result = HeldOutResult(cases=8, successes=6, cost_usd=0.03)
    assert result.success_rate == 0.75
    assert result.cps == pytest.approx(0.005)


def test_cps_is_infinite_without_a_success():
    assert HeldOutResult(cases=4, successes=0, cost_usd=0.0).cps == math.inf


def test_promotes_when_better_on_both():
    decision = decide_promotion(HeldOutResult(8, 4, 0.04), HeldOutResult(8, 6, 0.03))
    assert decision.promote
    assert "6/8" in decision.reason and "4/8" in decision.reason


def test_promotes_over_a_base_that_never_succeeded():
    assert decide_promotion(HeldOutResult(4, 0, 0.01), HeldOutResult(4, 1, 0.01)).promote


@pytest.mark.parametrize(
    ("adapted", "why"),
    [
        (HeldOutResult(8, 4, 0.01), "success rate not higher"),   # a tie keeps the serving model
        (HeldOutResult(8, 3, 0.001), "success rate not higher"),  # cheaper but worse
        (HeldOutResult(8, 5, 0.10), "cost per successful task not lower"),  # better but dearer per success
        (HeldOutResult(8, 5, 0.05), "cost per successful task not lower"),  # CPS equal (0.01)
    ],
)
def test_keeps_the_base_unless_better_on_both(adapted, why):
    decision = decide_promotion(HeldOutResult(8, 4, 0.04), adapted)
    assert not decision.promote
    assert why in decision.reason


def test_requires_the_same_held_out_split():
    with pytest.raises(ValueError, match="must match"):
        decide_promotion(HeldOutResult(8, 4, 0.04), HeldOutResult(7, 6, 0.01))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cases": 0, "successes": 0, "cost_usd": 0.0}, "cases"),
        ({"cases": 4, "successes": 5, "cost_usd": 0.0}, "successes"),
        ({"cases": 4, "successes": -1, "cost_usd": 0.0}, "successes"),
        ({"cases": 4, "successes": 1, "cost_usd": -0.1}, "cost_usd"),
        ({"cases": 4, "successes": 1, "cost_usd": math.nan}, "cost_usd"),
    ],
)
def test_rejects_impossible_results(kwargs, field):
    with pytest.raises(ValueError, match=field):
        HeldOutResult(**kwargs)


# ---- the regression guard: a candidate may not forget other requests -------------------------------------

BETTER = (HeldOutResult(8, 4, 0.04), HeldOutResult(8, 6, 0.03))  # better on both on its own route


@pytest.mark.parametrize(("regression_adapted", "promote"), [
    (HeldOutResult(20, 16, 0.2), True),   # no loss
    (HeldOutResult(20, 15, 0.2), True),   # lost 5 points: exactly the margin
    (HeldOutResult(20, 14, 0.2), False),  # lost 10 points
    (HeldOutResult(20, 0, 0.2), False),   # forgot everything
])
def test_a_candidate_that_forgets_more_than_the_margin_is_refused(regression_adapted, promote):
    check = RegressionCheck(HeldOutResult(20, 16, 0.2), regression_adapted, margin=0.05)
    decision = decide_promotion(*BETTER, check)
    assert decision.promote is promote
    assert ("forgets other requests" in decision.reason) is not promote
    assert f"regression set {regression_adapted.successes}/20 vs base 16/20, margin 5%" in decision.reason


def test_the_route_is_judged_before_the_regression_set():
    check = RegressionCheck(HeldOutResult(20, 16, 0.2), HeldOutResult(20, 20, 0.2), margin=0.05)
    decision = decide_promotion(HeldOutResult(8, 4, 0.04), HeldOutResult(8, 4, 0.01), check)
    assert not decision.promote and "success rate not higher" in decision.reason


@pytest.mark.parametrize(("base", "adapted", "margin", "match"), [
    (HeldOutResult(20, 16, 0.2), HeldOutResult(10, 8, 0.1), 0.05, "must match"),
    (HeldOutResult(20, 16, 0.2), HeldOutResult(20, 16, 0.2), 1.0, "margin"),
    (HeldOutResult(20, 16, 0.2), HeldOutResult(20, 16, 0.2), -0.1, "margin"),
])
def test_a_regression_check_must_compare_like_with_like(base, adapted, margin, match):
    with pytest.raises(ValueError, match=match):
        RegressionCheck(base, adapted, margin)
