"""`AccountingSpanProcessor`: one accounted record per request (CPS, success and validity, latency, tokens,
energy per route and tier), built from the same spans we export; `window.RequestWindow` holds the books.

Deriving the books from spans (rather than from a parallel set of counters) means a dashboard figure
can always be traced back to the requests behind it. Child spans end before their root, so `cascade.*`
spans are buffered per trace until the `cascade.request` root ends; only spans ended in this process
are seen, so the gateway must emit every span that carries accounting attributes (see `aggregate`).
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from cluster.telemetry import semconv as sc
from cluster.telemetry.aggregate import RequestRecord, build_record

_log = logging.getLogger(__name__)


class AccountingSpanProcessor(SpanProcessor):
    """Turns each ended `cascade.request` trace into one `RequestRecord` and hands it to `sink`.

    The sink is the books: a local `RequestWindow`, or the cluster's shared one behind a client that batches.
    `max_pending_traces` bounds the buffer of child spans whose root has not ended (e.g. a request abandoned
    mid-flight); the oldest trace is discarded first and counted in `orphaned_spans`.
    """

    def __init__(self, sink: Callable[[RequestRecord], None], *, max_pending_traces: int = 10_000) -> None:
        self._sink = sink
        self._max_pending = max_pending_traces
        self._lock = threading.Lock()
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
                record = build_record(span, descendants, recorded_at=0.0)  # the window stamps its own time
            except (TypeError, ValueError):  # a bad attribute must not fail the request ending the span
                _log.warning("unaccountable cascade.request span", exc_info=True)
                self._malformed += 1
                return
        self._sink(record)

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
