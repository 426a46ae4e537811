"""Where a request goes: features, the start tier, the next tier, and tier health.

Tiers are indexed 0 (the SLM, cheapest) upwards. Everything here is handed snapshots (request
features, the set of tiers cooling down, ``now``) and fetches nothing, so
every rule is testable without a cluster. ``TierCooldown`` is the one stateful piece: a per-tier
circuit breaker whose clock is passed in. What to do after an attempt is ``policies.escalation``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "DIFFICULTY_PREDICTORS",
    "ConstantDifficulty",
    "DifficultyPredictor",
    "HeuristicDifficulty",
    "RequestFeatures",
    "TierCooldown",
    "choose_start_tier",
    "cooling_tiers",
    "next_available_tier",
    "request_features",
    "schema_depth",
]

_MAX_SCHEMA_NODES_DEEP = 64
_CONTAINER_KEYS = ("properties", "patternProperties", "items", "prefixItems", "additionalProperties")
_SAME_LEVEL_KEYS = ("allOf", "anyOf", "oneOf", "then", "else")


# --- request features and pre-routing ------------------------------------------------------


@dataclass(frozen=True)
class RequestFeatures:
    """What is known about a request before any model runs."""

    prompt_tokens: int
    n_tools: int
    schema_depth: int

    def __post_init__(self) -> None:
        if min(self.prompt_tokens, self.n_tools, self.schema_depth) < 0:
            raise ValueError("prompt_tokens, n_tools and schema_depth must be non-negative")


def schema_depth(schema: Any) -> int:
    """Nesting depth of the data a schema describes: scalar 0, flat object 1, object of arrays 2.

    ``allOf``/``anyOf``/``oneOf``/``then``/``else`` describe the same level; ``$ref`` is not
    followed (it may be recursive). Client schemas are untrusted, so exploration stops after
    64 nested schema nodes, combinators included.
    """
    return _depth(schema, _MAX_SCHEMA_NODES_DEEP)


def _depth(node: Any, budget: int) -> int:
    if not isinstance(node, Mapping) or budget <= 0:
        return 0
    children: list[Any] = []
    for key in _CONTAINER_KEYS:
        value = node.get(key)
        if key in ("properties", "patternProperties") and isinstance(value, Mapping):
            children.extend(value.values())
        elif isinstance(value, list):
            children.extend(value)
        elif isinstance(value, Mapping):
            children.append(value)
    is_container = bool(children) or node.get("type") in ("object", "array")
    own = 1 + max((_depth(c, budget - 1) for c in children), default=0) if is_container else 0
    alternatives = [a for k in _SAME_LEVEL_KEYS for a in _as_list(node.get(k))]
    return max([own, *(_depth(a, budget - 1) for a in alternatives)])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def request_features(
    messages_token_count: int,
    tools: Sequence[Mapping[str, Any]] | None,
    response_schema: Mapping[str, Any] | None,
) -> RequestFeatures:
    """Features of a request; ``schema_depth`` is the deepest of the response and tool schemas."""
    tools = tools or ()
    schemas = [response_schema, *(t.get("function", {}).get("parameters") for t in tools)]
    return RequestFeatures(
        prompt_tokens=messages_token_count,
        n_tools=len(tools),
        schema_depth=max(schema_depth(s) for s in schemas),
    )


class DifficultyPredictor(ABC):
    """Predicts, before any attempt, how likely the SLM is to fail: 0 easy .. 1 hard."""

    name: ClassVar[str]

    @abstractmethod
    def score(self, features: RequestFeatures) -> float:
        """Difficulty in [0, 1]."""


@dataclass(frozen=True)
class ConstantDifficulty(DifficultyPredictor):
    """Same score for every request; the default 0 means "always start on the SLM"."""

    name: ClassVar[str] = "constant"
    value: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"value must be in [0, 1], got {self.value}")

    def score(self, features: RequestFeatures) -> float:
        return self.value


@dataclass(frozen=True)
class HeuristicDifficulty(DifficultyPredictor):
    """Weighted mean of saturating features: long prompts, many tools, deep schemas."""

    name: ClassVar[str] = "heuristic"
    long_prompt_tokens: int = 8000
    many_tools: int = 16
    deep_schema: int = 6
    weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # prompt, tools, depth

    def __post_init__(self) -> None:
        if min(self.long_prompt_tokens, self.many_tools, self.deep_schema) <= 0:
            raise ValueError("saturation points must be positive")
        if any(not math.isfinite(w) or w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError("weights must be finite, non-negative, and not all zero")

    def score(self, features: RequestFeatures) -> float:
        terms = [
            min(1.0, features.prompt_tokens / self.long_prompt_tokens),
            min(1.0, features.n_tools / self.many_tools),
            min(1.0, features.schema_depth / self.deep_schema),
        ]
        return min(1.0, math.fsum(w * t for w, t in zip(self.weights, terms, strict=True)) / math.fsum(self.weights))


def choose_start_tier(
    features: RequestFeatures, predictor: DifficultyPredictor, hard_threshold: float, available_tiers: Sequence[int]
) -> int | None:
    """First tier to try: skip the SLM (tier 0) when the request looks hard.

    ``available_tiers`` are the tiers not cooling down. A hard request starts at the lowest
    available tier above 0, or at tier 0 if that is all there is (an answer beats none).
    ``None`` when nothing is available.
    """
    tiers = sorted(available_tiers)
    if not tiers:
        return None
    if predictor.score(features) >= hard_threshold:
        return next((t for t in tiers if t > 0), tiers[0])
    return tiers[0]


def next_available_tier(current: int, n_tiers: int, cooling: frozenset[int] = frozenset()) -> int | None:
    """Lowest tier above ``current`` and below ``n_tiers`` that is not cooling down."""
    return next((t for t in range(current + 1, n_tiers) if t not in cooling), None)


# --- circuit breaker -------------------------------------------------------------------------


class TierCooldown:
    """Per-tier circuit breaker: closed, open, half-open.

    ``failure_threshold`` consecutive errors within ``window_s`` open it for ``cooldown_s``. After the cooldown it
    is half-open: exactly one request, the probe, is let through (``allow``), and while it is out every other
    request sees the tier as unavailable and goes elsewhere. The probe's error re-opens it at once, its success
    closes it. A probe that reports nothing within ``cooldown_s`` (its request was cancelled) is given up and the
    next request probes. The caller passes ``now`` (monotonic seconds); not thread-safe (one event loop).
    """

    def __init__(self, failure_threshold: int = 3, window_s: float = 30.0, cooldown_s: float = 60.0) -> None:
        if failure_threshold < 1 or window_s <= 0 or cooldown_s <= 0:
            raise ValueError("failure_threshold >= 1, window_s > 0 and cooldown_s > 0 required")
        self.failure_threshold, self.window_s, self.cooldown_s = failure_threshold, window_s, cooldown_s
        self._errors: deque[float] = deque()
        self._open_until: float | None = None  # None: closed
        self._probe_since: float | None = None  # half-open, with a probe out since then

    def available(self, now: float) -> bool:
        """Would `allow` let a request through now? (No side effect: for choosing among tiers.)"""
        if self._open_until is None:
            return True
        if now < self._open_until:
            return False
        return self._probe_since is None or now - self._probe_since >= self.cooldown_s

    def allow(self, now: float) -> bool:
        """Admit a request to the tier: always when closed; after the cooldown, only the one probe."""
        if not self.available(now):
            return False
        if self._open_until is not None:
            self._probe_since = now
        return True

    def record_success(self, now: float) -> None:
        self._errors.clear()
        self._open_until = self._probe_since = None

    def record_error(self, now: float) -> None:
        if self._open_until is not None:
            if self._probe_since is not None:  # the probe failed: open again
                self._open_until, self._probe_since = now + self.cooldown_s, None
            return  # errors of requests in flight when it opened change nothing
        while self._errors and now - self._errors[0] > self.window_s:
            self._errors.popleft()
        self._errors.append(now)
        if len(self._errors) >= self.failure_threshold:
            self._errors.clear()
            self._open_until = now + self.cooldown_s


def cooling_tiers(breakers: Sequence[TierCooldown], now: float) -> frozenset[int]:
    """Snapshot of the tier indices in cooldown at ``now``, for the pure functions above."""
    return frozenset(i for i, b in enumerate(breakers) if not b.available(now))


DIFFICULTY_PREDICTORS: dict[str, type[DifficultyPredictor]] = {
    ConstantDifficulty.name: ConstantDifficulty,
    HeuristicDifficulty.name: HeuristicDifficulty,
}
