"""`ClusterBooks`: the one copy of what every gateway replica must agree on.

The gateway is an autoscaled deployment, so any replica may answer a request and any other may get the
feedback on it, the report, or the next request of the same API key. What must be the same whichever replica
answers lives here, in one named, detached Ray actor per application on the head node (the pattern Ray Train
uses for its state actor):

- the accounting window (`RequestWindow`): replicas build a record per request from their own spans and send
  them in batches; `/v1/cascade/report`, `/metrics` and feedback read and write this one window;
- the API keys' rate-limit buckets (`TokenBuckets`): replicas lease a few tokens at a time;
- the recording store (SQLite on the head node's disk): what `cascade adapt` reads.

What is lost when the actor or its node is lost (README, "One cluster, one truth"): Ray restarts the actor
(`max_restarts=-1`); the window restarts empty and the buckets full, while recordings are on disk. Replicas keep
serving meanwhile: records and examples wait in their buffers and are sent once it is back, rate limits fall
back to each replica's own buckets. The head node holds Ray's control plane, so losing it loses the cluster.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle

from cluster.recording import RecordedExample, RecordingStore
from cluster.telemetry.aggregate import RequestRecord
from cluster.telemetry.window import RequestWindow, UnknownRequestError
from policies.access import TokenBuckets

BOOKS_NAMESPACE = "slm-cascade"
HEAD_NODE_RESOURCE = "node:__internal_head__"


def books_name(app_name: str) -> str:
    return f"{app_name}-books"


class ClusterBooks:
    """Accounting window, rate-limit buckets and recording store of one application (an async Ray actor)."""

    def __init__(self, recording_path: str | None) -> None:
        self._window = RequestWindow()
        self._buckets = TokenBuckets()
        self._arrived = asyncio.Condition()
        self._recording_path: str | None = None
        self._store: RecordingStore | None = None
        self._open_store(recording_path)

    async def configure(self, recording_path: str | None) -> None:
        """Each gateway replica calls this as it starts: a redeploy that moved the store moves it here too."""
        if recording_path != self._recording_path:
            await asyncio.to_thread(self._open_store, recording_path)

    async def add_records(self, records: list[RequestRecord]) -> None:
        self._window.extend(records)
        async with self._arrived:
            self._arrived.notify_all()

    async def record_feedback(self, request_id: str, success: bool, wait_s: float) -> bool:
        """Apply late feedback; False when the request is unknown. A request answered by another replica may
        still be in that replica's batch, so an unknown id is waited for up to `wait_s` first."""
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: request_id in self._window), wait_s)
            except TimeoutError:
                return False
        try:
            self._window.record_feedback(request_id, success)
        except UnknownRequestError:  # evicted between the wait and now
            return False
        return True

    async def snapshot(self) -> dict[str, Any]:
        return self._window.snapshot()

    async def lease(self, key_name: str, requests_per_minute: float, burst: int, wanted: int) -> tuple[int, int]:
        """Tokens for a replica: `(granted, retry_after_s)`, as `TokenBuckets.grant`."""
        return self._buckets.grant(key_name, requests_per_minute, burst, wanted)

    async def refund(self, key_name: str, requests_per_minute: float, burst: int, tokens: int) -> None:
        """A replica gives back leased tokens it did not use."""
        self._buckets.refund(key_name, requests_per_minute, burst, tokens)

    async def record_examples(self, examples: list[RecordedExample]) -> None:
        """Store verified escalations; an id stored before is ignored, so a replica may safely send again."""
        if self._store is None:
            raise RuntimeError("recording is not enabled in this application's config")
        await asyncio.to_thread(self._store.record, *examples)

    def _open_store(self, recording_path: str | None) -> None:
        if self._store is not None:
            self._store.close()
        self._store = RecordingStore(Path(recording_path)) if recording_path else None
        self._recording_path = recording_path


def books_actor(app_name: str, recording_path: str | None) -> ActorHandle:
    """The application's `ClusterBooks`, created by whichever gateway replica asks first (`get_if_exists` is
    atomic in Ray's control store) and kept across gateway restarts and redeploys (`detached`)."""
    actor = (
        ray.remote(ClusterBooks)
        .options(
            name=books_name(app_name),
            namespace=BOOKS_NAMESPACE,
            get_if_exists=True,
            lifetime="detached",
            num_cpus=0,
            resources={HEAD_NODE_RESOURCE: 0.001},
            scheduling_strategy="DEFAULT",  # not the replica's placement group
            max_restarts=-1,
            max_task_retries=-1,
        )
        .remote(recording_path)
    )
    return actor
