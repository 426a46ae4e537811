"""`ClusterBooks` as a plain object (its methods are what the Ray actor runs): records from several replicas in
one window, feedback that waits for a record still in another replica's batch, leases, the one store, and the
adaptation ledger's side of rounds, promotions, the rollback watch and rollbacks (the rounds' Ray tasks run in
tests/deployments/test_adapt_e2e.py)."""

from __future__ import annotations

import asyncio

import pytest

from cluster.adaptation.ledger import LedgerError
from cluster.adaptation.round import RoundError, RoundOutcome
from cluster.store.recording import RecordedExample, RecordingStore
from cluster.telemetry.aggregate import RequestRecord, Unit
from deployments.books import WATCH_DELAY_S, ClusterBooks, config_digest


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


# ---- adaptation: rounds end in the ledger, promotions are watched, rollbacks reach every replica ----------


def adaptation_config(tmp_path) -> dict:
    from cluster.config import load_config

    data = load_config().model_dump(mode="json", exclude_none=True)
    data["tiers"][0]["lora"] = {"max_lora_rank": 8, "adapter_dir": str(tmp_path / "adapters")}
    data["routes"].append({"name": "tools", "tiers": ["slm", "fallback"],
                           "adaptation": {"rollback_min_requests": 4, "rollback_max_drop": 0.25}})
    data["gateway"]["recording"] = {"enabled": True, "path": str(tmp_path / "recordings.sqlite")}
    return data


def routed(request_id: str, success: bool, adapter: str | None, route: str = "tools") -> RequestRecord:
    unit = Unit(success=success, escalated=False, latency_ms=10.0, cost_usd=0.001)
    return RequestRecord(request_id, route, 0.0, unit, (("slm", unit),), adapter=adapter)


PROMOTED = RoundOutcome("promoted", "better on both", "tools-1", {"adapted": {"successes": 5}},
                        {"base_model": "embedded:smollm2-135m-instruct", "round": 1, "parent": None})


def configured_books(tmp_path) -> ClusterBooks:
    books = ClusterBooks(recording_path=str(tmp_path / "recordings.sqlite"))
    asyncio.run(books.configure(str(tmp_path / "recordings.sqlite"), adaptation_config(tmp_path)))
    return books


def serving(books: ClusterBooks, tmp_path) -> dict[str, str] | None:
    return asyncio.run(books.serving_adapters(config_digest(adaptation_config(tmp_path))))


def test_a_promoting_round_serves_its_adapter_with_the_live_baseline_it_replaced(tmp_path):
    books = configured_books(tmp_path)

    async def scenario() -> tuple[dict, dict]:
        await books.add_records([routed(f"r{i}", i < 3, None) for i in range(4)])  # the base: 3 of 4
        await books.add_records([routed("other", False, None, route="default")])  # another route's
        round_id = books._ledger.start_round("tools", "command", examples=30).id
        books._finish_round(round_id, "tools", PROMOTED)
        return await books.serving_adapters(config_digest(adaptation_config(tmp_path))), await books.round(round_id)

    served, round_ = asyncio.run(scenario())
    assert served == {"tools": "tools-1"}
    assert (round_["state"], round_["adapter"], round_["facts"]) == (
        "promoted", "tools-1", {"adapted": {"successes": 5}})
    version = books._ledger.serving()["tools"]
    assert (version.baseline_requests, version.baseline_successes) == (4, 3)


def test_a_refused_round_leaves_the_route_as_it_was(tmp_path):
    books = configured_books(tmp_path)
    round_id = books._ledger.start_round("tools", "command", examples=30).id
    books._finish_round(round_id, "tools", RoundOutcome("refused", "success rate not higher", "tools-1"))
    assert serving(books, tmp_path) == {}
    assert books._ledger.round(round_id).state == "refused"


def test_an_adapter_whose_live_success_falls_is_rolled_back_automatically(tmp_path):
    books = configured_books(tmp_path)

    async def scenario() -> dict:
        await books.add_records([routed(f"base{i}", True, None) for i in range(4)])  # 4 of 4 before
        books._finish_round(books._ledger.start_round("tools", "command", examples=30).id, "tools", PROMOTED)
        await books.add_records([routed(f"new{i}", True, "tools-1") for i in range(4)])
        await asyncio.sleep(WATCH_DELAY_S + 0.2)
        assert await books.serving_adapters(config_digest(adaptation_config(tmp_path))) == {"tools": "tools-1"}, \
            "4 of 4: within the allowed drop"
        for i in range(3):  # clients report three of them failed later
            assert await books.record_feedback(f"new{i}", False, wait_s=0.1)
        await asyncio.sleep(WATCH_DELAY_S + 0.2)
        return await books.adaptation_status("tools")

    status = asyncio.run(scenario())
    version = status["routes"]["tools"]["versions"][0]
    assert version["state"] == "rolled_back"
    assert version["reason"] == ("automatic: live success 1/4 (25%) since promotion vs 4/4 (100%) before: "
                                 "dropped more than 25%")
    assert serving(books, tmp_path) == {}


def test_a_version_can_be_served_again_after_a_rollback_and_is_watched_again(tmp_path):
    books = configured_books(tmp_path)

    async def scenario() -> tuple[dict, dict]:
        books._finish_round(books._ledger.start_round("tools", "command", examples=30).id, "tools", PROMOTED)
        rolled = await books.rollback("tools", "by command")
        again = await books.promote_version("tools", "tools-1", "fixed upstream")
        return rolled, again

    rolled, again = asyncio.run(scenario())
    assert rolled["rolled_back"]["reason"] == "by command" and rolled["serving"] is None
    assert (again["version"], again["adapter"], again["state"]) == (2, "tools-1", "serving")
    assert again["lineage"]["round"] == 1 and again["reason"] == "fixed upstream"
    with pytest.raises(LedgerError, match="serves 'tools-1' already"):
        asyncio.run(books.promote_version("tools", "tools-1", "again"))
    with pytest.raises(LedgerError, match="has no version with adapter 'tools-9'"):
        asyncio.run(books.promote_version("tools", "tools-9", "typo"))


def test_rounds_are_refused_with_what_to_fix(tmp_path):
    unrecorded = ClusterBooks(recording_path=None)
    with pytest.raises(RoundError, match="no gateway has configured the cluster's books yet"):
        asyncio.run(unrecorded.start_round("tools"))
    books = configured_books(tmp_path)
    with pytest.raises(RoundError, match="route 'nope' does not exist"):
        asyncio.run(books.start_round("nope"))
    with pytest.raises(RoundError, match="held-out fraction must be between 0 and 1"):
        asyncio.run(books.start_round("tools", held_out_fraction=1.0))
    assert books._ledger.rounds() == []


def test_a_round_running_when_the_books_restart_is_marked_failed(tmp_path):
    books = configured_books(tmp_path)
    round_id = books._ledger.start_round("tools", "command", examples=30).id
    restarted = ClusterBooks(str(tmp_path / "recordings.sqlite"), adaptation_config(tmp_path))  # Ray's restart
    failed = restarted._ledger.round(round_id)
    assert (failed.state, failed.reason) == ("failed", "the cluster's books restarted while the round ran")


def test_books_restarted_with_an_older_config_ask_to_be_configured_again(tmp_path):
    first = adaptation_config(tmp_path)
    books = ClusterBooks(str(tmp_path / "recordings.sqlite"), first)  # what Ray's restart runs
    books._promote("tools", "tools-1", {"round": 1}, "better on both", None)
    redeployed = dict(first)
    redeployed["routes"] = [*first["routes"], {"name": "later", "tiers": ["slm"]}]
    assert asyncio.run(books.serving_adapters(config_digest(redeployed))) is None
    asyncio.run(books.configure(str(tmp_path / "recordings.sqlite"), redeployed))
    assert asyncio.run(books.serving_adapters(config_digest(redeployed))) == {"tools": "tools-1"}


def test_turning_recording_off_keeps_what_the_routes_serve(tmp_path):
    books = configured_books(tmp_path)
    books._promote("tools", "tools-1", {"round": 1}, "better on both", None)
    unrecorded = adaptation_config(tmp_path)
    unrecorded["gateway"]["recording"]["enabled"] = False
    asyncio.run(books.configure(None, unrecorded))
    assert asyncio.run(books.serving_adapters(config_digest(unrecorded))) == {"tools": "tools-1"}
    with pytest.raises(RoundError, match="rounds need gateway.recording.enabled"):
        asyncio.run(books.start_round("tools"))


def test_enough_new_examples_start_a_policy_round_and_one_that_cannot_run_fails_with_the_reason(tmp_path):
    config = adaptation_config(tmp_path)
    config["routes"][-1]["adaptation"]["after_new_examples"] = 3
    books = ClusterBooks(str(tmp_path / "recordings.sqlite"), config)
    tools = [RecordedExample(f"t{i}", "tools", "fallback", 1.0, {"messages": []}, {"role": "assistant"})
             for i in range(3)]

    async def scenario() -> None:
        await books.record_examples(tools[:2])
        assert books._ledger.rounds() == [], "2 new examples: not due"
        await books.record_examples(tools[2:])
        while books._ledger.rounds() == [] or books._ledger.rounds()[0].state == "running":
            await asyncio.sleep(0.01)  # no Ray here: the round's task cannot even start

    asyncio.run(scenario())
    [round_] = books._ledger.rounds()
    assert (round_.trigger, round_.examples, round_.state) == ("policy", 3, "failed")
    assert round_.reason.startswith("the round's task was lost: ")


@pytest.mark.parametrize("call", ["rollback", "promote_version", "adaptation_status"])
def test_an_unknown_route_is_named_with_the_known_ones(tmp_path, call):
    books = configured_books(tmp_path)
    arguments = {"rollback": ("nope", "r"), "promote_version": ("nope", "a", "r"), "adaptation_status": ("nope",)}
    with pytest.raises(RoundError, match=r"route 'nope' does not exist; known: default, tools"):
        asyncio.run(getattr(books, call)(*arguments[call]))
