"""How good is a cascade at choosing what to escalate: the figures routers are reported with.

Input: per case, the SLM's confidence and whether its answer was right, and the fallback's correctness and
cost on the same case (`policies.calibration.LabelledOutcome`). Escalating the k least confident answers
gives one operating point per k; from those:

- AUROC of the confidence for the SLM's own success (0.5: chance, 1: a perfect ranking);
- the oracle cascade: it escalates exactly the SLM's wrong answers, so its success is "either was right";
- APGR (RouteLLM): the performance gap recovered, (success - SLM) / (fallback - SLM), averaged over the share
  of requests escalated from 0 to 1; a random router scores 0.5 on it. Its ceiling depends on the SLM: where
  the SLM is rarely right even a perfect ranking must escalate most requests to recover the gap, so the APGR
  of a perfect ranking on the same cases is reported beside it;
- the share of requests that must be escalated to recover 50% and 80% of that gap;
- CPS at a target success (0.95x the fallback's by default), beside the oracle's CPS at the success the cascade
  reached there (the oracle escalates wrong answers only; see `_oracle_cps`) and the fallback's alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.calibration import LabelledOutcome
from policies.cost import cost_per_successful_task

__all__ = ["OperatingPoint", "at_threshold", "auroc", "operating_points", "routing_quality"]


@dataclass(frozen=True)
class OperatingPoint:
    escalated_share: float
    success_rate: float
    cps_usd: float  # inf when nothing succeeded
    accepted_error_rate: float | None  # among answers kept on the SLM; None when none is kept


def auroc(confidence: Sequence[float], right: Sequence[bool]) -> float | None:
    """Probability that a right answer outranks a wrong one (scikit-learn's); None without both kinds."""
    from sklearn.metrics import roc_auc_score

    if len(set(right)) < 2:
        return None
    return float(roc_auc_score(right, confidence))


def operating_points(outcomes: Sequence[LabelledOutcome]) -> list[OperatingPoint]:
    """One point per k = 0..n: the k least confident answers escalated (ties broken by input order)."""
    ranked = sorted(outcomes, key=lambda o: o.confidence)
    n = len(ranked)
    slm_cost = math.fsum(o.slm_cost_usd for o in ranked)
    slm_right = sum(o.slm_correct for o in ranked)
    points = []
    escalated_cost, escalated_right, escalated_slm_right = 0.0, 0, 0
    for k in range(n + 1):
        if k:
            outcome = ranked[k - 1]
            escalated_cost += outcome.fallback_cost_usd
            escalated_right += outcome.fallback_correct
            escalated_slm_right += outcome.slm_correct
        kept_right = slm_right - escalated_slm_right
        successes = kept_right + escalated_right
        points.append(OperatingPoint(
            escalated_share=k / n,
            success_rate=successes / n,
            cps_usd=cost_per_successful_task(slm_cost + escalated_cost, successes),
            accepted_error_rate=(n - k - kept_right) / (n - k) if k < n else None,
        ))
    return points


def _oracle_cps(outcomes: Sequence[LabelledOutcome], success_rate: float) -> float | None:
    """The oracle's CPS at ``success_rate``: it escalates only wrong SLM answers, in no particular order, until
    enough are fixed. In expectation that takes fixes / (share of wrong answers the fallback gets right)
    escalations at the mean fallback cost of a wrong answer; None if even escalating all of them falls short."""
    n = len(outcomes)
    wrong = [o for o in outcomes if not o.slm_correct]
    fixes_needed = success_rate * n - sum(o.slm_correct for o in outcomes)
    cost = math.fsum(o.slm_cost_usd for o in outcomes)
    if fixes_needed <= 1e-9:
        return cost_per_successful_task(cost, success_rate * n)
    fixable = sum(o.fallback_correct for o in wrong)
    if fixable < fixes_needed - 1e-9:
        return None
    escalations = fixes_needed * len(wrong) / fixable
    cost += escalations * math.fsum(o.fallback_cost_usd for o in wrong) / len(wrong)
    return cost_per_successful_task(cost, success_rate * n)


def at_threshold(outcomes: Sequence[LabelledOutcome], threshold: float) -> dict[str, Any]:
    """The cascade's operating point at a route's threshold: answers below it escalate."""
    n = len(outcomes)
    escalated = [o for o in outcomes if o.confidence < threshold]
    kept = [o for o in outcomes if o.confidence >= threshold]
    successes = sum(o.fallback_correct for o in escalated) + sum(o.slm_correct for o in kept)
    cost = math.fsum(o.slm_cost_usd for o in outcomes) + math.fsum(o.fallback_cost_usd for o in escalated)
    return {"threshold": threshold, "escalated_share": len(escalated) / n, "success_rate": successes / n,
            "cps_usd": _finite(cost_per_successful_task(cost, successes)),
            "accepted_error_rate": sum(not o.slm_correct for o in kept) / len(kept) if kept else None}


def routing_quality(outcomes: Sequence[LabelledOutcome], target_fraction_of_fallback: float = 0.95,
                    threshold: float | None = None) -> dict[str, Any]:
    """The figures of the module docstring, and the curve they come from; with ``threshold``, the operating
    point a route with that threshold would have had."""
    if not outcomes:
        raise ValueError("no outcomes")
    n = len(outcomes)
    slm = sum(o.slm_correct for o in outcomes) / n
    fallback = sum(o.fallback_correct for o in outcomes) / n
    oracle = sum(o.slm_correct or o.fallback_correct for o in outcomes) / n
    points = operating_points(outcomes)
    gap = fallback - slm
    pgr = [(p.success_rate - slm) / gap for p in points] if gap > 0 else None
    perfect = operating_points([dataclasses.replace(o, confidence=float(o.slm_correct)) for o in outcomes])
    perfect_pgr = [(p.success_rate - slm) / gap for p in perfect] if gap > 0 else None
    target = target_fraction_of_fallback * fallback
    reaching = next((p for p in points if p.success_rate >= target - 1e-12), None)
    oracle_cps = _oracle_cps(outcomes, reaching.success_rate) if reaching else None
    fallback_cps = cost_per_successful_task(math.fsum(o.fallback_cost_usd for o in outcomes),
                                            sum(o.fallback_correct for o in outcomes))
    return {
        "n": n,
        "auroc": auroc([o.confidence for o in outcomes], [o.slm_correct for o in outcomes]),
        "slm_success_rate": slm,
        "fallback_success_rate": fallback,
        "oracle_success_rate": oracle,
        "oracle_cps": _finite(cost_per_successful_task(
            math.fsum(o.slm_cost_usd + (0.0 if o.slm_correct else o.fallback_cost_usd) for o in outcomes),
            round(oracle * n))),
        "best_cascade_success_rate": max(p.success_rate for p in points),
        "best_cascade_escalated_share": max(points, key=lambda p: p.success_rate).escalated_share,
        "apgr": float(np.trapezoid(pgr, dx=1 / n)) if pgr is not None else None,
        # the ceiling on these cases: a confidence that ranks every right SLM answer above every wrong one
        "apgr_perfect_ranking": float(np.trapezoid(perfect_pgr, dx=1 / n)) if perfect_pgr is not None else None,
        "escalation_for_50pct_gap": _share_reaching(points, pgr, 0.5),
        "escalation_for_80pct_gap": _share_reaching(points, pgr, 0.8),
        "target_success_rate": target,
        "cascade_at_target": None if reaching is None else {
            "escalated_share": reaching.escalated_share, "success_rate": reaching.success_rate,
            "cps_usd": _finite(reaching.cps_usd)},
        "oracle_cps_at_target": _finite(oracle_cps),
        "cps_ratio_to_oracle": _ratio(reaching.cps_usd if reaching else None, oracle_cps),
        "fallback_cps": _finite(fallback_cps),
        "cps_ratio_to_fallback": _ratio(reaching.cps_usd if reaching else None, fallback_cps),
        "at_threshold": None if threshold is None else at_threshold(outcomes, threshold),
        "curve": [{"escalated_share": p.escalated_share, "success_rate": p.success_rate,
                   "cps_usd": _finite(p.cps_usd), "accepted_error_rate": p.accepted_error_rate} for p in points],
    }


def _share_reaching(points: Sequence[OperatingPoint], pgr: Sequence[float] | None, fraction: float) -> float | None:
    if pgr is None:
        return None
    return next((p.escalated_share for p, g in zip(points, pgr) if g >= fraction - 1e-12), None)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """A ratio of two CPS figures where both are finite and the denominator is positive."""
    if numerator is None or denominator is None or not math.isfinite(numerator) or not math.isfinite(denominator):
        return None
    return numerator / denominator if denominator > 0 else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
