"""Replaying an answer's features from a bench record gives what the gateway computes for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.features import annotate_records, record_features
from cluster.evaluation.bfcl import load_cases


def record(case_id: str, arguments: dict, **extra) -> dict:
    text = json.dumps([{"name": "calculate_triangle_area", "arguments": arguments}], separators=(",", ":"))
    tokens = [{"token": ch, "logprob": -0.1, "top_logprobs": [{"token": ch, "logprob": -0.1},
                                                               {"token": "?", "logprob": -2.1}]} for ch in text]
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "calculate_triangle_area",
                                                    "arguments": json.dumps(arguments)}}]}
    return {"policy": "slm-only", "case_id": case_id, "category": "simple_python", "success": True,
            "message": message, "logprobs": tokens, "tokens_in": 90, "tokens_out": len(tokens), **extra}


def test_a_grounded_answer_and_an_invented_one_differ_where_they_should():
    [case] = load_cases("simple_python", 1)  # "a triangle with a base of 10 units and height of 5 units"
    right = record_features(record(case.id, {"base": 10, "height": 5}), case)
    wrong = record_features(record(case.id, {"base": 12, "height": 5}), case)
    assert right["grounding"] == 1.0 and wrong["grounding"] == 0.5 and wrong["grounding_min"] == 0.0
    assert right["verifier"] == 1.0
    assert right["value_min_margin"] == pytest.approx(2.0) and right["value_mean_logprob"] == pytest.approx(-0.1)
    assert record_features({"case_id": case.id}, case) is None  # an HTTP error keeps no answer


def test_annotate_writes_features_into_answered_records_only(tmp_path: Path):
    [case] = load_cases("simple_python", 1)
    rows = [record(case.id, {"base": 10, "height": 5}), {"policy": "slm-only", "case_id": "simple_python_1",
                                                        "category": "simple_python", "error": "503"},
            record("unknown-case", {"base": 1, "height": 1})]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert annotate_records(tmp_path) == 1
    written = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert written[0]["features"]["grounding"] == 1.0
    assert "features" not in written[1] and "features" not in written[2]
