"""The recording store: a real SQLite file, round trips, idempotent ids, only the chat contract kept."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from cluster.store.recording import RecordedExample, RecordingError, RecordingStore, contract_fields

BODY = {
    "model": "auto",
    "route": "extract",
    "user": "user-4711",
    "metadata": {"tenant": "acme"},
    "temperature": 0.2,
    "messages": [{"role": "user", "content": "Add 2 and 3 — please."}],
    "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
    "tool_choice": "required",
    "parallel_tool_calls": False,
}
MESSAGE = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a":2,"b":3}'}}],
    "reasoning_content": "internal",
}


def example(id_: str, route: str = "extract", created_at: float = 1.0) -> RecordedExample:
    return RecordedExample(id=id_, route=route, tier="fallback", created_at=created_at,
                           request=contract_fields(BODY), answer={"role": "assistant", "content": '{"x":1}'})


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    recorded = RecordedExample.create("extract", "fallback", BODY, MESSAGE)
    with RecordingStore(tmp_path / "deep" / "er" / "recordings.db") as store:
        store.record(recorded)
    with RecordingStore(tmp_path / "deep" / "er" / "recordings.db") as store:  # reopened from disk
        assert store.examples("extract") == [recorded]


def test_only_contract_fields_are_kept() -> None:
    recorded = RecordedExample.create("extract", "fallback", BODY, MESSAGE)
    assert set(recorded.request) == {"messages", "tools", "tool_choice", "parallel_tool_calls"}
    assert "user-4711" not in repr(recorded) and "acme" not in repr(recorded)
    assert set(recorded.answer) == {"role", "content", "tool_calls"}


def test_extra_fields_are_kept_when_the_operator_lists_them() -> None:
    kept = contract_fields(BODY, extra_fields=["metadata", "not_sent"])
    assert kept["metadata"] == {"tenant": "acme"}
    assert "not_sent" not in kept and "user" not in kept


def test_recording_the_same_id_twice_stores_it_once(tmp_path: Path) -> None:
    with RecordingStore(tmp_path / "r.db") as store:
        store.record(example("a"))
        store.record(example("a", created_at=2.0))
        assert store.count() == 1
        assert store.examples("extract")[0].created_at == 1.0


def test_counts_and_examples_are_per_route_and_oldest_first(tmp_path: Path) -> None:
    with RecordingStore(tmp_path / "r.db") as store:
        store.record(example("late", created_at=3.0))
        store.record(example("early", created_at=1.0))
        store.record(example("other", route="summarise", created_at=2.0))
        assert (store.count(), store.count("extract"), store.count("summarise"), store.count("none")) == (3, 2, 1, 0)
        assert [e.id for e in store.examples("extract")] == ["early", "late"]
        assert store.examples("none") == []


def test_database_is_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    RecordingStore(tmp_path / "r.db").close()
    db = sqlite3.connect(tmp_path / "r.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    path.write_text("these are notes, not a database\n" * 100)
    with pytest.raises(RecordingError, match="not a readable recording database"):
        RecordingStore(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "r.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(RecordingError, match="schema version 99"):
        RecordingStore(tmp_path / "r.db")


def test_concurrent_writes_from_threads_all_land(tmp_path: Path) -> None:
    with RecordingStore(tmp_path / "r.db") as store:
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            try:
                barrier.wait()
                for i in range(25):
                    store.record(example(f"{worker}-{i}", route=f"route-{worker % 2}", created_at=float(i)))
                    store.count()
            except BaseException as error:  # noqa: BLE001 - surfaced by the assertion below
                errors.append(error)

        threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert store.count() == 200 and store.count("route-0") == 100
