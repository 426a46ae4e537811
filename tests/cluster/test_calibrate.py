"""`cascade calibrate`'s body: read labelled outcomes, pick the threshold, print the curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.operations.calibrate_route import CalibrateError, load_outcomes, run_calibrate

DATA = Path(__file__).parent / "data" / "labelled_outcomes.jsonl"

# The example file: 12 requests, SLM cost 0.001 each (always paid), fallback 0.01 when escalated.
# Accept iff confidence >= t; confidences below t escalate. Hand-computed curve (cost in 0.001 units):
#   conf  0.20 0.30 0.40 0.50 0.60 0.70 0.75 0.80 0.85 0.90 0.92 0.95
#   slm    F    F    T    F    F    T    T    F    T    T    T    T      (7 right)
#   fb     T    F    T    T    T    T    T    T    T    T    T    T
#   t      escalated  successes  cost  success  CPS
#   0.0    0          7          12    0.583    1.714
#   0.6    4          3+6 = 9    52    0.750    5.778
#   0.7    5          4+6 = 10   62    0.833    6.200   <- floor 0.8: cheapest feasible
#   0.75   6          5+5 = 10   72    0.833    7.200
#   0.85   8          7+4 = 11   92    0.917    8.364   <- floor 0.9
#   1.0    12         11         132   0.917   12.000
# No threshold exceeds 11/12 (the 0.30 request fails on both tiers).


def test_example_file_optimum_matches_hand_computation():
    report = json.loads(run_calibrate(DATA, 0.8, as_json=True))
    assert report["n_outcomes"] == 12
    best = report["best"]
    assert best["threshold"] == 0.7
    assert best["success_rate"] == pytest.approx(10 / 12)
    assert best["total_cost_usd"] == pytest.approx(0.062)
    assert best["cps_usd"] == pytest.approx(0.0062)
    assert best["accepted_fraction"] == pytest.approx(7 / 12)
    curve = {p["threshold"]: p for p in report["curve"]}
    assert len(curve) == 14  # 12 distinct confidences plus 0 and 1
    assert curve[0.6]["cps_usd"] == pytest.approx(0.052 / 9)
    assert curve[0.75]["cps_usd"] == pytest.approx(0.0072)
    assert curve[1.0]["accepted_fraction"] == 0.0


@pytest.mark.parametrize(("floor", "threshold"), [(0.0, 0.0), (0.75, 0.6), (0.8, 0.7), (0.9, 0.85)])
def test_the_floor_moves_the_optimum(floor, threshold):
    assert json.loads(run_calibrate(DATA, floor, as_json=True))["best"]["threshold"] == threshold


def test_table_lists_the_curve_and_marks_the_chosen_point():
    lines = run_calibrate(DATA, 0.8).splitlines()
    assert lines[0] == f"12 labelled outcomes from {DATA}; success-rate floor 0.8000"
    assert lines[1] == "chosen threshold 0.7000: success rate 0.8333, CPS $0.0062, SLM answers 58.3%"
    assert lines[3].split() == ["threshold", "success_rate", "cps_usd", "accepted"]
    rows = lines[4:]
    assert len(rows) == 14
    chosen = [row for row in rows if row.startswith("*")]
    assert chosen == ["*    0.7000        0.8333        0.0062    0.5833  chosen"]
    assert sum(row.endswith("below floor") for row in rows) == 6  # t = 0 .. 0.6


def test_json_has_no_infinity(tmp_path):
    path = tmp_path / "never.jsonl"
    row = {"confidence": 0.5, "slm_correct": False, "slm_cost_usd": 0.1, "fallback_cost_usd": 1.0}
    rows = [{**row, "fallback_correct": False}, {**row, "confidence": 0.9, "fallback_correct": True}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = json.loads(run_calibrate(path, 0.0, as_json=True))
    assert report["curve"][0]["threshold"] == 0.0 and report["curve"][0]["cps_usd"] is None  # nothing succeeds
    assert "inf" in run_calibrate(path, 0.0)


def test_unreachable_floor_is_a_clear_error():
    with pytest.raises(CalibrateError, match=r"no threshold reaches success rate 0\.9500; the best is 0\.9167"):
        run_calibrate(DATA, 0.95)


def test_floor_out_of_range_is_a_clear_error():
    with pytest.raises(CalibrateError, match=r"min_success_rate must be in \[0, 1\], got 1.5"):
        run_calibrate(DATA, 1.5)


GOOD_ROW = {
    "confidence": 0.5,
    "slm_correct": True,
    "slm_cost_usd": 0.001,
    "fallback_cost_usd": 0.01,
    "fallback_correct": True,
}
NAN_ROW = json.dumps({**GOOD_ROW, "confidence": float("nan")})  # Python writes NaN, which is not JSON


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object with the fields of LabelledOutcome, got list"),
        (json.dumps({**GOOD_ROW, "fallback_correct": None}), "field 'fallback_correct'"),
        (json.dumps({k: v for k, v in GOOD_ROW.items() if k != "slm_correct"}), "missing field 'slm_correct'"),
        (json.dumps({**GOOD_ROW, "slm_correct": 1}), "field 'slm_correct': Input should be a valid boolean"),
        (json.dumps({**GOOD_ROW, "confidence": "0.5"}), "field 'confidence': Input should be a valid number"),
        (json.dumps({**GOOD_ROW, "confidence": 1.5}), "confidence must be in [0, 1], got 1.5"),
        (json.dumps({**GOOD_ROW, "slm_cost_usd": -1}), "costs must be non-negative"),
        (NAN_ROW, "confidence must be in [0, 1], got nan"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path, bad_line, expected):
    path = tmp_path / "outcomes.jsonl"
    path.write_text(f"{json.dumps(GOOD_ROW)}\n\n{bad_line}\n{json.dumps(GOOD_ROW)}\n")  # the bad row is line 3
    with pytest.raises(CalibrateError) as caught:
        run_calibrate(path, 0.5)
    assert f"{path}:3: {expected}" in str(caught.value)


def test_every_bad_row_is_reported_up_to_a_cap(tmp_path):
    path = tmp_path / "outcomes.jsonl"
    path.write_text("[]\n" * 13)
    with pytest.raises(CalibrateError) as caught:
        load_outcomes(path)
    message = str(caught.value)
    assert f"{path}:1:" in message and f"{path}:10:" in message and f"{path}:11:" not in message
    assert message.endswith("... and 3 more")


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(CalibrateError, match=r"no labelled outcomes \(the file is empty\)"):
        run_calibrate(path, 0.5)


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(CalibrateError, match="cannot read labelled outcomes from .*missing.jsonl"):
        run_calibrate(tmp_path / "missing.jsonl", 0.5)
    with pytest.raises(CalibrateError, match="cannot read labelled outcomes"):
        run_calibrate(tmp_path, 0.5)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CalibrateError, match="cannot read labelled outcomes"):
        run_calibrate(binary, 0.5)


def test_extra_keys_are_ignored():
    outcomes = load_outcomes(DATA)  # every row carries a request_id
    assert len(outcomes) == 12 and outcomes[0].confidence == 0.95
