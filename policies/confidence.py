"""How sure are we that an answer is good enough to return without escalating?

Two kinds of evidence: token uncertainty (what the model's own probabilities say) and verifier
verdicts (what deterministic checks say). A ``ConfidencePolicy`` turns them into one score in
[0, 1]. Whether that score accepts an answer is `policies.escalation.diagnose`, the one accept rule.

Unverified rule: a verdict whose verifier crashed or timed out (``Verdict.unverified``) is
neither a pass nor a fail. Scores ignore it, so such an answer still ranks above one that
verifiably failed when the cascade has to return its best attempt. ``diagnose`` refuses any answer
carrying one: we never auto-accept an answer we could not check. The escalation policy escalates
it with reason ``unverified`` (a repair cannot help: the model did nothing wrong that we know of).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from policies.verifiers import Verdict, any_failed

__all__ = [
    "CONFIDENCE_POLICIES",
    "LOGPROB_FLOOR",
    "ConfidencePolicy",
    "ConfidenceSignals",
    "FittedPolicy",
    "TokenUncertainty",
    "VerifierGatedPolicy",
    "WeightedPolicy",
    "build_confidence_policy",
    "logistic",
    "token_uncertainty",
]

# Engines report impossible tokens as -inf or -9999; past this the probability is 0 anyway,
# and a floor keeps every feature finite (so weight * feature is never inf or NaN).
LOGPROB_FLOOR = -100.0


@dataclass(frozen=True)
class TokenUncertainty:
    """Features of the generated tokens; ``None`` when the tier returned no logprobs.

    ``mean_logprob`` is the log of the geometric-mean token probability. ``decision_entropy``
    is in [0, 1]: the mean, over decision positions (tool name, enum value, first JSON token...),
    of the entropy of the renormalised top-k distribution divided by log k.
    """

    mean_logprob: float | None = None
    min_logprob: float | None = None
    decision_entropy: float | None = None

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("mean_logprob", self.mean_logprob, LOGPROB_FLOOR, 0.0),
            ("min_logprob", self.min_logprob, LOGPROB_FLOOR, 0.0),
            ("decision_entropy", self.decision_entropy, 0.0, 1.0),
        ):
            if value is not None and not low <= value <= high:  # also rejects NaN
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def token_uncertainty(
    logprobs: Sequence[float], decision_top_logprobs: Sequence[Sequence[float]] | None = None
) -> TokenUncertainty:
    """Summarise sampled-token logprobs and the top-k logprobs at decision positions.

    Logprobs are clamped to [LOGPROB_FLOOR, 0] (positive values are float noise). NaN raises.
    A decision position whose top-k are all -inf carries no distribution and raises.
    """
    clean = [_clamp(lp) for lp in logprobs]
    entropy = None
    if decision_top_logprobs:
        entropy = math.fsum(_normalised_entropy(top) for top in decision_top_logprobs) / len(decision_top_logprobs)
    if not clean:
        return TokenUncertainty(decision_entropy=entropy)
    return TokenUncertainty(math.fsum(clean) / len(clean), min(clean), entropy)


def _clamp(logprob: float) -> float:
    if math.isnan(logprob):
        raise ValueError("logprob is NaN")
    return min(0.0, max(LOGPROB_FLOOR, logprob))


def _normalised_entropy(top: Sequence[float]) -> float:
    if not top:
        raise ValueError("a decision position needs at least one top logprob")
    if any(math.isnan(lp) for lp in top):
        raise ValueError("logprob is NaN")
    peak = max(top)
    if peak == -math.inf:
        raise ValueError("all top logprobs are -inf at a decision position")
    if len(top) == 1:
        return 0.0
    weights = [math.exp(lp - peak) for lp in top]  # shift by the max: no underflow to all-zero
    total = math.fsum(weights)
    entropy = -math.fsum(w / total * math.log(w / total) for w in weights if w > 0.0)
    return min(1.0, max(0.0, entropy / math.log(len(top))))


@dataclass(frozen=True)
class ConfidenceSignals:
    """Everything a confidence policy may look at for one answer: ``features`` are the named features of
    ``policies.answer_features`` (value-level logprobs, grounding, agreement...)."""

    tokens: TokenUncertainty
    verdicts: tuple[Verdict, ...] = ()
    features: Mapping[str, float] = field(default_factory=dict)

    @property
    def any_failed(self) -> bool:
        return any_failed(self.verdicts)


def logistic(x: float) -> float:
    """Numerically stable 1 / (1 + e^-x): never overflows, always in [0, 1]."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class ConfidencePolicy(ABC):
    """Scores an answer in [0, 1]; higher means more likely correct."""

    name: ClassVar[str]

    @abstractmethod
    def score(self, signals: ConfidenceSignals) -> float:
        """Confidence in [0, 1]. Must ignore unverified verdicts (see module docstring)."""


@dataclass(frozen=True)
class VerifierGatedPolicy(ConfidencePolicy):
    """0 if any verifier failed; else ``logistic(slope * (mean_logprob - midpoint))``.

    Verifiers catch invalid answers; the mean logprob ranks the valid ones. With the defaults a
    geometric-mean token probability of e^-0.3 ~ 0.74 scores 0.5, e^-0.05 ~ 0.95 scores ~0.92.
    Without logprobs (some API tiers) the score is ``no_logprobs_score``: a neutral prior, so
    such a tier is escalated under thresholds above it unless configured otherwise.
    """

    name: ClassVar[str] = "verifier_gated"
    midpoint: float = -0.3
    slope: float = 10.0
    no_logprobs_score: float = 0.5

    def __post_init__(self) -> None:
        _require_finite(midpoint=self.midpoint, slope=self.slope)
        if self.slope <= 0 or not 0.0 <= self.no_logprobs_score <= 1.0:
            raise ValueError("slope must be > 0 and no_logprobs_score in [0, 1]")

    def score(self, signals: ConfidenceSignals) -> float:
        if signals.any_failed:
            return 0.0
        mean = signals.tokens.mean_logprob
        if mean is None:
            return self.no_logprobs_score
        return logistic(self.slope * (mean - self.midpoint))


@dataclass(frozen=True)
class WeightedPolicy(ConfidencePolicy):
    """``logistic(bias + sum(weight * feature))`` over token and verifier features.

    Features: mean and min logprob (<= 0), decision entropy and verifier score (both in [0, 1];
    verifier score = mean score of the verified verdicts). A missing feature contributes 0, so
    it neither helps nor hurts. The defaults are an uncalibrated starting point; fit the weights
    (logistic regression on labelled outcomes) before trusting the scores as probabilities.
    """

    name: ClassVar[str] = "weighted"
    bias: float = 0.0
    w_mean_logprob: float = 4.0
    w_min_logprob: float = 0.5
    w_decision_entropy: float = -3.0
    w_verifier: float = 3.0

    def __post_init__(self) -> None:
        _require_finite(
            bias=self.bias,
            w_mean_logprob=self.w_mean_logprob,
            w_min_logprob=self.w_min_logprob,
            w_decision_entropy=self.w_decision_entropy,
            w_verifier=self.w_verifier,
        )

    def score(self, signals: ConfidenceSignals) -> float:
        t = signals.tokens
        scores = [v.score for v in signals.verdicts if v.score is not None]
        features = (
            (self.w_mean_logprob, t.mean_logprob),
            (self.w_min_logprob, t.min_logprob),
            (self.w_decision_entropy, t.decision_entropy),
            (self.w_verifier, math.fsum(scores) / len(scores) if scores else None),
        )
        return logistic(self.bias + math.fsum(w * x for w, x in features if x is not None))


@dataclass(frozen=True)
class FittedPolicy(ConfidencePolicy):
    """``logistic(bias + sum(weight * (feature - mean) / scale))``: a logistic regression fitted on labelled
    answers by `cascade calibrate --fit`, over the named features of ``policies.answer_features``.

    A feature the answer lacks (a remote tier returns no logprobs) contributes 0, i.e. it is taken at its
    training mean: it neither helps nor hurts. The score is the model's probability that the answer is right.
    """

    name: ClassVar[str] = "fitted"
    features: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    means: tuple[float, ...] = ()
    scales: tuple[float, ...] = ()
    bias: float = 0.0

    def __post_init__(self) -> None:
        lengths = {len(self.features), len(self.weights), len(self.means), len(self.scales)}
        if len(lengths) != 1:
            raise ValueError("features, weights, means and scales must have the same length")
        _require_finite(bias=self.bias, **{f"weight of {n}": w for n, w in zip(self.features, self.weights)},
                        **{f"mean of {n}": m for n, m in zip(self.features, self.means)})
        if not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ValueError("every scale must be finite and > 0")
        if len(set(self.features)) != len(self.features):
            raise ValueError("a feature is named twice")

    def score(self, signals: ConfidenceSignals) -> float:
        total = self.bias
        for name, weight, mean, scale in zip(self.features, self.weights, self.means, self.scales):
            value = signals.features.get(name)
            if value is not None:
                total += weight * (value - mean) / scale
        return logistic(total)


def build_confidence_policy(name: str, parameters: Mapping[str, Any] | None = None) -> ConfidencePolicy:
    """The named policy with its parameters (a fitted model's weights); unknown names raise ``KeyError``."""
    policy = CONFIDENCE_POLICIES[name]
    if not parameters:
        return policy()
    return policy(**{k: tuple(v) if isinstance(v, list) else v for k, v in parameters.items()})


def _require_finite(**values: float) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"must be finite: {', '.join(bad)}")


CONFIDENCE_POLICIES: dict[str, type[ConfidencePolicy]] = {
    VerifierGatedPolicy.name: VerifierGatedPolicy,
    WeightedPolicy.name: WeightedPolicy,
    FittedPolicy.name: FittedPolicy,
}
