"""Pure functions turning one request's spans into accounted units, and units into summary figures.

Kept apart from the span processor so the arithmetic (the part a dashboard is judged by) is testable
without threads, clocks or an SDK pipeline.

Rules, written once here:
- cost, tokens and energy are additive: a request's figure is the sum over its root span and every
  `cascade.*` span below it (a tier attempt's over that attempt's subtree). Put each figure on exactly
  one span. Cost of failed and escalated attempts is included, which is the point of CPS.
- a request succeeds iff `cascade.outcome == "success"`; without that attribute, iff its span status
  is not ERROR. Late feedback overrides either.
- among a request's tier attempts (ordered by start time) the last is final: it is the one that
  succeeds when the request does; every earlier attempt counts as escalated.
- a request's `schema_valid` / `tool_call.executable` come from the root span when set there, else
  from its final attempt.
- energy with no `cascade.energy_source` counts as modelled: a figure not known to be measured is
  never reported as measured. Figures from different sources aggregate to the label "mixed".
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from cluster.telemetry import semconv as sc
from policies.cost import cost_per_successful_task

UNKNOWN = "unknown"
"""Route or tier name used when the span does not say."""

SNAPSHOT_KEYS: tuple[str, ...] = (
    "requests",
    "successes",
    "cps",
    "success_rate",
    "schema_validity_rate",
    "executable_call_rate",
    "escalation_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "tokens_in",
    "tokens_out",
    "energy_per_request_j",
    "energy_source",
)


@dataclass(frozen=True)
class Unit:
    """One accounted item: a whole request, or a single tier attempt."""

    success: bool
    escalated: bool
    latency_ms: float
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    energy_j: float | None = None
    energy_source: str | None = None
    schema_valid: bool | None = None
    executable: bool | None = None  # None: no tool call to judge


_NO_ATTEMPT = Unit(success=False, escalated=False, latency_ms=0.0)
"""Stands in for the final attempt of a request answered without any tier (nothing to fall back on)."""


@dataclass(frozen=True)
class RequestRecord:
    """A finished request as the window stores it; attempts are (tier, unit), final attempt last."""

    request_id: str
    route: str
    recorded_at: float
    request: Unit
    attempts: tuple[tuple[str, Unit], ...]
    adapter: str | None = None
    """The adapter the route's first tier ran with, when it had one: what the rollback watch judges."""

    def with_outcome(self, success: bool) -> "RequestRecord":
        """The same request after late feedback: the request and its final attempt take `success`."""
        attempts = self.attempts
        if attempts:
            tier, final = attempts[-1]
            attempts = (*attempts[:-1], (tier, replace(final, success=success)))
        return replace(self, request=replace(self.request, success=success), attempts=attempts)


def build_record(root: ReadableSpan, descendants: Sequence[ReadableSpan], recorded_at: float) -> RequestRecord:
    """Account one `cascade.request` root from its already-ended `cascade.*` descendants."""
    attrs = root.attributes or {}
    children = _children_index(descendants)
    attempt_spans = sorted((s for s in descendants if s.name == sc.SPAN_TIER_ATTEMPT), key=lambda s: s.start_time or 0)
    success = _succeeded(root)
    attempts = tuple(
        (
            str((span.attributes or {}).get(sc.CASCADE_TIER, UNKNOWN)),
            _attempt_unit(span, _subtree(span, children), final=i == len(attempt_spans) - 1, success=success),
        )
        for i, span in enumerate(attempt_spans)
    )
    final = attempts[-1][1] if attempts else _NO_ATTEMPT
    escalated = attrs.get(sc.CASCADE_ESCALATED)
    request = Unit(
        success=success,
        escalated=bool(escalated) if escalated is not None else len(attempts) > 1,
        latency_ms=_duration_ms(root),
        schema_valid=_first_set(attrs.get(sc.CASCADE_SCHEMA_VALID), final.schema_valid),
        executable=_first_set(attrs.get(sc.CASCADE_TOOL_CALL_EXECUTABLE), final.executable),
        **_figures([root, *descendants]),
    )
    request_id = attrs.get(sc.CASCADE_REQUEST_ID) or format(root.context.trace_id, "032x")
    return RequestRecord(
        request_id=str(request_id),
        route=str(attrs.get(sc.CASCADE_ROUTE, UNKNOWN)),
        recorded_at=recorded_at,
        request=request,
        attempts=attempts,
        adapter=str(attrs[sc.CASCADE_ADAPTER]) if attrs.get(sc.CASCADE_ADAPTER) else None,
    )


def summarise(units: Sequence[Unit]) -> dict[str, Any]:
    """The snapshot figures for a group of units; every rate is None when its denominator is 0.

    CPS is `policies.cost.cost_per_successful_task` (no success: `math.inf`); None only for no units at all.
    """
    successes = sum(u.success for u in units)
    cost = math.fsum(u.cost_usd for u in units)
    latencies = [u.latency_ms for u in units]
    p50, p95, p99 = (float(v) for v in np.percentile(latencies, [50, 95, 99])) if latencies else (None,) * 3
    metered = [u for u in units if u.energy_j is not None]
    return {
        "requests": len(units),
        "successes": successes,
        "cps": cost_per_successful_task(cost, successes) if units else None,
        "success_rate": _rate(u.success for u in units),
        "schema_validity_rate": _rate(u.schema_valid for u in units),
        "executable_call_rate": _rate(u.executable for u in units),
        "escalation_rate": _rate(u.escalated for u in units),
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_p99_ms": p99,
        "tokens_in": sum(u.tokens_in for u in units),
        "tokens_out": sum(u.tokens_out for u in units),
        "energy_per_request_j": (
            math.fsum(u.energy_j for u in metered) / len(metered) if metered else None  # type: ignore[misc]
        ),
        "energy_source": combine_sources(u.energy_source for u in metered),
    }


def combine_sources(sources: Iterable[str | None]) -> str | None:
    """One label for figures summed together: the common source, "mixed", or None if no figures."""
    labels = {source or sc.EnergySource.MODEL.value for source in sources}
    if not labels:
        return None
    return labels.pop() if len(labels) == 1 else sc.MIXED_ENERGY_SOURCE


def _attempt_unit(span: ReadableSpan, subtree: list[ReadableSpan], *, final: bool, success: bool) -> Unit:
    attrs = span.attributes or {}
    return Unit(
        success=final and success,
        escalated=not final,
        latency_ms=_duration_ms(span),
        schema_valid=_optional_bool(attrs.get(sc.CASCADE_SCHEMA_VALID)),
        executable=_optional_bool(attrs.get(sc.CASCADE_TOOL_CALL_EXECUTABLE)),
        **_figures(subtree),
    )


def _figures(spans: Iterable[ReadableSpan]) -> dict[str, Any]:
    """Additive figures summed over `spans` (see module rules)."""
    cost, tokens_in, tokens_out = 0.0, 0, 0
    energy: list[float] = []
    sources: list[str | None] = []
    for span in spans:
        attrs: Mapping[str, Any] = span.attributes or {}
        cost += float(attrs.get(sc.CASCADE_COST_USD, 0.0))
        tokens_in += int(attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0))
        tokens_out += int(attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, 0))
        if sc.CASCADE_ENERGY_J in attrs:
            energy.append(float(attrs[sc.CASCADE_ENERGY_J]))
            sources.append(attrs.get(sc.CASCADE_ENERGY_SOURCE))
    return {
        "cost_usd": cost,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "energy_j": math.fsum(energy) if energy else None,
        "energy_source": combine_sources(sources),
    }


def _children_index(spans: Sequence[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    index: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            index.setdefault(span.parent.span_id, []).append(span)
    return index


def _subtree(top: ReadableSpan, children: Mapping[int, list[ReadableSpan]]) -> list[ReadableSpan]:
    """`top` and everything below it."""
    found, stack = [], [top]
    while stack:
        span = stack.pop()
        found.append(span)
        stack.extend(children.get(span.context.span_id, ()))
    return found


def _succeeded(root: ReadableSpan) -> bool:
    outcome = (root.attributes or {}).get(sc.CASCADE_OUTCOME)
    if outcome is not None:
        return outcome == sc.Outcome.SUCCESS
    return root.status.status_code is not StatusCode.ERROR


def _duration_ms(span: ReadableSpan) -> float:
    return ((span.end_time or 0) - (span.start_time or 0)) / 1e6


def _rate(flags: Iterable[bool | None]) -> float | None:
    known = [flag for flag in flags if flag is not None]
    return sum(known) / len(known) if known else None


def _optional_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _first_set(*values: Any) -> bool | None:
    for value in values:
        if value is not None:
            return bool(value)
    return None
