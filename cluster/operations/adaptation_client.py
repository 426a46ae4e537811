"""`cascade adapt`: ask the running cluster for an adaptation round, follow it, show the ledger, roll back.

A round runs as Ray work on the cluster, owned by the cluster's books (`cluster.adaptation.round`): the
recorded escalations of a route train a LoRA adapter of its SLM, the candidate is replayed against what the
route serves now on held-out cases and on a regression set of other requests, and it is promoted only if it
is better and cheaper there and forgets no more than the route's margin elsewhere. Promotion and rollback move
the route's serving version in the cluster's ledger, which every gateway replica reads within a second: no
tier and no gateway restarts, and the operator's config file is never rewritten. The config's `adapter` is
where a route starts; `cascade adapt status` shows where it is now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cluster.adaptation.dataset import HELD_OUT_FRACTION
from cluster.adaptation.train import TrainSettings
from cluster.config import load_config

__all__ = ["AdaptError", "adaptation_status", "format_round", "format_status", "promote", "request_round",
           "roll_back"]

POLL_INTERVAL_S = 2.0


class AdaptError(RuntimeError):
    """The cluster refused or cannot take the request (no cluster, no recordings, a round already running,
    nothing to roll back); the message says what to fix."""


@contextmanager
def _books(config_path: Path) -> Iterator[Any]:
    """The running cluster's books for this config's application, over a Ray connection closed afterwards."""
    import ray

    from cluster.operations.local import ray_is_running
    from deployments.books import BOOKS_NAMESPACE, books_name

    config = load_config(config_path)
    if not ray_is_running():
        raise AdaptError(f"no cluster is running here: start it with `cascade up --config {config_path}`; "
                         "rounds run on the cluster")
    ray.init(address="auto", namespace=BOOKS_NAMESPACE, logging_level="ERROR", log_to_driver=False)
    try:
        try:
            books = ray.get_actor(books_name(config.app_name), namespace=BOOKS_NAMESPACE)
        except ValueError:
            raise AdaptError(f"application {config.app_name!r} has no books: is it running this config?") from None
        yield books
    finally:
        ray.shutdown()


def _call(remote_call: Any) -> Any:
    """The actor's answer; its refusal (RoundError, LedgerError) as an AdaptError with the same message."""
    import ray

    try:
        return ray.get(remote_call)
    except ray.exceptions.RayTaskError as error:
        raise AdaptError(str(error.cause) if error.cause is not None else str(error)) from None


def request_round(config_path: Path, route: str, settings: TrainSettings, *,
                  held_out_fraction: float = HELD_OUT_FRACTION, promote: bool = True, wait: bool = True,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Start a round of `route` on the cluster; with `wait`, follow it to its end. Returns the round as the
    ledger has it (`state`: running, promoted, refused or failed)."""
    with _books(config_path) as books:
        round_ = _call(books.start_round.remote(route, settings, held_out_fraction, promote))
        progress(f"round {round_['id']} of route {route!r} started on the cluster")
        said = ""
        while wait and round_["state"] == "running":
            if round_["progress"] != said:
                said = round_["progress"]
                progress(f"round {round_['id']}: {said}")
            time.sleep(POLL_INTERVAL_S)
            round_ = _call(books.round.remote(round_["id"]))
        return round_


def adaptation_status(config_path: Path, route: str | None = None) -> dict[str, Any]:
    with _books(config_path) as books:
        return _call(books.adaptation_status.remote(route))


def roll_back(config_path: Path, route: str, reason: str) -> dict[str, Any]:
    with _books(config_path) as books:
        return _call(books.rollback.remote(route, reason))


def promote(config_path: Path, route: str, adapter: str, reason: str) -> dict[str, Any]:
    with _books(config_path) as books:
        return _call(books.promote_version.remote(route, adapter, reason))


# ---- tables -------------------------------------------------------------------------------------------------


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _score(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "-"
    cps = "inf" if figures["cps"] == float("inf") else f"{figures['cps']:.3g}"
    return (f"{figures['successes']}/{figures['cases']} ({figures['successes'] / figures['cases']:.0%}), "
            f"CPS ${cps}, {figures['errors']} errors")


def format_round(round_: dict[str, Any]) -> str:
    """One round as a terminal table: data, training, the replays, the decision."""
    facts = round_["facts"]
    rows = [("round", f"{round_['id']} of route {round_['route']} ({round_['trigger']}), {round_['state']}"),
            ("started", f"{_when(round_['started_at'])} UTC, finished {_when(round_['finished_at'])}")]
    if "recorded" in facts:
        rows.append(("examples", (f"{facts['recorded']} recorded, {facts['skipped']} skipped (free text or not "
                                  f"fitting the request), {facts['train_pairs']} to train, {facts['held_out']} held "
                                  f"out, {facts['regression_cases']} regression")))
    if "first_loss" in facts:
        rows.append(("training", (f"{facts['epochs']} epochs, loss {facts['first_loss']:.3f} -> "
                                  f"{facts['last_loss']:.3f}, {facts['train_s']:.0f} s, "
                                  f"{facts.get('train_attempts', 1)} attempt(s)")))
    if round_["adapter"]:
        rows.append(("adapter", round_["adapter"]))
    if "base" in facts:
        rows += [(f"held-out {facts['baseline']}", _score(facts["base"])),
                 (f"held-out {facts['candidate']}", _score(facts["adapted"])),
                 (f"regression {facts['baseline']}", _score(facts["regression_base"])),
                 (f"regression {facts['candidate']}", _score(facts["regression_adapted"]))]
    rows.append(("decision", round_["reason"] or round_["progress"]))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def format_status(status: dict[str, Any]) -> str:
    """Each route's versions (the serving one marked) and the latest rounds."""
    lines = []
    for route, state in status["routes"].items():
        serving = next((v for v in state["versions"] if v["state"] == "serving"), None)
        now = serving["adapter"] if serving else f"{state['configured'] or 'no adapter'} (from the config)"
        lines.append(f"route {route}: serving {now}")
        for version in state["versions"]:
            lineage = version["lineage"]
            lines.append(f"  v{version['version']} {version['adapter']:<32} {version['state']:<12} "
                         f"promoted {_when(version['promoted_at'])}, round {lineage.get('round')}, "
                         f"{lineage.get('examples')} examples ({lineage.get('data_snapshot')}), base "
                         f"{lineage.get('base_model')}, replaced {lineage.get('parent') or 'no adapter'}"
                         + (f"; {version['reason']}" if version["state"] == "rolled_back" else ""))
    lines.append("\nrounds (newest first):")
    for round_ in status["rounds"]:
        lines.append(f"  {round_['id']:>4} {round_['route']:<16} {round_['trigger']:<8} {round_['state']:<9} "
                     f"{_when(round_['started_at'])}  {round_['reason'] or round_['progress']}")
    return "\n".join(lines)
