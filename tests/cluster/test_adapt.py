"""`cascade adapt` without a cluster: config checks, the data gate, the success rule and the config write-back.

The end-to-end run (training, replay against the running gateway, promotion, apply) needs the real cluster and
is tested there; nothing here stands in for it.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.adapt import (
    AdaptError,
    AdaptResult,
    adapter_name,
    format_adapt_result,
    replay_body,
    run_adapt,
)
from cluster.adaptation.dataset import NotEnoughDataError
from cluster.adaptation.success import answer_matches, tool_case
from cluster.adaptation.train import TrainSettings, TrainSummary
from cluster.config import ADAPTER_NAME_PATTERN, ConfigError, load_config
from cluster.config_edit import set_route_fields, write_atomically, write_route_fields
from cluster.recording import RecordedExample, RecordingStore
from policies.promotion import HeldOutResult, decide_promotion

UNREACHABLE = "http://127.0.0.1:9"  # nothing here may get as far as the gateway

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


# ---- config problems ------------------------------------------------------------------------------------


def config_data(tmp_path: Path, lora: dict[str, Any] | None = None) -> dict[str, Any]:
    """The embedded default with a `tools` route, recording into tmp_path, and the SLM's lora as given."""
    data = load_config().model_dump(mode="json", exclude_none=True)
    if lora is not None:
        data["tiers"][0]["lora"] = lora
    data["routes"].append({"name": "tools", "tiers": ["slm", "fallback"]})
    data["gateway"]["recording"] = {"enabled": True, "path": str(tmp_path / "recordings.sqlite")}
    return data


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text("# my cluster\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def adapt(config_path: Path, route: str = "tools", **options: Any) -> None:
    run_adapt(config_path, route, base_url=UNREACHABLE, settings=TrainSettings(**options.pop("train", {})),
              **options)


def adapter_dir(tmp_path: Path) -> Path:
    return tmp_path / "adapters"


def valid_lora(tmp_path: Path) -> dict[str, Any]:
    return {"max_lora_rank": 8, "adapter_dir": str(adapter_dir(tmp_path))}


def test_unknown_route_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(AdaptError, match=r"route 'nope' does not exist; known: default, tools"):
        adapt(write_config(tmp_path, config_data(tmp_path, valid_lora(tmp_path))), route="nope")


@pytest.mark.parametrize("lora", [None, {"max_lora_rank": 8}], ids=["no-lora", "lora-without-adapter-dir"])
def test_slm_without_an_adapter_dir_says_what_to_add(tmp_path: Path, lora: dict[str, Any] | None) -> None:
    with pytest.raises(AdaptError, match=r"tier 'slm' .* has no lora.adapter_dir: add `lora: \{adapter_dir: "):
        adapt(write_config(tmp_path, config_data(tmp_path, lora)))


def test_a_remote_first_tier_is_refused(tmp_path: Path) -> None:
    data = config_data(tmp_path, valid_lora(tmp_path))
    data["tiers"].append({"kind": "remote", "name": "hosted", "base_url": "https://llm.example/v1",
                          "remote_model": "big"})
    data["routes"][-1]["tiers"] = ["hosted", "slm"]
    with pytest.raises(AdaptError, match=r"route 'tools' starts with remote tier 'hosted'"):
        adapt(write_config(tmp_path, data))


def test_a_rank_the_tier_cannot_serve_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(AdaptError, match=r"rank 16 exceeds the lora.max_lora_rank \(8\) of tier 'slm'"):
        adapt(write_config(tmp_path, config_data(tmp_path, valid_lora(tmp_path))), train={"rank": 16})


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_the_held_out_fraction_must_leave_both_sides(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(AdaptError, match="held-out fraction must be between 0 and 1"):
        adapt(write_config(tmp_path, config_data(tmp_path, valid_lora(tmp_path))), held_out_fraction=fraction)


def test_missing_recordings_are_not_created_empty(tmp_path: Path) -> None:
    with pytest.raises(AdaptError, match=r"no recordings at .*recordings.sqlite: set gateway.recording.enabled"):
        adapt(write_config(tmp_path, config_data(tmp_path, valid_lora(tmp_path))))
    assert not (tmp_path / "recordings.sqlite").exists()


def test_too_little_data_writes_nothing(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, config_data(tmp_path, valid_lora(tmp_path)))
    before = config_path.read_bytes()
    with RecordingStore(tmp_path / "recordings.sqlite") as store:
        for _ in range(3):
            store.record(tool_example(call("add", {"a": 2, "b": 3})))
        for _ in range(20):  # plenty, but another route's
            store.record(recorded({"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required"},
                                  reply(call("add", {"a": 2, "b": 3})), route="default"))
    with pytest.raises(NotEnoughDataError, match=r"^3 usable examples recorded .* adapting needs at least 8"):
        adapt(config_path)
    assert not adapter_dir(tmp_path).exists()
    assert config_path.read_bytes() == before
    assert not config_path.with_name("cascade.yaml.bak").exists()


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


# ---- config write-back ----------------------------------------------------------------------------------


def test_promotion_sets_the_route_adapter_and_keeps_the_rest(tmp_path: Path) -> None:
    data = config_data(tmp_path, valid_lora(tmp_path))
    config_path = write_config(tmp_path, data)
    before = config_path.read_text()
    config = write_route_fields(config_path, "tools", {"adapter": "tools-20261126t093000"})
    assert config.route("tools").adapter == "tools-20261126t093000"
    assert config.route("default").adapter is None
    written = yaml.safe_load(config_path.read_text())
    assert written["routes"][-1] == {"name": "tools", "tiers": ["slm", "fallback"], "adapter": "tools-20261126t093000"}
    del written["routes"][-1]["adapter"]
    assert written == data  # every other setting, in the user's own form (not expanded with defaults)
    assert config_path.with_name("cascade.yaml.bak").read_text() == before
    assert load_config(config_path) == config


def test_a_config_without_routes_gets_its_default_route_written_out() -> None:
    data = {"tiers": [{"name": "slm", "model": "m", "lora": {"adapter_dir": "/a"}}]}
    assert set_route_fields(data, "default", {"adapter": "default-20260101t000000"}) == {
        **data, "routes": [{"name": "default", "adapter": "default-20260101t000000"}]}
    assert "routes" not in data  # the caller's data is not changed


def test_a_write_that_would_not_validate_leaves_the_file_alone(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, config_data(tmp_path, lora=None))  # the SLM cannot serve adapters
    before = config_path.read_bytes()
    with pytest.raises(ConfigError, match=r"routes.2.adapter|routes.tools.adapter"):
        write_route_fields(config_path, "tools", {"adapter": "tools-20261126t093000"})
    assert config_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cascade.yaml"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cascade.yaml"
    path.write_text("old: 1\n")
    path.chmod(0o640)

    def fail(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, "new: 2\n")
    assert path.read_text() == "old: 1\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    write_atomically(path, "new: 2\n")
    assert path.read_text() == "new: 2\n"
    assert (path.stat().st_mode & 0o777) == 0o640
    assert path.with_name("cascade.yaml.bak").read_text() == "old: 1\n"


# ---- the report -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("adapted_successes", "written", "last_line"), [
    (9, True, "config: routes.tools.adapter = tools-20261126t093000 (written and applied)"),
    (9, False, "config: unchanged (--no-apply)"),
    (5, False, "config: unchanged; the candidate stays at /a/tools-20261126t093000 for inspection"),
])
def test_the_report_shows_both_runs_and_what_happened_to_the_config(
    adapted_successes: int, written: bool, last_line: str
) -> None:
    base, adapted = HeldOutResult(10, 5, 0.02), HeldOutResult(10, adapted_successes, 0.01)
    result = AdaptResult(
        route="tools", adapter="tools-20261126t093000", adapter_path=Path("/a/tools-20261126t093000"),
        training=TrainSummary(30, 24, 3, 1.5, 0.4, 12.0, Path("/a/tools-20261126t093000"), 8),
        baseline_model="slm", adapted_model="slm:tools-20261126t093000", base=base, adapted=adapted,
        base_errors=0, adapted_errors=1, decision=decide_promotion(base, adapted),
        recorded=50, used=40, skipped=10, held_out=10, config_written=written,
    )
    lines = format_adapt_result(result).splitlines()
    assert "50 recorded, 40 usable (10 skipped" in lines[1]
    assert lines[-1] == last_line
    assert [line.split()[:3] for line in lines if line.startswith("slm")] == [
        ["slm", "5/10", "50%"], ["slm:tools-20261126t093000", f"{adapted_successes}/10", f"{adapted_successes}0%"]]
