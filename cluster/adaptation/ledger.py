"""The adaptation ledger: every round and every adapter version of every route, kept beside the recordings.

A round is recorded from its start (what triggered it, its progress) to its end (promoted, refused or
failed, with the reason and its figures: data size, losses, held-out and regression results), so a failed
or refused round is as visible as a promoted one. A version is a promoted adapter with its lineage (base
model, data snapshot, the round that made it, the version it replaced); the route serves its newest version
in state `serving`, and a rollback hands service back to the version before it, or to the config's adapter
when there is none. The ledger lives in the recording database's file (SQLite, WAL) on the head node, where
the cluster's books keep it: one copy for every gateway replica and for `cascade adapt status`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

__all__ = ["AdapterVersion", "Ledger", "LedgerError", "Round", "RoundState"]

RoundState = Literal["running", "promoted", "refused", "failed"]
VersionState = Literal["serving", "superseded", "rolled_back"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS adaptation_rounds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    route TEXT NOT NULL,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    progress TEXT NOT NULL,
    examples INTEGER NOT NULL,
    adapter TEXT,
    reason TEXT NOT NULL,
    facts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rounds_by_route ON adaptation_rounds (route, id);
CREATE TABLE IF NOT EXISTS adapter_versions (
    route TEXT NOT NULL,
    version INTEGER NOT NULL,
    adapter TEXT NOT NULL,
    state TEXT NOT NULL,
    lineage TEXT NOT NULL,
    promoted_at REAL NOT NULL,
    ended_at REAL,
    reason TEXT NOT NULL,
    baseline_requests INTEGER NOT NULL,
    baseline_successes INTEGER NOT NULL,
    PRIMARY KEY (route, version)
);
"""


class LedgerError(RuntimeError):
    """An operation the ledger's state does not allow: a second round of a route, a rollback with nothing to
    roll back to; the message says which."""


@dataclass(frozen=True)
class Round:
    id: int
    route: str
    trigger: str
    """`command` (`cascade adapt run`) or `policy` (the route's `adaptation.after_new_examples`)."""
    state: RoundState
    started_at: float
    finished_at: float | None
    progress: str
    examples: int
    """Verified escalations recorded for the route when the round started (the policy counts from here)."""
    adapter: str | None
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)
    """What the round measured: split sizes, training losses, held-out and regression figures, attempts."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AdapterVersion:
    route: str
    version: int
    adapter: str
    state: VersionState
    lineage: dict[str, Any]
    """base_model, data_snapshot (examples and a digest of their ids), round, parent (the adapter it replaced)."""
    promoted_at: float
    ended_at: float | None
    reason: str
    baseline_requests: int
    """Live requests of the route, and their successes, before the promotion: what the rollback watch compares to."""
    baseline_successes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """Rounds and versions in a SQLite file; one connection shared by all threads behind a lock."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        with self._db:
            self._db.executescript(_SCHEMA)

    # ---- rounds ---------------------------------------------------------------------------------------

    def start_round(self, route: str, trigger: str, examples: int) -> Round:
        """A new running round; LedgerError while another round of the route runs."""
        with self._lock, self._db:
            running = self._db.execute("SELECT id FROM adaptation_rounds WHERE route = ? AND state = 'running'",
                                       (route,)).fetchone()
            if running is not None:
                raise LedgerError(f"round {running[0]} of route {route!r} is still running; "
                                  "`cascade adapt status` follows it")
            cursor = self._db.execute(
                "INSERT INTO adaptation_rounds (route, trigger, state, started_at, progress, examples, reason, facts) "
                "VALUES (?, ?, 'running', ?, 'queued', ?, '', '{}')", (route, trigger, self._clock(), examples))
            round_id = cursor.lastrowid
        return self.round(round_id)

    def update_round(self, round_id: int, progress: str, facts: dict[str, Any] | None = None) -> None:
        """Progress of a running round; `facts` are merged into what it has measured so far."""
        with self._lock, self._db:
            row = self._db.execute("SELECT facts FROM adaptation_rounds WHERE id = ?", (round_id,)).fetchone()
            if row is None:
                raise LedgerError(f"no round {round_id}")
            merged = {**json.loads(row[0]), **(facts or {})}
            self._db.execute("UPDATE adaptation_rounds SET progress = ?, facts = ? WHERE id = ? AND state = 'running'",
                             (progress, json.dumps(merged), round_id))

    def finish_round(self, round_id: int, state: RoundState, reason: str, adapter: str | None = None) -> Round:
        if state == "running":
            raise ValueError("a round finishes as promoted, refused or failed")
        with self._lock, self._db:
            self._db.execute(
                "UPDATE adaptation_rounds SET state = ?, reason = ?, adapter = COALESCE(?, adapter), finished_at = ?, "
                "progress = 'done' WHERE id = ? AND state = 'running'",
                (state, reason, adapter, self._clock(), round_id))
        return self.round(round_id)

    def fail_unfinished(self, reason: str) -> int:
        """Mark every running round failed (their owner is gone, e.g. the books restarted); returns how many."""
        with self._lock, self._db:
            return self._db.execute(
                "UPDATE adaptation_rounds SET state = 'failed', reason = ?, finished_at = ?, progress = 'done' "
                "WHERE state = 'running'", (reason, self._clock())).rowcount

    def round(self, round_id: int) -> Round:
        with self._lock:
            row = self._db.execute(f"SELECT {_ROUND_COLUMNS} FROM adaptation_rounds WHERE id = ?",
                                   (round_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no round {round_id}")
        return _round(row)

    def rounds(self, route: str | None = None, limit: int = 20) -> list[Round]:
        """The newest rounds first, of one route or of all."""
        where, args = ("WHERE route = ?", (route,)) if route is not None else ("", ())
        with self._lock:
            rows = self._db.execute(f"SELECT {_ROUND_COLUMNS} FROM adaptation_rounds {where} ORDER BY id DESC "
                                    "LIMIT ?", (*args, limit)).fetchall()
        return [_round(row) for row in rows]

    # ---- versions -------------------------------------------------------------------------------------

    def promote(self, route: str, adapter: str, lineage: dict[str, Any], reason: str,
                baseline_requests: int = 0, baseline_successes: int = 0) -> AdapterVersion:
        """The route's new serving version; the one it replaces is kept, superseded, for a rollback."""
        with self._lock, self._db:
            now = self._clock()
            self._db.execute("UPDATE adapter_versions SET state = 'superseded', ended_at = ? "
                             "WHERE route = ? AND state = 'serving'", (now, route))
            version = self._db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM adapter_versions WHERE route = ?",
                                       (route,)).fetchone()[0]
            self._db.execute("INSERT INTO adapter_versions VALUES (?, ?, ?, 'serving', ?, ?, NULL, ?, ?, ?)",
                             (route, version, adapter, json.dumps(lineage), now, reason, baseline_requests,
                              baseline_successes))
        return self._version(route, version)

    def roll_back(self, route: str, reason: str) -> tuple[AdapterVersion, AdapterVersion | None]:
        """(the version taken out of service, the one serving again or None for the config's adapter).

        LedgerError when the route serves no version of the ledger's (its config's adapter, or none).
        """
        with self._lock, self._db:
            current = self._db.execute("SELECT version FROM adapter_versions WHERE route = ? AND state = 'serving'",
                                       (route,)).fetchone()
            if current is None:
                raise LedgerError(f"route {route!r} serves no adapter version made by `cascade adapt` (only its "
                                  "config's adapter, if any): nothing to roll back")
            now = self._clock()
            self._db.execute("UPDATE adapter_versions SET state = 'rolled_back', ended_at = ?, reason = ? "
                             "WHERE route = ? AND version = ?", (now, reason, route, current[0]))
            previous = self._db.execute(
                "SELECT MAX(version) FROM adapter_versions WHERE route = ? AND version < ? AND state = 'superseded'",
                (route, current[0])).fetchone()[0]
            if previous is not None:
                self._db.execute("UPDATE adapter_versions SET state = 'serving', ended_at = NULL "
                                 "WHERE route = ? AND version = ?", (route, previous))
        return self._version(route, current[0]), (self._version(route, previous) if previous is not None else None)

    def serving(self) -> dict[str, AdapterVersion]:
        """Each route's serving version; a route missing here serves its config's adapter (or none)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_VERSION_COLUMNS} FROM adapter_versions WHERE state = 'serving'"
                                    ).fetchall()
        return {version.route: version for version in map(_version, rows)}

    def versions(self, route: str) -> list[AdapterVersion]:
        """A route's versions, newest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_VERSION_COLUMNS} FROM adapter_versions WHERE route = ? "
                                    "ORDER BY version DESC", (route,)).fetchall()
        return [_version(row) for row in rows]

    def _version(self, route: str, version: int) -> AdapterVersion:
        with self._lock:
            row = self._db.execute(f"SELECT {_VERSION_COLUMNS} FROM adapter_versions WHERE route = ? AND version = ?",
                                   (route, version)).fetchone()
        return _version(row)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


_ROUND_COLUMNS = "id, route, trigger, state, started_at, finished_at, progress, examples, adapter, reason, facts"
_VERSION_COLUMNS = ("route, version, adapter, state, lineage, promoted_at, ended_at, reason, baseline_requests, "
                    "baseline_successes")


def _round(row: tuple[Any, ...]) -> Round:
    *head, facts = row
    return Round(*head, facts=json.loads(facts))


def _version(row: tuple[Any, ...]) -> AdapterVersion:
    route, version, adapter, state, lineage, *rest = row
    return AdapterVersion(route, version, adapter, state, json.loads(lineage), *rest)
