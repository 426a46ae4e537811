"""`RequestWindow`: the books themselves, a sliding window of accounted requests with late feedback.

Kept apart from the span processor that builds the records: a gateway replica builds records from its own
spans, and the window that holds them is the cluster's one copy (`deployments.books`), fed by every replica.
Records are stamped with the window's own clock on arrival, so eviction never mixes clocks of different
processes or machines.
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from cluster.telemetry.aggregate import RequestRecord, Unit, summarise


class UnknownRequestError(LookupError):
    """Feedback named a request that was never seen or has left the window."""


class RequestWindow:
    """Thread-safe sliding-window accounting over finished requests.

    The window holds at most `max_requests` requests and, when `window_s` is set, only those that arrived
    within the last `window_s` seconds of `clock` (inject a fake clock in tests).
    """

    def __init__(
        self,
        *,
        max_requests: int | None = 10_000,
        window_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_requests is None and window_s is None:
            raise ValueError("set max_requests and/or window_s: an unbounded window grows forever")
        if (max_requests is not None and max_requests <= 0) or (window_s is not None and window_s <= 0):
            raise ValueError("window bounds must be positive")
        self._max_requests = max_requests
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._records: OrderedDict[str, RequestRecord] = OrderedDict()  # oldest first

    def add(self, record: RequestRecord) -> None:
        self.extend((record,))

    def extend(self, records: Iterable[RequestRecord]) -> None:
        """Account finished requests; a request id seen again replaces its earlier record."""
        with self._lock:
            now = self._clock()
            for record in records:
                self._records.pop(record.request_id, None)
                self._records[record.request_id] = replace(record, recorded_at=now)
            self._evict()

    def __contains__(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._records

    def record_feedback(self, request_id: str, success: bool) -> None:
        """Late outcome (e.g. the agent's tool run failed later): overrides the request's outcome."""
        with self._lock:
            self._evict()
            record = self._records.get(request_id)
            if record is None:
                raise UnknownRequestError(request_id)
            self._records[request_id] = record.with_outcome(success)

    def now(self) -> float:
        """The window's clock, which stamps arriving records: what `outcomes(since=...)` compares with."""
        return self._clock()

    def outcomes(self, route: str, adapter: str | None, since: float | None = None) -> tuple[int, int]:
        """(requests, successes) of one route served with one adapter (None: without one), feedback applied;
        with `since` (a `now()` reading), only requests that arrived from then on."""
        with self._lock:
            self._evict()
            units = [record.request for record in self._records.values()
                     if record.route == route and record.adapter == adapter
                     and (since is None or record.recorded_at >= since)]
        return len(units), sum(unit.success for unit in units)

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

    def _evict(self) -> None:
        if self._window_s is not None:
            horizon = self._clock() - self._window_s
            while self._records and next(iter(self._records.values())).recorded_at < horizon:
                self._records.popitem(last=False)
        if self._max_requests is not None:
            while len(self._records) > self._max_requests:
                self._records.popitem(last=False)
