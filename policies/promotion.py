"""Whether a freshly trained adapter replaces the model a route serves now.

An adapter is judged the way the cascade is: by success on tasks it never saw (the held-out split) and by
cost per successful task. It must win on both; a higher success rate bought with a higher CPS (longer
answers, more escalations) is not an improvement, and a tie keeps the serving model: swapping models has a
cost and a risk that an equal result does not pay for.

Winning on its own route is not enough: an adapter trained on one route's traffic can forget what the base
model did well elsewhere. A regression set (other requests the same tier answers) is replayed to both, and
the adapter may lose at most a stated margin of success there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.cost import cost_per_successful_task

__all__ = ["HeldOutResult", "PromotionDecision", "RegressionCheck", "decide_promotion"]


@dataclass(frozen=True)
class HeldOutResult:
    """One model's run over the held-out cases: how many it answered correctly and what the run cost."""

    cases: int
    successes: int
    cost_usd: float

    def __post_init__(self) -> None:
        if self.cases < 1:
            raise ValueError(f"cases must be at least 1, got {self.cases}")
        if not 0 <= self.successes <= self.cases:
            raise ValueError(f"successes must be between 0 and cases ({self.cases}), got {self.successes}")
        if not (math.isfinite(self.cost_usd) and self.cost_usd >= 0):
            raise ValueError(f"cost_usd must be a finite non-negative number, got {self.cost_usd}")

    @property
    def success_rate(self) -> float:
        return self.successes / self.cases

    @property
    def cps(self) -> float:
        """Cost per successful task; inf with no success, so a model that never succeeds never looks cheap."""
        return cost_per_successful_task(self.cost_usd, self.successes)


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def _describe(result: HeldOutResult) -> str:
    return f"{result.successes}/{result.cases} ({result.success_rate:.1%}), CPS ${result.cps:.6g}"


@dataclass(frozen=True)
class RegressionCheck:
    """Both models on the regression set, and how much success the adapter may lose there."""

    base: HeldOutResult
    adapted: HeldOutResult
    margin: float

    def __post_init__(self) -> None:
        if self.base.cases != self.adapted.cases:
            raise ValueError(f"the regression set ran {self.base.cases} cases on the base and {self.adapted.cases} "
                             "on the adapter; they must match")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")

    @property
    def drop(self) -> float:
        """Success the adapter lost on the regression set (negative when it gained)."""
        return self.base.success_rate - self.adapted.success_rate


def decide_promotion(base: HeldOutResult, adapted: HeldOutResult,
                     regression: RegressionCheck | None = None) -> PromotionDecision:
    """Promote only when the adapted model has a strictly higher success rate AND a strictly lower CPS on the
    route's held-out cases, and (given a regression check) loses at most its margin of success there.

    Raises ValueError when the two runs cover different numbers of cases: they must be the same split.
    """
    if base.cases != adapted.cases:
        raise ValueError(f"base ran {base.cases} held-out cases and the adapter {adapted.cases}; they must match")
    scores = f"adapted {_describe(adapted)} vs base {_describe(base)}"
    if adapted.success_rate <= base.success_rate:
        return PromotionDecision(False, f"success rate not higher: {scores}")
    if adapted.cps >= base.cps:
        return PromotionDecision(False, f"cost per successful task not lower: {scores}")
    if regression is None:
        return PromotionDecision(True, f"better on both: {scores}")
    kept = (f"regression set {regression.adapted.successes}/{regression.adapted.cases} vs base "
            f"{regression.base.successes}/{regression.base.cases}, margin {regression.margin:.0%}")
    if regression.drop > regression.margin + 1e-12:
        return PromotionDecision(False, f"forgets other requests: {kept}; route: {scores}")
    return PromotionDecision(True, f"better on both: {scores}; {kept}")
