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

__all__ = ["CalibrationError", "CalibrationPoint", "CalibrationResult", "Certificate", "InsufficientDataError",
           "LabelledOutcome", "accepted_needed", "calibrate", "certify_threshold", "clopper_pearson_upper"]


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


COVERAGE_LEVELS = 10  # candidate thresholds of `certify_threshold`: accepting 10%, 20%, ... of the answers


class InsufficientDataError(CalibrationError):
    """Too few labelled answers to certify the target; ``needed`` says how many accepted answers would do."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


@dataclass(frozen=True)
class Certificate:
    """The evidence behind a certified threshold: of ``n_accepted`` labelled answers at or above it, ``errors``
    were wrong, and with confidence ``1 - delta`` the error rate of accepted answers is at most ``upper_bound``
    (one-sided Clopper-Pearson), which is at most ``target_error``."""

    threshold: float
    n_accepted: int
    errors: int
    upper_bound: float
    target_error: float
    delta: float
    n_total: int


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """One-sided upper bound on an error rate: with probability at least 1 - delta the true rate is below it."""
    from scipy.stats import beta

    if n <= 0 or not 0 <= errors <= n:
        raise ValueError(f"need 0 <= errors <= n and n > 0, got errors={errors}, n={n}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return 1.0 if errors == n else float(beta.ppf(1.0 - delta, errors + 1, n - errors))


def accepted_needed(target_error: float, delta: float) -> int:
    """The fewest accepted answers that could certify ``target_error`` at all: with no error among n, the
    bound is 1 - delta^(1/n)."""
    return math.ceil(math.log(delta) / math.log1p(-target_error))


def certify_threshold(scored: Sequence[tuple[float, bool]], target_error: float, delta: float,
                      levels: int = COVERAGE_LEVELS) -> Certificate:
    """The lowest of a few thresholds whose accepted answers (confidence >= threshold) have an error rate at
    most ``target_error`` with confidence ``1 - delta``, from (confidence, correct) pairs the model was not
    fitted on.

    The candidates are fixed before any label is read: the thresholds that accept 1/levels, 2/levels, ... of
    the answers. Each is tested with a one-sided Clopper-Pearson bound at delta / levels, so by the union bound
    the chance that the one returned errs more than promised is at most ``delta``, however many pass. Too
    little evidence raises ``InsufficientDataError`` saying how much more is needed.
    """
    if not 0.0 < target_error < 1.0:
        raise ValueError(f"target error must be in (0, 1), got {target_error}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    n = len(scored)
    needed = accepted_needed(target_error, delta / levels)
    if n < needed:
        raise InsufficientDataError(
            f"{n} labelled answers cannot certify an error of at most {target_error:g} at delta {delta:g}: even "
            f"with no error it takes {needed} accepted answers; label at least {needed - n} more", needed)
    ranked = sorted(scored, key=lambda pair: -pair[0])
    negated = [-confidence for confidence, _ in ranked]  # ascending, for bisect
    wrong_so_far = list(itertools.accumulate(not correct for _, correct in ranked))
    best: Certificate | None = None
    for level in range(1, levels + 1):
        threshold = ranked[math.ceil(level * n / levels) - 1][0]
        accepted = bisect.bisect_right(negated, -threshold)  # ties with the threshold are accepted too
        errors = wrong_so_far[accepted - 1]
        bound = clopper_pearson_upper(errors, accepted, delta / levels)
        if bound <= target_error and (best is None or threshold < best.threshold):
            best = Certificate(threshold, accepted, errors, bound, target_error, delta, n)
    if best is None:
        raise InsufficientDataError(
            f"no threshold certifies an error of at most {target_error:g} at delta {delta:g} on {n} held-out "
            f"answers: label more answers (at least {needed} accepted with no error would do) or raise the target "
            "error", needed)
    return best
