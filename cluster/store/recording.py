"""Escalated requests whose fallback answer passed verification, kept as training data for the SLM.

Every such request is a case the SLM got wrong and a stronger tier got right, which is exactly what a LoRA
adapter of the SLM should learn (`cascade adapt`). Only the fields that define the task are stored (the
chat contract), so the store never becomes a second copy of users' data. SQLite because gateway replicas
write from several threads and `cascade adapt` reads while they do: WAL lets readers and one writer work
at once, and a crash mid-write never leaves a torn row.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cluster.config import RecordingConfig
from cluster.store.models import cache_root

__all__ = ["CONTRACT_FIELDS", "RecordedExample", "RecordingError", "RecordingStore", "contract_fields"]

CONTRACT_FIELDS = ("messages", "tools", "tool_choice", "response_format", "parallel_tool_calls")
ANSWER_FIELDS = ("role", "content", "tool_calls")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    tier TEXT NOT NULL,
    created_at REAL NOT NULL,
    request TEXT NOT NULL,
    answer TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_by_route ON examples (route, created_at);
"""


class RecordingError(RuntimeError):
    """The recording database cannot be opened or read (not a SQLite file, corrupt, or a newer schema)."""


def recording_path(config: RecordingConfig) -> Path:
    """The store's file: the configured path, else recordings.sqlite in the slm-cascade cache.

    One function for the gateway that writes and `cascade adapt` that reads, so the two never disagree.
    """
    return Path(config.path).expanduser() if config.path else cache_root() / "recordings.sqlite"


def contract_fields(body: dict[str, Any], extra_fields: Sequence[str] = ()) -> dict[str, Any]:
    """The parts of a chat request that define the task: messages, tools and the answer's required shape.

    Nothing else of the user's data is stored: no user ids, `metadata`, `user`, headers or sampling settings,
    unless the operator lists them in `extra_fields`. Absent fields stay absent (not None), so a recorded
    request replays exactly as it was sent.
    """
    keep = (*CONTRACT_FIELDS, *extra_fields)
    return {key: body[key] for key in keep if key in body}


@dataclass(frozen=True)
class RecordedExample:
    """One verified answer from a tier above the SLM, to the request (contract fields only) it answered."""

    id: str
    route: str
    tier: str
    created_at: float
    request: dict[str, Any]
    answer: dict[str, Any]

    @classmethod
    def create(
        cls,
        route: str,
        tier: str,
        body: dict[str, Any],
        message: dict[str, Any],
        extra_fields: Sequence[str] = (),
    ) -> RecordedExample:
        """A new example from a request body and the verified assistant message, both stripped to the contract."""
        return cls(
            id=uuid.uuid4().hex,
            route=route,
            tier=tier,
            created_at=time.time(),
            request=contract_fields(body, extra_fields),
            answer={key: message[key] for key in ANSWER_FIELDS if key in message},
        )


class RecordingStore:
    """A SQLite file of recorded examples; one connection shared by all threads behind a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise RecordingError(f"cannot open recording database {self.path}: {error}") from error
        try:
            self._initialise()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise RecordingError(f"{self.path} is not a readable recording database: {error}") from error
        except RecordingError:
            self._db.close()
            raise

    def _initialise(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RecordingError(
                f"{self.path} has recording schema version {version}; this slm-cascade reads up to {SCHEMA_VERSION}"
            )
        self._db.execute("PRAGMA journal_mode=WAL")
        with self._db:
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def record(self, *examples: RecordedExample) -> None:
        """Store examples in one transaction; recording an id again is a no-op (a retried write must not
        duplicate it)."""
        rows = [(example.id, example.route, example.tier, example.created_at,
                 json.dumps(example.request, ensure_ascii=False), json.dumps(example.answer, ensure_ascii=False))
                for example in examples]
        with self._lock, self._db:
            self._db.executemany("INSERT OR IGNORE INTO examples VALUES (?, ?, ?, ?, ?, ?)", rows)

    def count(self, route: str | None = None) -> int:
        """Examples recorded for one route, or for all routes."""
        with self._lock:
            if route is None:
                return self._db.execute("SELECT COUNT(*) FROM examples").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM examples WHERE route = ?", (route,)).fetchone()[0]

    def examples(self, route: str) -> list[RecordedExample]:
        """A route's examples, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, route, tier, created_at, request, answer FROM examples WHERE route = ? "
                "ORDER BY created_at, id",
                (route,),
            ).fetchall()
        return [
            RecordedExample(id=id_, route=route_, tier=tier, created_at=created_at,
                            request=json.loads(request), answer=json.loads(answer))
            for id_, route_, tier, created_at, request, answer in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
