"""`BooksClient`: a gateway replica's link to the cluster's `ClusterBooks`, kept off the request's hot path.

- Accounting records are appended to a buffer (microseconds) and sent in batches every `flush_interval_s` by a
  background thread, so a request is in the cluster's books within about that long after its response.
- Rate limits use tokens leased from the cluster's buckets: most requests take a held token without a round
  trip (`TokenLeases`).
- Recorded examples are written before the response returns (an escalated request already took seconds).

- Which adapter version each route serves is read every `adapters_interval_s` by the same background thread:
  a promotion or a rollback reaches every replica within about that long, without a restart.

When the books cannot be reached (their actor restarting, its node lost), nothing accepted is lost and no
request fails for it: records and examples stay buffered (bounded; what overflows is counted in `dropped`) and
are sent once the actor answers, and rate limits fall back to this replica's own buckets.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any

import ray
from ray.actor import ActorHandle

from cluster.store.recording import RecordedExample
from cluster.telemetry.aggregate import RequestRecord
from deployments.books import config_digest
from policies.access import ApiKey, RateLimitedError, RateLimiter, TokenLeases

_log = logging.getLogger(__name__)

MAX_BUFFERED = 10_000
"""Records (and, separately, examples) a replica keeps while the books are unreachable; older ones go first."""


class BooksUnavailableError(RuntimeError):
    """The cluster's books did not answer in time."""


class BooksClient:
    def __init__(
        self,
        actor: ActorHandle,
        recording_path: str | None,
        config: dict[str, Any],
        *,
        flush_interval_s: float = 0.2,
        call_timeout_s: float = 5.0,
        feedback_wait_s: float = 2.0,
        adapters_interval_s: float = 1.0,
    ) -> None:
        # Any: the books' methods are called by name, and Ray types an untyped handle's methods `Never`.
        self._actor: Any = actor
        self._configuration = (recording_path, config)
        self._config_digest = config_digest(config)
        self._flush_interval_s = flush_interval_s
        self._adapters_interval_s = adapters_interval_s
        self._adapters_read_at = 0.0
        self._serving: tuple[int, dict[str, str]] = (0, {})
        self._call_timeout_s = call_timeout_s
        self._feedback_wait_s = feedback_wait_s
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=MAX_BUFFERED)
        self._examples: deque[RecordedExample] = deque(maxlen=MAX_BUFFERED)
        self._dropped = 0
        self._leases = TokenLeases()
        self._limits: dict[str, tuple[float, int]] = {}  # key name -> (requests_per_minute, burst), for refunds
        self._leasing: dict[str, asyncio.Future[tuple[int, int]]] = {}
        self._fallback = RateLimiter()
        self._stop = threading.Event()
        self._configure()  # a method: here mypy would still see `self._actor` as the `ActorHandle` it was given
        self._read_serving_adapters()  # a new replica starts with what the route serves now
        self._flusher = threading.Thread(target=self._flush_loop, name="books-flush", daemon=True)
        self._flusher.start()

    # ---- accounting -------------------------------------------------------------------------------------

    def add_record(self, record: RequestRecord) -> None:
        """The span processor's sink: called as a request's root span ends, so it only appends."""
        with self._lock:
            self._dropped += len(self._records) == MAX_BUFFERED
            self._records.append(record)

    @property
    def dropped(self) -> int:
        """Records and examples this replica discarded because the books stayed unreachable too long."""
        with self._lock:
            return self._dropped

    async def snapshot(self) -> dict[str, Any]:
        """The cluster's accounting snapshot, this replica's buffered records sent first."""
        await asyncio.to_thread(self._flush)
        return await self._call(self._actor.snapshot.remote())

    async def feedback(self, request_id: str, success: bool) -> bool:
        """Late feedback on a request answered by any replica; False when the books do not know it."""
        await asyncio.to_thread(self._flush)
        ref = self._actor.record_feedback.remote(request_id, success, self._feedback_wait_s)
        return await self._call(ref, extra_s=self._feedback_wait_s)

    # ---- rate limits ------------------------------------------------------------------------------------

    async def admit(self, key: ApiKey) -> None:
        """Take one of the key's tokens, or raise `RateLimitedError`: cluster-wide when the books answer."""
        if key.requests_per_minute is None:
            return
        while not self._take(key.name):  # each round either leases a token or raises
            try:
                granted, retry_after_s = await asyncio.shield(self._lease(key))
            except BooksUnavailableError:
                _log.warning("cluster books unreachable: rate limit of key %r held by this replica alone", key.name)
                self._fallback.acquire(key)
                return
            if not granted:
                raise RateLimitedError(key.name, retry_after_s)

    def _take(self, key_name: str) -> bool:
        with self._lock:
            return self._leases.take(key_name)

    def _lease(self, key: ApiKey) -> asyncio.Future[tuple[int, int]]:
        """The key's lease request in flight, or a new one: concurrent requests share one round trip."""
        pending = self._leasing.get(key.name)
        if pending is None or pending.done():
            pending = asyncio.ensure_future(self._request_lease(key))
            self._leasing[key.name] = pending
        return pending

    async def _request_lease(self, key: ApiKey) -> tuple[int, int]:
        requests_per_minute = key.requests_per_minute
        if requests_per_minute is None:
            raise ValueError(f"key {key.name!r} has no rate limit: it takes no lease")
        ref = self._actor.lease.remote(key.name, requests_per_minute, key.burst, TokenLeases.lease_size(key))
        granted, retry_after_s = await self._call(ref)
        with self._lock:
            self._leases.hold(key.name, granted)
            self._limits[key.name] = (requests_per_minute, key.burst)
        return granted, retry_after_s

    # ---- recordings -------------------------------------------------------------------------------------

    async def record_example(self, example: RecordedExample) -> None:
        """Store a verified escalation in the cluster's one store, or keep it to send once the books are back."""
        try:
            await self._call(self._actor.record_examples.remote([example]))
        except (BooksUnavailableError, ray.exceptions.RayError):  # unreachable, or the store failed: retry later
            with self._lock:
                self._dropped += len(self._examples) == MAX_BUFFERED
                self._examples.append(example)

    # ---- plumbing ---------------------------------------------------------------------------------------

    def _configure(self) -> None:
        """Give the books this replica's recording path and config."""
        ray.get(self._actor.configure.remote(*self._configuration))

    def close(self) -> None:
        """Send what is buffered and stop the flusher (a replica shutting down)."""
        self._stop.set()
        self._flusher.join(timeout=self._call_timeout_s)
        self._flush()
        self._give_back_leases(all_held=True)

    async def _call(self, ref: ray.ObjectRef, extra_s: float = 0.0) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), self._call_timeout_s + extra_s)
        except (TimeoutError, ray.exceptions.RayActorError) as error:
            raise BooksUnavailableError(f"cluster books did not answer: {error!r}") from error

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._flush_interval_s):
            self._flush()
            self._give_back_leases()
            if time.monotonic() - self._adapters_read_at >= self._adapters_interval_s:
                self._read_serving_adapters()

    # ---- adapters ---------------------------------------------------------------------------------------

    @property
    def serving_adapters(self) -> tuple[int, dict[str, str]]:
        """(generation, route -> adapter of its serving version); the generation changes when the map does."""
        return self._serving

    def _read_serving_adapters(self) -> None:
        """Unreachable books keep the last map: a replica serves what it last knew rather than guessing."""
        self._adapters_read_at = time.monotonic()
        try:
            serving = ray.get(self._actor.serving_adapters.remote(self._config_digest), timeout=self._call_timeout_s)
            if serving is None:  # the books follow another config (restarted with their first one): this one
                ray.get(self._actor.configure.remote(*self._configuration), timeout=self._call_timeout_s)
                serving = ray.get(self._actor.serving_adapters.remote(self._config_digest),
                                  timeout=self._call_timeout_s)
        except ray.exceptions.RayError as error:
            _log.warning("cluster books unreachable, serving adapters unchanged: %r", error)
            return
        generation, current = self._serving
        if serving != current:
            self._serving = (generation + 1, serving)

    def _give_back_leases(self, all_held: bool = False) -> None:
        """Unused tokens of leases past their time go back to the cluster's buckets, for other replicas."""
        with self._lock:
            expired = [(name, tokens, *self._limits[name])
                       for name, tokens in self._leases.expired(all_held=all_held).items()]
        for name, tokens, requests_per_minute, burst in expired:
            try:
                ray.get(self._actor.refund.remote(name, requests_per_minute, burst, tokens),
                        timeout=self._call_timeout_s)
            except ray.exceptions.RayError:  # not given back: the key is under its limit a little longer
                _log.warning("could not give %d unused tokens of key %r back to the cluster", tokens, name)

    def _flush(self) -> None:
        """Send buffered records and examples; on failure they go back to the front of their buffers.

        One flush at a time: a report's flush waits for the flusher's batch in flight, so it sees that batch."""
        with self._flushing:
            with self._lock:
                records, examples = list(self._records), list(self._examples)
                self._records.clear()
                self._examples.clear()
            self._send(records, self._actor.add_records, self._records)
            self._send(examples, self._actor.record_examples, self._examples)

    def _send(self, items: list[Any], method: Any, buffer: deque[Any]) -> None:
        if items:
            try:
                ray.get(method.remote(items), timeout=self._call_timeout_s)
            except ray.exceptions.RayError as error:  # unreachable, or the store failed (e.g. disk full): retry
                _log.warning("cluster books unreachable, %d items kept for later: %r", len(items), error)
                with self._lock:
                    kept = [*items, *buffer][-MAX_BUFFERED:]
                    self._dropped += len(items) + len(buffer) - len(kept)
                    buffer.clear()
                    buffer.extend(kept)

