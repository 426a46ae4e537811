"""`ClusterBooks` as a plain object (its methods are what the Ray actor runs): records from several replicas in
one window, feedback that waits for a record still in another replica's batch, leases, and the one store."""

from __future__ import annotations

import asyncio

from cluster.recording import RecordedExample, RecordingStore
from cluster.telemetry.aggregate import RequestRecord, Unit
from deployments.books import ClusterBooks


def record(request_id: str, success: bool = True) -> RequestRecord:
    unit = Unit(success=success, escalated=False, latency_ms=10.0, cost_usd=0.001)
    return RequestRecord(request_id, "default", 0.0, unit, (("slm", unit),))


def example(example_id: str) -> RecordedExample:
    return RecordedExample(example_id, "default", "fallback", 1.0, {"messages": []}, {"role": "assistant"})


def test_records_from_every_replica_land_in_one_window():
    books = ClusterBooks(recording_path=None)

    async def scenario() -> dict:
        await books.add_records([record("a"), record("b")])  # replica one's batch
        await books.add_records([record("c", success=False)])  # replica two's
        return await books.snapshot()

    overall = asyncio.run(scenario())["overall"]
    assert (overall["requests"], overall["successes"]) == (3, 2)


def test_feedback_waits_for_a_record_still_in_another_replicas_batch():
    books = ClusterBooks(recording_path=None)

    async def scenario() -> tuple[bool, dict]:
        feedback = asyncio.create_task(books.record_feedback("late", False, wait_s=5.0))
        await asyncio.sleep(0)  # the feedback is waiting before the record arrives
        await books.add_records([record("late")])
        return await feedback, await books.snapshot()

    known, snapshot = asyncio.run(scenario())
    assert known and snapshot["overall"]["successes"] == 0


def test_feedback_on_an_unknown_request_gives_up_after_its_wait():
    books = ClusterBooks(recording_path=None)
    assert asyncio.run(books.record_feedback("never", True, wait_s=0.05)) is False


def test_leases_come_from_one_set_of_buckets():
    books = ClusterBooks(recording_path=None)

    async def scenario() -> list[tuple[int, int]]:
        return [await books.lease("agent", 60.0, 3, 2) for _ in range(3)]

    grants = asyncio.run(scenario())
    assert [granted for granted, _ in grants] == [2, 1, 0] and grants[2][1] >= 1


def test_examples_go_to_the_configured_store_once_and_follow_a_reconfigured_path(tmp_path):
    first, second = tmp_path / "one.sqlite", tmp_path / "two.sqlite"
    books = ClusterBooks(recording_path=str(first))

    async def scenario() -> None:
        await books.record_examples([example("x"), example("y")])
        await books.record_examples([example("x")])  # a replica sending its batch again
        await books.configure(str(second))
        await books.record_examples([example("z")])

    asyncio.run(scenario())
    with RecordingStore(first) as store_one, RecordingStore(second) as store_two:
        assert (store_one.count(), store_two.count()) == (2, 1)
