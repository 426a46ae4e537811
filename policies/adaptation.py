"""When a route adapts: whether a round is due, and whether a promoted adapter stays in service.

A round is due once enough new verified escalations were recorded since the last one, and not before the
route's minimum interval: each round trains on everything recorded so far, so rounds closer together would
mostly relearn the same data.

Held-out replay decides promotion, but live traffic has the last word: feedback from clients and the
verifiers' verdicts on every request. Once an adapter has served enough requests, a success rate that fell
by more than the allowed drop below the rate the route had before the adapter takes it out of service. Too
few requests on either side decide nothing: a handful of failures is not evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LiveOutcomes", "RollbackDecision", "judge_live", "round_due"]


@dataclass(frozen=True)
class LiveOutcomes:
    """Live requests of a route served by one model, and how many of them succeeded."""

    requests: int
    successes: int

    def __post_init__(self) -> None:
        if not 0 <= self.successes <= self.requests:
            raise ValueError(f"successes must be between 0 and requests ({self.requests}), got {self.successes}")

    @property
    def success_rate(self) -> float:
        return self.successes / self.requests if self.requests else 0.0

    def describe(self) -> str:
        return f"{self.successes}/{self.requests} ({self.success_rate:.0%})"


@dataclass(frozen=True)
class RollbackDecision:
    roll_back: bool
    reason: str


def judge_live(before: LiveOutcomes, after: LiveOutcomes, min_requests: int, max_drop: float) -> RollbackDecision:
    """Roll back when both sides have at least `min_requests` and success fell by more than `max_drop`."""
    if min_requests < 1 or not 0 <= max_drop < 1:
        raise ValueError(f"min_requests must be >= 1 and max_drop in [0, 1), got {min_requests} and {max_drop}")
    if before.requests < min_requests:
        return RollbackDecision(False, f"no baseline: {before.requests} live requests before promotion, "
                                       f"{min_requests} needed")
    if after.requests < min_requests:
        return RollbackDecision(False, f"watching: {after.requests} of {min_requests} live requests so far")
    figures = f"live success {after.describe()} since promotion vs {before.describe()} before"
    if before.success_rate - after.success_rate > max_drop + 1e-12:
        return RollbackDecision(True, f"{figures}: dropped more than {max_drop:.0%}")
    return RollbackDecision(False, f"{figures}: within {max_drop:.0%}")


def round_due(new_examples: int, after_new_examples: int | None, since_last_round_s: float | None,
              min_interval_s: float, last_round_running: bool = False) -> bool:
    """A policy round starts now? `since_last_round_s` is None when the route never had a round."""
    if after_new_examples is None or last_round_running or new_examples < after_new_examples:
        return False
    return since_last_round_s is None or since_last_round_s >= min_interval_s
