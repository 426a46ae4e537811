"""An adaptation round without a cluster: the checks that fail a round before it trains (with the reason the
ledger records), the data gate, adapter names, replayed requests, the success rule, and the tables
`cascade adapt` prints.

Training, replay through the gateway, promotion and rollback need the real cluster and are tested there
(tests/deployments/test_adapt_e2e.py); nothing here stands in for them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cluster.adaptation.round import RoundOutcome, RoundRequest, adapter_name, replay_body, run_round
from cluster.adaptation.success import answer_matches, tool_case
from cluster.adaptation.train import TrainSettings
from cluster.config import ADAPTER_NAME_PATTERN, load_config
from cluster.operations.adaptation_client import format_round, format_status
from cluster.store.recording import RecordedExample, RecordingStore

TOOLS = [
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]}}},
    {"type": "function", "function": {
        "name": "book", "description": "Book a trip.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"},
            "dates": {"type": "object"},
            "stops": {"type": "array", "items": {"type": "object"}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "note": {"type": ["string", "null"]},
        }, "required": ["city"]}}},
]
MESSAGES = [{"role": "user", "content": "What is 2 plus 3?"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "ok": {"type": "boolean"}}}


def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def reply(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def recorded(request: dict[str, Any], answer: dict[str, Any], route: str = "tools") -> RecordedExample:
    return RecordedExample.create(route, "fallback", request, answer)


def tool_example(*calls: dict[str, Any], tool_choice: Any = "required") -> RecordedExample:
    return recorded({"messages": MESSAGES, "tools": TOOLS, "tool_choice": tool_choice}, reply(*calls))


def json_example(content: str) -> RecordedExample:
    return recorded({"messages": MESSAGES, "response_format": {"type": "json_schema",
                                                               "json_schema": {"name": "x", "schema": SCHEMA}}},
                    {"role": "assistant", "content": content})


# ---- what fails a round before it trains -----------------------------------------------------------------


def config_data(tmp_path: Path, lora: dict[str, Any] | None = None) -> dict[str, Any]:
    """The embedded default with a `tools` route, recording into tmp_path, and the SLM's lora as given."""
    data = load_config().model_dump(mode="json", exclude_none=True)
    if lora is not None:
        data["tiers"][0]["lora"] = lora
    data["routes"].append({"name": "tools", "tiers": ["slm", "fallback"]})
    data["gateway"]["recording"] = {"enabled": True, "path": str(tmp_path / "recordings.sqlite")}
    return data


def valid_lora(tmp_path: Path) -> dict[str, Any]:
    return {"max_lora_rank": 8, "adapter_dir": str(tmp_path / "adapters")}


def round_of(data: dict[str, Any], route: str = "tools", facts: dict[str, Any] | None = None,
             **options: Any) -> tuple[RoundOutcome, list[str]]:
    """The round's outcome and the progress it reported (its facts into `facts`); it must fail before it needs
    Ray (books=None)."""
    said: list[str] = []

    def report(progress: str, reported: dict[str, Any]) -> None:
        said.append(progress)
        (facts if facts is not None else {}).update(reported)

    outcome = run_round(RoundRequest(config=data, route=route, **options), round_id=1, books=None, report=report)
    return outcome, said


def record_tools(tmp_path: Path, count: int, route: str = "tools") -> None:
    with RecordingStore(tmp_path / "recordings.sqlite") as store:
        for _ in range(count):
            store.record(recorded({"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required"},
                                  reply(call("add", {"a": 2, "b": 3})), route=route))


def test_unknown_route_names_the_known_ones(tmp_path: Path) -> None:
    outcome, _ = round_of(config_data(tmp_path, valid_lora(tmp_path)), route="nope")
    assert outcome.state == "failed"
    assert re.match(r"route 'nope' does not exist; known: default, tools", outcome.reason)


@pytest.mark.parametrize("lora", [None, {"max_lora_rank": 8}], ids=["no-lora", "lora-without-adapter-dir"])
def test_slm_without_an_adapter_dir_says_what_to_add(tmp_path: Path, lora: dict[str, Any] | None) -> None:
    outcome, _ = round_of(config_data(tmp_path, lora))
    assert outcome.state == "failed"
    assert re.search(r"tier 'slm' .* has no lora.adapter_dir: add `lora: \{adapter_dir: ", outcome.reason)


def test_a_remote_first_tier_is_refused(tmp_path: Path) -> None:
    data = config_data(tmp_path, valid_lora(tmp_path))
    data["tiers"].append({"kind": "remote", "name": "hosted", "base_url": "https://llm.example/v1",
                          "remote_model": "big"})
    data["routes"][-1]["tiers"] = ["hosted", "slm"]
    outcome, _ = round_of(data)
    assert outcome.state == "failed" and "route 'tools' starts with remote tier 'hosted'" in outcome.reason


def test_a_rank_the_tier_cannot_serve_is_refused_before_training(tmp_path: Path) -> None:
    outcome, said = round_of(config_data(tmp_path, valid_lora(tmp_path)), settings=TrainSettings(rank=16))
    assert outcome.state == "failed"
    assert "rank 16 exceeds the lora.max_lora_rank (8) of tier 'slm'" in outcome.reason
    assert said == []


def test_a_base_model_that_changed_under_the_serving_adapter_fails_the_round(tmp_path: Path) -> None:
    record_tools(tmp_path, 20)
    outcome, said = round_of(config_data(tmp_path, valid_lora(tmp_path)), serving_adapter="tools-20261126t093000",
                             serving_base_model="embedded:some-older-slm")
    assert outcome.state == "failed"
    assert outcome.reason.startswith("the serving adapter 'tools-20261126t093000' was trained on "
                                     "'embedded:some-older-slm' but tier 'slm' now serves 'embedded:")
    assert "`cascade adapt rollback --route tools`" in outcome.reason
    assert said == []


def test_too_little_data_fails_the_round_and_writes_no_adapter(tmp_path: Path) -> None:
    record_tools(tmp_path, 3)
    record_tools(tmp_path, 20, route="default")  # plenty, but another route's: the regression set
    facts: dict[str, Any] = {}
    outcome, said = round_of(config_data(tmp_path, valid_lora(tmp_path)), facts=facts)
    assert outcome.state == "failed"
    assert re.match(r"3 usable examples recorded .* adapting needs at least 8", outcome.reason)
    assert said == ["checking data"]
    assert (facts["recorded"], facts["train_pairs"] + facts["held_out"], facts["regression_cases"]) == (3, 3, 20)
    assert not (tmp_path / "adapters").exists()


@pytest.mark.parametrize(("adaptation", "regression_cases"), [
    ({}, 12),  # every other route on the SLM: default and pinned
    ({"regression_routes": ["pinned"]}, 5),
    ({"regression_cases": 8}, 8),
    ({"regression_routes": []}, 0),
])
def test_the_regression_set_comes_from_other_routes_on_the_same_tier(tmp_path: Path, adaptation: dict[str, Any],
                                                                     regression_cases: int) -> None:
    data = config_data(tmp_path, valid_lora(tmp_path))
    data["routes"][-1]["adaptation"] = adaptation
    data["routes"] += [{"name": "pinned", "tiers": ["slm"]}, {"name": "big", "tiers": ["fallback"]}]
    record_tools(tmp_path, 3)
    record_tools(tmp_path, 7, route="default")
    record_tools(tmp_path, 5, route="pinned")
    record_tools(tmp_path, 9, route="big")  # starts on another tier: not this adapter's concern
    facts: dict[str, Any] = {}
    round_of(data, facts=facts)
    assert facts["regression_cases"] == regression_cases


# ---- adapter names and replayed requests ----------------------------------------------------------------


def test_adapter_names_are_utc_timestamps_that_the_gateway_accepts() -> None:
    local = datetime(2026, 11, 26, 10, 30, 0, tzinfo=timezone(timedelta(hours=1)))
    assert adapter_name("tools", local) == "tools-20261126t093000"
    long = adapter_name("a" * 30 + "-b" * 5, datetime(2026, 1, 2, tzinfo=UTC))
    assert long == "a" * 25 + "-20260102t000000"
    assert re.fullmatch(ADAPTER_NAME_PATTERN, long)


def test_replay_sends_only_the_contract_greedily() -> None:
    example = RecordedExample.create(
        "tools", "fallback",
        {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False,
         "metadata": {"tenant": "acme"}},
        reply(call("add", {"a": 2, "b": 3})), extra_fields=["metadata"],
    )
    assert replay_body(example, "slm:tools-20261126t093000", 128) == {
        "messages": MESSAGES, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False,
        "model": "slm:tools-20261126t093000", "temperature": 0, "max_tokens": 128,
    }


# ---- the success rule -----------------------------------------------------------------------------------


def test_recorded_calls_become_bfcl_ground_truth() -> None:
    case = tool_case(tool_example(
        call("add", {"a": 2, "b": 3}),
        call("book", {"city": "Zürich", "dates": {"from": "2026-01-02"}, "stops": [{"city": "Bern"}],
                      "tags": ["work"], "note": None, "undeclared": 7}),
    ))
    assert case.parallel and case.expects_calls
    assert case.ground_truth == [
        {"add": {"a": [2], "b": [3]}},
        {"book": {"city": ["Zürich"], "dates": [{"from": ["2026-01-02"]}], "stops": [[{"city": ["Bern"]}]],
                  "tags": [["work"]], "note": [None], "undeclared": [7]}},
    ]
    book = next(f for f in case.functions if f["name"] == "book")["parameters"]
    assert book["required"] == ["city"]
    assert book["properties"] == {
        "city": {"type": "string"}, "dates": {"type": "dict"}, "stops": {"type": "array", "items": {"type": "dict"}},
        "tags": {"type": "array", "items": {"type": "string"}}, "note": {"type": "any"}, "undeclared": {"type": "any"},
    }
    assert next(f for f in case.functions if f["name"] == "add")["parameters"]["properties"] == {
        "a": {"type": "float"}, "b": {"type": "integer"}}


ADD = tool_example(call("add", {"a": 2, "b": 3}))
TRIP = {"city": "Zürich", "dates": {"from": "2026-01-02"}, "stops": [{"city": "Bern"}], "tags": ["work"]}


@pytest.mark.parametrize(("example", "message", "matches"), [
    (ADD, reply(call("add", {"a": 2.0, "b": 3})), True),  # a number: 2 and 2.0 are the same answer
    (ADD, reply(call("add", {"b": 3, "a": 2})), True),
    (ADD, reply(call("add", {"a": 2, "b": 4})), False),
    (ADD, reply(call("add", {"a": 2, "b": 3.5})), False),  # b is an integer
    (ADD, reply(call("add", {"a": 2})), False),
    (ADD, reply(call("add", {"a": 2, "b": 3, "c": 1})), False),
    (ADD, reply(call("add", {"a": 2, "b": 3}), call("add", {"a": 2, "b": 3})), False),
    (ADD, reply(call("book", {"city": "Bern"})), False),
    (ADD, reply(content='{"name": "add", "arguments": {"a": 2, "b": 3}}'), False),  # guided: tool_calls only
    (ADD, reply({"id": "c", "type": "function", "function": {"name": "add", "arguments": "{oops"}}), False),
    (tool_example(call("book", TRIP)), reply(call("book", {**TRIP, "city": "zurich "})), False),
    (tool_example(call("book", TRIP)), reply(call("book", {**TRIP, "city": "ZÜRICH"})), True),  # BFCL: case-blind
    (tool_example(call("book", TRIP)), reply(call("book", {**TRIP, "dates": {"from": "2026-01-03"}})), False),
    (tool_example(call("book", TRIP)), reply(call("book", {**TRIP, "stops": []})), False),
    (tool_example(call("add", {"a": 2, "b": 3}), call("book", {"city": "Bern"})),
     reply(call("book", {"city": "Bern"}), call("add", {"a": 2, "b": 3})), True),  # parallel: any order
    (tool_example(call("add", {"a": 2, "b": 3}), tool_choice={"type": "function", "function": {"name": "add"}}),
     reply(call("add", {"a": 2, "b": 3})), True),
], ids=lambda value: "" if not isinstance(value, bool) else str(value))
def test_a_reply_succeeds_when_its_calls_match_the_recorded_ones(
    example: RecordedExample, message: dict[str, Any], matches: bool
) -> None:
    assert answer_matches(example, message) is matches


@pytest.mark.parametrize(("content", "matches"), [
    ('{"ok": true, "city": "Zürich"}', True),  # key order and whitespace do not matter
    ('{"city":"Zürich","ok":true}', True),
    ('{"city": "Zurich", "ok": true}', False),  # no BFCL leniency for JSON answers: exact values
    ('{"city": "Zürich", "ok": 1}', False),  # true is not 1
    ('{"city": "Zürich"}', False),
    ('{"city": "Zürich", "ok": true', False),
    (None, False),
])
def test_a_json_answer_succeeds_when_it_equals_the_recorded_one(content: str | None, matches: bool) -> None:
    example = json_example('{ "city": "Zürich", "ok": true }')
    assert answer_matches(example, {"role": "assistant", "content": content}) is matches


# ---- the tables `cascade adapt` prints -------------------------------------------------------------------


FIGURES = {"cases": 6, "successes": 5, "cost_usd": 0.002, "errors": 1, "cps": 0.0004}
NONE_RIGHT = {"cases": 6, "successes": 0, "cost_usd": 0.002, "errors": 0, "cps": float("inf")}


def a_round(state: str, reason: str, **facts: Any) -> dict[str, Any]:
    return {"id": 7, "route": "tools", "trigger": "policy", "state": state, "started_at": 1_790_000_000.0,
            "finished_at": 1_790_000_300.0, "progress": "done", "examples": 40, "adapter": "tools-20261126t093000",
            "reason": reason, "facts": facts}


def test_a_finished_round_shows_its_data_training_replays_and_decision() -> None:
    facts = {"recorded": 40, "skipped": 4, "train_pairs": 27, "held_out": 9, "regression_cases": 12,
             "first_loss": 1.65, "last_loss": 1.23, "epochs": 3, "train_s": 147.2, "train_attempts": 2,
             "baseline": "slm", "candidate": "slm:tools-20261126t093000", "base": NONE_RIGHT, "adapted": FIGURES,
             "regression_base": FIGURES, "regression_adapted": FIGURES}
    lines = format_round(a_round("promoted", "better on both: ...", **facts)).splitlines()
    text = "\n".join(lines)
    assert lines[0].split(None, 1)[1] == "7 of route tools (policy), promoted"
    assert "40 recorded, 4 skipped" in text and "27 to train, 9 held out, 12 regression" in text
    assert "3 epochs, loss 1.650 -> 1.230, 147 s, 2 attempt(s)" in text
    assert "held-out slm  " in text and "0/6 (0%), CPS $inf, 0 errors" in text
    assert "5/6 (83%), CPS $0.0004, 1 errors" in text
    assert lines[-1].split(None, 1) == ["decision", "better on both: ..."]


def test_a_round_that_failed_early_shows_only_what_it_reached() -> None:
    text = format_round(a_round("failed", "3 usable examples recorded")).splitlines()
    assert [line.split()[0] for line in text] == ["round", "started", "adapter", "decision"]


def test_the_status_marks_what_each_route_serves() -> None:
    version = {"version": 2, "adapter": "tools-20261126t093000", "state": "rolled_back", "promoted_at": 1_790_000_000.0,
               "reason": "automatic: live success 2/20 (10%) since promotion vs 18/20 (90%) before",
               "lineage": {"round": 7, "examples": 40, "data_snapshot": "ab12", "base_model": "embedded:slm",
                           "parent": None}}
    status = {"routes": {"tools": {"configured": None, "versions": [version]},
                         "adapted": {"configured": "alpha", "versions": []}},
              "rounds": [a_round("promoted", "better on both")]}
    text = format_status(status)
    assert "route tools: serving no adapter (from the config)" in text
    assert "route adapted: serving alpha (from the config)" in text
    assert "v2 tools-20261126t093000" in text and "rolled_back" in text and "; automatic: live success" in text
