"""Choose the acceptance threshold from labelled outcomes.

For a threshold t the two-tier cascade accepts the SLM answer when its confidence >= t (paying
the SLM cost) and otherwise escalates (paying the SLM cost *and* the fallback cost, and getting
the fallback's correctness). The best threshold minimises cost per successful task (CPS: all
spend, failed and escalated attempts included, over successful tasks) while keeping the success
rate at or above a floor. Only thresholds at observed confidences (plus 0 and 1) need testing:
between two observed values the set of accepted answers, hence every metric, is constant.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from policies.cost import cost_per_successful_task

__all__ = ["CalibrationError", "CalibrationPoint", "CalibrationResult", "LabelledOutcome", "calibrate"]


class CalibrationError(ValueError):
    """No data, or no threshold meets the success-rate floor."""


@dataclass(frozen=True)
class LabelledOutcome:
    """One request replayed through both tiers, with ground truth for each answer."""

    confidence: float
    slm_correct: bool
    slm_cost_usd: float
    fallback_cost_usd: float
    fallback_correct: bool

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")
        if not (self.slm_cost_usd >= 0 and self.fallback_cost_usd >= 0):
            raise ValueError("costs must be non-negative")
        if not (math.isfinite(self.slm_cost_usd) and math.isfinite(self.fallback_cost_usd)):
            raise ValueError("costs must be finite")


@dataclass(frozen=True)
class CalibrationPoint:
    threshold: float
    success_rate: float
    cps_usd: float  # math.inf when nothing succeeds
    total_cost_usd: float
    accepted_fraction: float  # share of requests answered by the SLM


@dataclass(frozen=True)
class CalibrationResult:
    best: CalibrationPoint
    curve: tuple[CalibrationPoint, ...]  # one point per candidate threshold, ascending


def calibrate(
    outcomes: Sequence[LabelledOutcome], min_success_rate: float, thresholds: Iterable[float] | None = None
) -> CalibrationResult:
    """Threshold minimising CPS subject to ``success_rate >= min_success_rate``.

    ``thresholds`` defaults to every observed confidence plus 0 and 1. Ties on CPS go to the
    higher success rate, then the lower threshold (more traffic stays on the SLM).
    """
    if not outcomes:
        raise CalibrationError("no labelled outcomes to calibrate on")
    if not 0.0 <= min_success_rate <= 1.0:
        raise ValueError(f"min_success_rate must be in [0, 1], got {min_success_rate}")
    candidates = sorted({0.0, 1.0, *(o.confidence for o in outcomes)} if thresholds is None else set(thresholds))
    if not candidates or not all(0.0 <= t <= 1.0 for t in candidates):
        raise ValueError("thresholds must be a non-empty collection of values in [0, 1]")

    curve = tuple(_curve(outcomes, candidates))
    feasible = [p for p in curve if p.success_rate >= min_success_rate]
    if not feasible:
        best_rate = max(p.success_rate for p in curve)
        raise CalibrationError(f"no threshold reaches success rate {min_success_rate:.4f}; the best is {best_rate:.4f}")
    best = min(feasible, key=lambda p: (p.cps_usd, -p.success_rate, p.threshold))
    return CalibrationResult(best=best, curve=curve)


def _curve(outcomes: Sequence[LabelledOutcome], candidates: Sequence[float]) -> Iterable[CalibrationPoint]:
    """All points in O(n log n): outcomes sorted by confidence, escalated = a prefix, accepted = the rest."""
    ranked = sorted(outcomes, key=lambda o: o.confidence)
    confidences = [o.confidence for o in ranked]
    n = len(ranked)
    # prefix sums over the sorted order; index i = the i least confident outcomes
    fallback_cost = [0.0, *itertools.accumulate(o.fallback_cost_usd for o in ranked)]
    fallback_ok = [0, *itertools.accumulate(int(o.fallback_correct) for o in ranked)]
    slm_ok = [0, *itertools.accumulate(int(o.slm_correct) for o in ranked)]
    slm_cost = math.fsum(o.slm_cost_usd for o in ranked)  # paid on every request
    for t in candidates:
        escalated = bisect.bisect_left(confidences, t)  # confidence < t escalates
        successes = fallback_ok[escalated] + slm_ok[n] - slm_ok[escalated]
        total = slm_cost + fallback_cost[escalated]
        yield CalibrationPoint(
            threshold=t,
            success_rate=successes / n,
            cps_usd=cost_per_successful_task(total, successes),
            total_cost_usd=total,
            accepted_fraction=(n - escalated) / n,
        )
