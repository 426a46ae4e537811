"""Bounded, non-blocking span export whose losses are counted.

The SDK's `BatchSpanProcessor` already keeps exporting off the request path, but in the installed SDK
its queue-full drops are only reported through internal OTel metrics gated by an environment
variable. We want one plain counter for `/metrics`, so this module wraps it using public APIs only:
spans are admitted while fewer than `max_queue_size` are pending, so the inner deque never overflows
silently, and the exporter is wrapped to count what it accepted or failed. Every sampled span ends up
in exactly one of `exported`, `failed` or `dropped`.
"""

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


@dataclass(frozen=True)
class ExportCounts:
    """Totals since start: spans the collector accepted, rejected/unreached, or never sent."""

    exported: int = 0
    failed: int = 0
    dropped: int = 0

    @property
    def lost(self) -> int:
        """Spans that did not reach the collector, for whatever reason."""
        return self.failed + self.dropped


class ExportCounter:
    """Thread-safe tallies shared between the export processor and the metrics collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = ExportCounts()

    def add(self, *, exported: int = 0, failed: int = 0, dropped: int = 0) -> None:
        with self._lock:
            c = self._counts
            self._counts = ExportCounts(c.exported + exported, c.failed + failed, c.dropped + dropped)

    def snapshot(self) -> ExportCounts:
        with self._lock:
            return self._counts


class CountingBatchSpanProcessor(SpanProcessor):
    """`BatchSpanProcessor` with admission control and loss counting.

    `on_end` is a lock, two integer updates and a deque append: an unreachable collector slows only the
    background worker (bounded by the exporter's own timeout), never the request that ends a span.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        counter: ExportCounter,
        *,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay_ms: float = 1000,
    ) -> None:
        self._counter = counter
        self._capacity = max_queue_size
        self._lock = threading.Lock()
        self._pending = 0  # admitted, not yet handed to the exporter; >= the inner queue's length
        self._closed = False
        self._batch = BatchSpanProcessor(
            _SettlingExporter(exporter, self._settle),
            max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
            schedule_delay_millis=schedule_delay_ms,
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        with self._lock:
            admitted = not self._closed and self._pending < self._capacity
            if admitted:
                self._pending += 1
        if not admitted:
            self._counter.add(dropped=1)
            return
        self._batch.on_end(span)

    def shutdown(self) -> None:
        """Flush what the exporter's timeout allows; whatever is still pending is counted as dropped."""
        with self._lock:
            self._closed = True
        self._batch.shutdown()
        with self._lock:
            stranded, self._pending = self._pending, 0
        self._counter.add(dropped=stranded)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)

    def _settle(self, count: int, ok: bool) -> None:
        with self._lock:
            self._pending -= count
        if ok:
            self._counter.add(exported=count)
        else:
            self._counter.add(failed=count)


class _SettlingExporter(SpanExporter):
    """Reports each batch's fate to the processor before returning it to the batch worker."""

    def __init__(self, inner: SpanExporter, settle: Callable[[int, bool], None]) -> None:
        self._inner = inner
        self._settle = settle

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            self._settle(len(spans), False)
            raise
        self._settle(len(spans), result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
