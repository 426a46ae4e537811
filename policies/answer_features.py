"""The named features of one answer that a confidence policy scores.

One function builds them, both where the cascade serves a request and where `cascade calibrate --fit` and the
benchmark's routing study replay recorded answers, so a model fitted offline sees exactly what it will see
online. Every feature is a plain float; a feature that does not apply (no logprobs from a remote tier, no
value in the answer) is left out, and the fitted model gives a missing feature its training mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from policies.confidence import token_uncertainty
from policies.grounding import GroundingReport
from policies.value_tokens import value_token_features
from policies.verifiers import Verdict

__all__ = ["FEATURES", "FEATURE_GROUPS", "answer_features"]

# Groups for the ablation the benchmark prints; every feature belongs to exactly one.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "logprobs": ("mean_logprob", "min_logprob", "decision_entropy", "value_mean_logprob", "value_min_logprob",
                 "value_min_margin", "value_mean_margin", "name_min_logprob"),
    "verifiers": ("verifier", "value_count"),
    "grounding": ("grounding", "grounding_min", "duplicate_calls"),
    "size": ("prompt_tokens_log", "answer_tokens_log"),
}
FEATURES: tuple[str, ...] = tuple(name for group in FEATURE_GROUPS.values() for name in group)


def _decision_top_logprobs(tokens: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """Top-k logprobs at decision tokens (those carrying letters or digits), for the decision entropy."""
    return [
        [float(alt["logprob"]) for alt in token.get("top_logprobs") or []]
        for token in tokens
        if any(ch.isalnum() for ch in str(token.get("token", ""))) and token.get("top_logprobs")
    ]


def answer_features(
    tokens: Sequence[Mapping[str, Any]] | None,
    verdicts: Sequence[Verdict],
    grounding: GroundingReport | None = None,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Features of an answer from its tokens (OpenAI ``logprobs.content``), the form verifiers' verdicts, its
    grounding report and its size (OpenAI ``usage``: a small model errs more on long prompts and long answers)."""
    features: dict[str, float] = {}
    for name, key in (("prompt_tokens_log", "prompt_tokens"), ("answer_tokens_log", "completion_tokens")):
        if usage and isinstance(usage.get(key), int) and usage[key] >= 0:
            features[name] = math.log1p(usage[key])
    if tokens:
        overall = token_uncertainty([float(t["logprob"]) for t in tokens], _decision_top_logprobs(tokens) or None)
        values = value_token_features(tokens)
        candidates = {
            "mean_logprob": overall.mean_logprob,
            "min_logprob": overall.min_logprob,
            "decision_entropy": overall.decision_entropy,
            "value_mean_logprob": values.mean_logprob,
            "value_min_logprob": values.min_logprob,
            "value_min_margin": values.min_margin,
            "value_mean_margin": values.mean_margin,
            "name_min_logprob": values.name_min_logprob,
        }
        features.update({name: value for name, value in candidates.items() if value is not None})
    form = [v.score for v in verdicts if v.score is not None and v.name != "grounding"]
    if form:
        features["verifier"] = math.fsum(form) / len(form)
    if grounding is not None:
        features["grounding"] = grounding.score
        features["grounding_min"] = grounding.min_support
        features["duplicate_calls"] = float(grounding.duplicate_calls)
        features["value_count"] = math.log1p(len(grounding.supports))
    return features
