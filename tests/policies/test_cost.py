import math

import pytest

from policies.cost import (
    TierPrice,
    attempt_cost,
    cost_per_successful_task,
    within_budget,
)


def test_attempt_cost_sums_input_and_output_tokens():
    price = TierPrice(input_per_1m_usd=0.5, output_per_1m_usd=1.5)
    # 2000 * 0.5/1e6 + 1000 * 1.5/1e6 = 0.001 + 0.0015
    assert attempt_cost(price, 2000, 1000) == pytest.approx(0.0025)


@pytest.mark.parametrize(("args"), [(-1, 0), (0, -1)])
def test_attempt_cost_rejects_negative_usage(args):
    with pytest.raises(ValueError):
        attempt_cost(TierPrice(1.0, 1.0), *args)


@pytest.mark.parametrize("field", ["input_per_1m_usd", "output_per_1m_usd"])
@pytest.mark.parametrize("bad", [-0.01, math.inf, math.nan])
def test_tier_price_rejects_bad_prices(field, bad):
    kwargs = {"input_per_1m_usd": 1.0, "output_per_1m_usd": 1.0, field: bad}
    with pytest.raises(ValueError, match=field):
        TierPrice(**kwargs)


def test_cost_per_successful_task():
    assert cost_per_successful_task(12.0, 4) == 3.0


@pytest.mark.parametrize("total", [0.0, 5.0])
def test_cost_per_successful_task_is_infinite_without_success(total):
    assert cost_per_successful_task(total, 0) == math.inf


def test_cost_per_successful_task_rejects_negative_input():
    with pytest.raises(ValueError):
        cost_per_successful_task(1.0, -1)


@pytest.mark.parametrize(
    ("spent", "budget", "next_cost", "ok"),
    [
        (0.5, None, 100.0, True),
        (0.5, 1.0, 0.5, True),
        (0.5, 1.0, 0.51, False),
        (1.2, 1.0, 0.0, False),
        (1.0, 1.0, 0.0, False),  # reached: exhausted even if the next cost is unknown (0)
    ],
)
def test_within_budget(spent, budget, next_cost, ok):
    assert within_budget(spent, budget, next_cost) is ok
