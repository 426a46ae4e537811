"""`ClusterBooks`: the one copy of what every gateway replica must agree on.

The gateway is an autoscaled deployment, so any replica may answer a request and any other may get the
feedback on it, the report, or the next request of the same API key. What must be the same whichever replica
answers lives here, in one named, detached Ray actor per application on the head node (the pattern Ray Train
uses for its state actor):

- the accounting window (`RequestWindow`): replicas build a record per request from their own spans and send
  them in batches; `/v1/cascade/report`, `/metrics` and feedback read and write this one window;
- the API keys' rate-limit buckets (`TokenBuckets`): replicas lease a few tokens at a time;
- the recording store (SQLite on the head node's disk): what `cascade adapt` trains on;
- the adaptation ledger beside it (`cluster.adaptation.ledger`): rounds, adapter versions, and which version
  each route serves. The books start rounds (by command, or by a route's policy as examples arrive) as Ray
  tasks they own, promote what a round found better, and watch a promoted adapter's live success, rolling it
  back when it falls (`policies.rollback`). Replicas read the serving versions every second.

What is lost when the actor or its node is lost (docs/books.md): Ray restarts the actor
(`max_restarts=-1`); the window restarts empty and the buckets full, while recordings and the ledger are on
disk (a round that was running is marked failed: its owner is gone). Replicas keep
serving meanwhile: records and examples wait in their buffers and are sent once it is back, rate limits fall
back to each replica's own buckets. The head node holds Ray's control plane, so losing it loses the cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle

from cluster.adaptation.dataset import HELD_OUT_FRACTION
from cluster.adaptation.ledger import AdapterVersion, Ledger, LedgerError
from cluster.adaptation.round import RoundError, RoundOutcome, RoundRequest, adaptable_tier, run_round
from cluster.adaptation.train import TrainSettings
from cluster.config import CascadeConfig
from cluster.store.recording import RecordedExample, RecordingStore
from cluster.store.recording import recording_path as configured_store_path
from cluster.telemetry.aggregate import RequestRecord
from cluster.telemetry.window import RequestWindow, UnknownRequestError
from policies.access import TokenBuckets
from policies.adaptation import LiveOutcomes, judge_live, round_due

_log = logging.getLogger(__name__)

BOOKS_NAMESPACE = "slm-cascade"
HEAD_NODE_RESOURCE = "node:__internal_head__"


def books_name(app_name: str) -> str:
    return f"{app_name}-books"


def config_digest(config: dict[str, Any]) -> str:
    """Which config the books follow, compared cheaply on every read of the serving adapters."""
    return hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=16).hexdigest()


WATCH_DELAY_S = 0.5
"""The rollback watch runs this long after records or feedback arrive: one pass per burst, not per batch."""


class ClusterBooks:
    """Accounting window, rate-limit buckets, recording store and adaptation ledger of one application (an
    async Ray actor)."""

    def __init__(self, recording_path: str | None, config: dict[str, Any] | None = None) -> None:
        """`config` is the first gateway replica's: what Ray passes again when it restarts the actor, so the
        ledger and the adaptation policies are back before any replica calls `configure`."""
        self._window = RequestWindow()
        self._buckets = TokenBuckets()
        self._arrived = asyncio.Condition()
        self._recording_path: str | None = None
        self._store: RecordingStore | None = None
        self._ledger: Ledger | None = None
        self._config: CascadeConfig | None = None
        self._config_digest = ""
        self._rounds: dict[int, asyncio.Task[None]] = {}  # held so the event loop does not drop them mid-round
        self._starting: set[asyncio.Task[None]] = set()  # policy rounds being started, held likewise
        self._watch: asyncio.TimerHandle | None = None
        # When each promoted version began to serve, on the window's clock: the watch counts only requests from
        # then on (an adapter served before, and rolled back, must not be judged by its old requests). After a
        # restart the window is empty, so everything in it is recent enough.
        self._serving_since: dict[tuple[str, int], float] = {}
        self._open_store(recording_path)
        if config is not None:
            self._apply_config(config)

    async def configure(self, recording_path: str | None, config: dict[str, Any] | None = None) -> None:
        """Each gateway replica calls this as it starts: a redeploy that moved the store moves it here too, and
        the config it runs is the one rounds and the rollback watch follow."""
        if recording_path != self._recording_path:
            await asyncio.to_thread(self._open_store, recording_path)
        if config is not None:
            await asyncio.to_thread(self._apply_config, config)

    async def add_records(self, records: list[RequestRecord]) -> None:
        self._window.extend(records)
        async with self._arrived:
            self._arrived.notify_all()
        self._schedule_watch()

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
        self._schedule_watch()
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
        for route in sorted({example.route for example in examples}):
            self._maybe_start_policy_round(route)

    # ---- adaptation -------------------------------------------------------------------------------------

    async def start_round(self, route: str, settings: TrainSettings | None = None,
                          held_out_fraction: float = HELD_OUT_FRACTION, promote: bool = True,
                          trigger: str = "command") -> dict[str, Any]:
        """Start a round of `route` as a Ray task these books own; returns the round as the ledger has it.
        Raises RoundError or LedgerError (a round of the route is running) with what to fix."""
        config, ledger, store = self._round_parts()
        adaptable_tier(config, route)
        if not 0 < held_out_fraction < 1:
            raise RoundError(f"the held-out fraction must be between 0 and 1, got {held_out_fraction}")
        serving = ledger.serving().get(route)
        request = RoundRequest(
            config=config.model_dump(mode="json"), route=route, settings=settings or TrainSettings(),
            held_out_fraction=held_out_fraction, promote=promote,
            serving_adapter=serving.adapter if serving else config.route(route).adapter,
            serving_base_model=serving.lineage.get("base_model") if serving else None,
        )
        started = ledger.start_round(route, trigger, await asyncio.to_thread(store.count, route))
        self._rounds[started.id] = asyncio.get_running_loop().create_task(self._own_round(started.id, request))
        return started.as_dict()

    async def round_progress(self, round_id: int, progress: str, facts: dict[str, Any] | None = None) -> None:
        self._ledger_parts()[1].update_round(round_id, progress, facts)

    async def training_started(self, round_id: int, pid: int, node_id: str) -> None:
        """The training task began an attempt: a second one means Ray retried it after losing a worker."""
        ledger = self._ledger_parts()[1]
        attempts = ledger.round(round_id).facts.get("train_attempts", 0) + 1
        ledger.update_round(round_id, f"training (attempt {attempts})",
                            {"train_attempts": attempts, "train_pid": pid, "train_node": node_id})

    async def rollback(self, route: str, reason: str) -> dict[str, Any]:
        """Take the route's serving version out of service; the one before it (or the config's adapter) serves
        again within a second on every gateway replica. LedgerError when there is nothing to roll back."""
        ended, now_serving = self._ledger_parts(route)[1].roll_back(route, reason)
        _log.warning("route %r: adapter %s rolled back: %s", route, ended.adapter, reason)
        return {"rolled_back": ended.as_dict(), "serving": now_serving.as_dict() if now_serving else None}

    async def promote_version(self, route: str, adapter: str, reason: str) -> dict[str, Any]:
        """Serve an adapter version the ledger knows again (after a rollback, say), as a new version with the
        same lineage; watched like any promotion. LedgerError when the route never had that adapter."""
        config, ledger = self._ledger_parts(route)
        known = next((v for v in ledger.versions(route) if v.adapter == adapter), None)
        if known is None:
            raise LedgerError(f"route {route!r} has no version with adapter {adapter!r}; `cascade adapt status` "
                              "lists its versions")
        serving = ledger.serving().get(route)
        current = serving.adapter if serving else config.route(route).adapter
        if current == adapter:
            raise LedgerError(f"route {route!r} serves {adapter!r} already")
        return self._promote(route, adapter, {**known.lineage, "parent": current}, reason, current).as_dict()

    async def serving_adapters(self, config_digest: str) -> dict[str, str] | None:
        """Route -> the adapter of its serving version; a route missing here serves its config's adapter.

        None when these books follow another config than the asking replica's (`config_digest`): restarted by
        Ray with their creation arguments after a redeploy changed it. The replica then configures them again.
        """
        if self._ledger is None or config_digest != self._config_digest:
            return None
        return {route: version.adapter for route, version in self._ledger.serving().items()}

    async def adaptation_status(self, route: str | None = None, limit: int = 10) -> dict[str, Any]:
        """Rounds (newest first), versions and what each route serves, as `cascade adapt status` shows them."""
        config, ledger = self._ledger_parts(route)
        routes = [route] if route is not None else [r.name for r in config.routes]
        return {
            "rounds": [r.as_dict() for r in ledger.rounds(route, limit)],
            "routes": {name: {"configured": config.route(name).adapter,
                              "versions": [v.as_dict() for v in ledger.versions(name)]} for name in routes},
        }

    async def round(self, round_id: int) -> dict[str, Any]:
        return self._ledger_parts()[1].round(round_id).as_dict()

    def _ledger_parts(self, route: str | None = None) -> tuple[CascadeConfig, Ledger]:
        """The config and the ledger; RoundError before a gateway configured them, or for a route not in it."""
        if self._config is None or self._ledger is None:
            raise RoundError("no gateway has configured the cluster's books yet; try again once the application runs")
        known = [r.name for r in self._config.routes]
        if route is not None and route not in known:
            raise RoundError(f"route {route!r} does not exist; known: {', '.join(known)}")
        return self._config, self._ledger

    def _round_parts(self) -> tuple[CascadeConfig, Ledger, RecordingStore]:
        config, ledger = self._ledger_parts()
        if self._store is None:
            raise RoundError("adaptation rounds need gateway.recording.enabled: true (they train on the recordings)")
        return config, ledger, self._store

    async def _own_round(self, round_id: int, request: RoundRequest) -> None:
        """Run the round's task and record its end; a task that could not run or was lost (its worker or node
        died) fails the round with the reason, so no round stays `running` while nothing runs it."""
        try:
            me = ray.get_runtime_context().current_actor

            def report(progress: str, facts: dict[str, Any]) -> None:
                ray.get(me.round_progress.remote(round_id, progress, facts))

            task = ray.remote(run_round).options(num_cpus=0, resources={HEAD_NODE_RESOURCE: 0.001}, max_retries=0)
            outcome: RoundOutcome = await task.remote(request, round_id, me, report)
        except Exception as error:  # noqa: BLE001 - whatever ends the round's task ends the round, with its reason
            outcome = RoundOutcome("failed", f"the round's task was lost: {type(error).__name__}: {error}"[:500])
        finally:
            self._rounds.pop(round_id, None)
        self._finish_round(round_id, request.route, outcome)

    def _finish_round(self, round_id: int, route: str, outcome: RoundOutcome) -> None:
        ledger = self._ledger_parts()[1]
        ledger.update_round(round_id, "done", outcome.facts)
        if outcome.state == "promoted":
            if outcome.adapter is None:
                raise RoundError(f"round {round_id} was promoted without naming its adapter")
            self._promote(route, outcome.adapter, outcome.lineage, outcome.reason, outcome.lineage.get("parent"))
        ledger.finish_round(round_id, outcome.state, outcome.reason, outcome.adapter)  # type: ignore[arg-type]

    def _promote(self, route: str, adapter: str, lineage: dict[str, Any], reason: str,
                 replaced: str | None) -> AdapterVersion:
        """A new serving version, with the live outcomes of what it replaces as the baseline it is watched by."""
        requests, successes = self._window.outcomes(route, replaced)
        version = self._ledger_parts()[1].promote(route, adapter, lineage, reason, requests, successes)
        self._serving_since[(route, version.version)] = self._window.now()
        return version

    def _maybe_start_policy_round(self, route: str) -> None:
        """A round by the route's policy: enough new examples since the last round, and not too soon after it."""
        if self._config is None or self._ledger is None or self._store is None \
                or route not in {r.name for r in self._config.routes}:
            return
        policy = self._config.route(route).adaptation
        last = next(iter(self._ledger.rounds(route, limit=1)), None)
        new_examples = self._store.count(route) - (last.examples if last else 0)
        if round_due(new_examples, policy.after_new_examples, time.time() - last.started_at if last else None,
                     policy.min_interval_s, last is not None and last.state == "running"):
            starting = asyncio.get_running_loop().create_task(self._start_policy_round(route))
            self._starting.add(starting)
            starting.add_done_callback(self._starting.discard)

    async def _start_policy_round(self, route: str) -> None:
        try:
            await self.start_round(route, trigger="policy")
        except (RoundError, LedgerError) as error:
            _log.warning("route %r: the adaptation policy could not start a round: %s", route, error)

    def _schedule_watch(self) -> None:
        if self._ledger is not None and self._watch is None:
            self._watch = asyncio.get_running_loop().call_later(WATCH_DELAY_S, self._watch_promoted)

    def _watch_promoted(self) -> None:
        """Roll back each serving version whose live success fell too far below the route's before it."""
        self._watch = None
        if self._config is None or self._ledger is None:
            return
        routes = {route.name: route for route in self._config.routes}
        for route, version in self._ledger.serving().items():
            if route not in routes:
                continue
            decision = self._judge(version, routes[route].adaptation.rollback_min_requests,
                                   routes[route].adaptation.rollback_max_drop)
            if decision is not None:
                self._ledger.roll_back(route, f"automatic: {decision}")
                _log.warning("route %r: adapter %s rolled back automatically: %s", route, version.adapter, decision)

    def _judge(self, version: AdapterVersion, min_requests: int, max_drop: float) -> str | None:
        """The reason to roll the version back, or None to keep it."""
        before = LiveOutcomes(version.baseline_requests, version.baseline_successes)
        since = self._serving_since.get((version.route, version.version))
        after = LiveOutcomes(*self._window.outcomes(version.route, version.adapter, since))
        decision = judge_live(before, after, min_requests, max_drop)
        return decision.reason if decision.roll_back else None

    def _open_store(self, recording_path: str | None) -> None:
        if self._store is not None:
            self._store.close()
        self._store = RecordingStore(Path(recording_path)) if recording_path else None
        self._recording_path = recording_path

    def _apply_config(self, config: dict[str, Any]) -> None:
        """Follow the config; the ledger sits at the recording store's path, kept whether recording is on or off
        (turning recording off must not make the routes forget what they serve)."""
        self._config = CascadeConfig.model_validate(config)
        self._config_digest = config_digest(config)
        path = configured_store_path(self._config.gateway.recording)
        if self._ledger is not None and self._ledger.path == path:
            return
        if self._ledger is not None:
            self._ledger.close()
        self._ledger = Ledger(path)
        failed = self._ledger.fail_unfinished("the cluster's books restarted while the round ran")
        if failed:
            _log.warning("%d adaptation rounds were running when the books (re)started: marked failed", failed)


def books_actor(app_name: str, recording_path: str | None, config: dict[str, Any] | None = None) -> ActorHandle:
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
        .remote(recording_path, config)
    )
    # Ray types `.remote()` as `ActorHandle | type[ClusterBooks]` (the latter only for typed method calls).
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"creating the books actor gave {type(actor).__name__}, not an actor handle")
    return actor
