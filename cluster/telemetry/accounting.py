"""`AccountingSpanProcessor`: CPS, success and validity rates, latency, tokens and energy per route,
per tier and overall, computed from the same spans we export, over a sliding window.

Deriving the books from spans (rather than from a parallel set of counters) means a dashboard figure
can always be traced back to the requests behind it. Child spans end before their root, so `cascade.*`
spans are buffered per trace until the `cascade.request` root ends; only spans ended in this process
are seen, so the gateway must emit every span that carries accounting attributes (see `aggregate`).
"""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from cluster.telemetry import semconv as sc
from cluster.telemetry.aggregate import RequestRecord, Unit, build_record, summarise

_log = logging.getLogger(__name__)


class UnknownRequestError(LookupError):
    """Feedback named a request that was never seen or has left the window."""


class AccountingSpanProcessor(SpanProcessor):
    """Thread-safe sliding-window accounting over `cascade.request` traces.

    The window holds at most `max_requests` requests and, when `window_s` is set, only those recorded
    within the last `window_s` seconds of `clock` (inject a fake clock in tests). `max_pending_traces`
    bounds the buffer of child spans whose root has not ended (e.g. a request abandoned mid-flight);
    the oldest trace is discarded first and counted in `orphaned_spans`.
    """

    def __init__(
        self,
        *,
        max_requests: int | None = 10_000,
        window_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_pending_traces: int = 10_000,
    ) -> None:
        if max_requests is None and window_s is None:
            raise ValueError("set max_requests and/or window_s: an unbounded window grows forever")
        if (max_requests is not None and max_requests <= 0) or (window_s is not None and window_s <= 0):
            raise ValueError("window bounds must be positive")
        self._max_requests = max_requests
        self._window_s = window_s
        self._clock = clock
        self._max_pending = max_pending_traces
        self._lock = threading.Lock()
        self._records: OrderedDict[str, RequestRecord] = OrderedDict()  # oldest first
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()  # trace_id -> ended spans
        self._orphaned = 0
        self._malformed = 0

    @property
    def malformed_requests(self) -> int:
        """Root spans left out of the books because an attribute had an unusable type."""
        with self._lock:
            return self._malformed

    @property
    def orphaned_spans(self) -> int:
        """Buffered child spans discarded because their root never ended in time."""
        with self._lock:
            return self._orphaned

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if not span.name.startswith(sc.SPAN_PREFIX) or span.context is None:
            return
        trace_id = span.context.trace_id
        with self._lock:
            if span.name != sc.SPAN_REQUEST:
                self._buffer(trace_id, span)
                return
            descendants = self._take_descendants(trace_id, span.context.span_id)
            try:
                record = build_record(span, descendants, recorded_at=self._clock())
            except (TypeError, ValueError):  # a bad attribute must not fail the request ending the span
                _log.warning("unaccountable cascade.request span", exc_info=True)
                self._malformed += 1
                return
            self._records.pop(record.request_id, None)
            self._records[record.request_id] = record
            self._evict()

    def record_feedback(self, request_id: str, success: bool) -> None:
        """Late outcome (e.g. the agent's tool run failed later): overrides the request's outcome."""
        with self._lock:
            self._evict()
            record = self._records.get(request_id)
            if record is None:
                raise UnknownRequestError(request_id)
            self._records[request_id] = record.with_outcome(success)

    def snapshot(self) -> dict[str, Any]:
        """`{"overall": {...}, "routes": {name: {...}}, "tiers": {name: {...}}}`, keys per `SNAPSHOT_KEYS`."""
        with self._lock:
            self._evict()
            records = list(self._records.values())
        routes: dict[str, list[Unit]] = {}
        tiers: dict[str, list[Unit]] = {}
        for record in records:
            routes.setdefault(record.route, []).append(record.request)
            for tier, unit in record.attempts:
                tiers.setdefault(tier, []).append(unit)
        return {
            "overall": summarise([record.request for record in records]),
            "routes": {name: summarise(units) for name, units in sorted(routes.items())},
            "tiers": {name: summarise(units) for name, units in sorted(tiers.items())},
        }

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def _buffer(self, trace_id: int, span: ReadableSpan) -> None:
        self._pending.setdefault(trace_id, []).append(span)
        self._pending.move_to_end(trace_id)
        while len(self._pending) > self._max_pending:
            _, dropped = self._pending.popitem(last=False)
            self._orphaned += len(dropped)

    def _take_descendants(self, trace_id: int, root_span_id: int) -> list[ReadableSpan]:
        """Remove and return the buffered spans below `root_span_id`; other requests sharing the
        trace (a client may send several under one parent) stay buffered."""
        spans = self._pending.pop(trace_id, [])
        children: dict[int, list[ReadableSpan]] = {}
        for span in spans:
            if span.parent is not None:
                children.setdefault(span.parent.span_id, []).append(span)
        taken: list[ReadableSpan] = []
        stack = [root_span_id]
        while stack:
            for child in children.pop(stack.pop(), ()):
                taken.append(child)
                stack.append(child.context.span_id)
        taken_ids = {id(span) for span in taken}
        remaining = [span for span in spans if id(span) not in taken_ids]
        if remaining:
            self._pending[trace_id] = remaining
        return taken

    def _evict(self) -> None:
        if self._window_s is not None:
            horizon = self._clock() - self._window_s
            while self._records and next(iter(self._records.values())).recorded_at < horizon:
                self._records.popitem(last=False)
        if self._max_requests is not None:
            while len(self._records) > self._max_requests:
                self._records.popitem(last=False)
