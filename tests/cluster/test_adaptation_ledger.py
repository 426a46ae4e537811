"""The adaptation ledger: one running round per route, rounds that keep what they measured, versions with
their lineage, rollback to the version before (or to the config's adapter), and all of it on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.adaptation.ledger import Ledger, LedgerError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with Ledger(tmp_path / "recordings.sqlite", clock=Clock()) as opened:
        yield opened


def lineage(round_id: int, parent: str | None = None) -> dict:
    return {"base_model": "embedded:smollm2", "data_snapshot": f"snap{round_id}", "round": round_id, "parent": parent}


def test_a_round_records_its_progress_and_facts_and_ends_once(ledger: Ledger) -> None:
    started = ledger.start_round("tools", "command", examples=40)
    assert (started.state, started.progress, started.examples, started.finished_at) == ("running", "queued", 40, None)
    ledger.update_round(started.id, "training", {"train_pairs": 30})
    ledger.update_round(started.id, "replaying", {"first_loss": 1.5})
    ended = ledger.finish_round(started.id, "refused", "success rate not higher", adapter="tools-1")
    assert (ended.state, ended.reason, ended.adapter, ended.progress) == ("refused", "success rate not higher",
                                                                         "tools-1", "done")
    assert ended.facts == {"train_pairs": 30, "first_loss": 1.5}
    assert ended.finished_at is not None
    again = ledger.finish_round(started.id, "promoted", "later")  # an ended round stays as it ended
    assert (again.state, again.reason) == ("refused", "success rate not higher")


def test_one_round_of_a_route_at_a_time(ledger: Ledger) -> None:
    first = ledger.start_round("tools", "command", examples=40)
    with pytest.raises(LedgerError, match=rf"round {first.id} of route 'tools' is still running"):
        ledger.start_round("tools", "policy", examples=41)
    ledger.start_round("other", "policy", examples=5)  # another route may adapt meanwhile
    ledger.finish_round(first.id, "failed", "training was lost twice")
    assert ledger.start_round("tools", "command", examples=41).state == "running"
    assert [r.route for r in ledger.rounds()] == ["tools", "other", "tools"]  # newest first
    assert [r.state for r in ledger.rounds("tools")] == ["running", "failed"]


def test_rounds_whose_owner_is_gone_are_failed_with_the_reason(ledger: Ledger) -> None:
    running = ledger.start_round("tools", "command", examples=40)
    done = ledger.start_round("other", "command", examples=40)
    ledger.finish_round(done.id, "promoted", "better on both", adapter="other-1")
    assert ledger.fail_unfinished("the books restarted") == 1
    assert (ledger.round(running.id).state, ledger.round(running.id).reason) == ("failed", "the books restarted")
    assert ledger.round(done.id).state == "promoted"


def test_promotions_stack_and_rollbacks_unwind_them_to_the_config(ledger: Ledger) -> None:
    assert ledger.serving() == {}
    first = ledger.promote("tools", "tools-1", lineage(1), "better on both", baseline_requests=30,
                           baseline_successes=24)
    ledger.promote("tools", "tools-2", lineage(2, parent="tools-1"), "better on both")
    assert ledger.serving()["tools"].adapter == "tools-2"
    assert [(v.version, v.adapter, v.state) for v in ledger.versions("tools")] == [
        (2, "tools-2", "serving"), (1, "tools-1", "superseded")]
    assert (first.lineage, first.baseline_requests, first.baseline_successes) == (lineage(1), 30, 24)

    ended, serving = ledger.roll_back("tools", "automatic: live success dropped")
    assert (ended.adapter, ended.state, ended.reason) == ("tools-2", "rolled_back", "automatic: live success dropped")
    assert serving is not None and (serving.adapter, serving.state) == ("tools-1", "serving")
    ended, serving = ledger.roll_back("tools", "by command")
    assert ended.adapter == "tools-1" and serving is None  # back to what the config says
    assert ledger.serving() == {}
    with pytest.raises(LedgerError, match="nothing to roll back"):
        ledger.roll_back("tools", "by command")


def test_a_rolled_back_version_is_not_served_again_by_a_later_rollback(ledger: Ledger) -> None:
    ledger.promote("tools", "tools-1", lineage(1), "r")
    ledger.promote("tools", "tools-2", lineage(2, "tools-1"), "r")
    ledger.roll_back("tools", "bad")  # tools-1 serves again
    ledger.promote("tools", "tools-3", lineage(3, "tools-1"), "r")
    _, serving = ledger.roll_back("tools", "bad too")
    assert serving is not None and serving.adapter == "tools-1"  # not tools-2, which was rolled back


def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "recordings.sqlite"
    with Ledger(path) as ledger:
        round_id = ledger.start_round("tools", "command", examples=40).id
        ledger.promote("tools", "tools-1", lineage(round_id), "better on both")
    with Ledger(path) as reopened:
        assert reopened.round(round_id).state == "running"
        assert reopened.serving()["tools"].lineage == lineage(round_id)
