"""What an attempt costs, and what a *successful* task costs.

The cascade is judged by cost per successful task (CPS), not cost per request: a cheap tier that
fails often is not cheap once its failed attempts and the escalations they trigger are paid for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TierPrice", "attempt_cost", "cost_per_successful_task", "within_budget"]


@dataclass(frozen=True)
class TierPrice:
    """Price of a tier per million tokens; a self-hosted tier is priced per token too (its config's `price`)."""

    input_per_1m_usd: float
    output_per_1m_usd: float

    def __post_init__(self) -> None:
        for name in ("input_per_1m_usd", "output_per_1m_usd"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite non-negative price, got {value}")


def attempt_cost(price: TierPrice, input_tokens: int, output_tokens: int) -> float:
    """USD cost of one attempt on one tier."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts must be non-negative")
    return input_tokens * price.input_per_1m_usd / 1e6 + output_tokens * price.output_per_1m_usd / 1e6


def cost_per_successful_task(total_cost_usd: float, successes: int) -> float:
    """Total spend (failed and escalated attempts included) divided by successful tasks.

    With no success the answer is ``math.inf``, even when nothing was spent: a configuration
    that never succeeds must never look cheapest, and ``inf`` sorts last in ``min`` and fails
    every ``<=`` comparison, where 0 or NaN would silently win.
    """
    if successes < 0 or total_cost_usd < 0:
        raise ValueError("successes and total_cost_usd must be non-negative")
    return math.inf if successes == 0 else total_cost_usd / successes


def within_budget(spent_usd: float, budget_usd: float | None, next_cost_usd: float = 0.0) -> bool:
    """May we spend ``next_cost_usd`` more on this request? ``budget_usd=None`` means no cap.

    A budget already reached is exhausted even if the next cost is estimated at 0: no attempt
    is free, and 0 usually means "unknown", which must not let spend creep past the cap.
    """
    if spent_usd < 0 or next_cost_usd < 0:
        raise ValueError("costs must be non-negative")
    return budget_usd is None or (spent_usd < budget_usd and spent_usd + next_cost_usd <= budget_usd)
