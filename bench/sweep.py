"""Replay recorded per-tier outcomes through the threshold calibration: the CPS vs success curve.

An slm-only run and an llm-only run on the same cases give, per case, what the two-tier cascade would have
done at any threshold: accept the SLM answer when its confidence (the gateway's `cascade.confidence` for the
SLM alone) is at least the threshold, else pay for the LLM too and take its answer. `policies.calibration`
does the arithmetic and picks the cheapest threshold per success that meets the floor. The pairs are also
written as `outcomes.jsonl`, the input of `cascade calibrate`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from policies.calibration import CalibrationError, LabelledOutcome, calibrate

__all__ = ["labelled_outcomes", "sweep_thresholds"]


def _guided_pair(by_policy: dict[str, list[dict[str, Any]]]) -> tuple[str, str] | None:
    for suffix in ("", "+unguided"):
        if f"slm-only{suffix}" in by_policy and f"llm-only{suffix}" in by_policy:
            return f"slm-only{suffix}", f"llm-only{suffix}"
    return None


def labelled_outcomes(slm: list[dict[str, Any]], llm: list[dict[str, Any]]) -> list[LabelledOutcome]:
    """One outcome per case both runs answered; an SLM request that failed outright has confidence 0."""
    llm_by_case = {r["case_id"]: r for r in llm}
    return [
        LabelledOutcome(
            confidence=min(max(float(r.get("confidence") or 0.0), 0.0), 1.0),
            slm_correct=bool(r["success"]),
            slm_cost_usd=float(r.get("cost_usd") or 0.0),
            fallback_cost_usd=float(llm_by_case[r["case_id"]].get("cost_usd") or 0.0),
            fallback_correct=bool(llm_by_case[r["case_id"]]["success"]),
        )
        for r in slm
        if r["case_id"] in llm_by_case
    ]


def _point(point: Any) -> dict[str, Any]:
    figures = asdict(point)
    figures["cps_usd"] = None if figures["cps_usd"] == float("inf") else figures["cps_usd"]
    return figures


def sweep_thresholds(by_policy: dict[str, list[dict[str, Any]]], min_success_rate: float, out_dir: Path) -> dict:
    """The curve and the calibrated point, or `{"error": ...}` saying what is missing."""
    pair = _guided_pair(by_policy)
    if pair is None:
        return {"error": "needs an slm-only and an llm-only run on the same cases"}
    outcomes = labelled_outcomes(by_policy[pair[0]], by_policy[pair[1]])
    with (Path(out_dir) / "outcomes.jsonl").open("w", encoding="utf-8") as sink:
        sink.writelines(json.dumps(asdict(o)) + "\n" for o in outcomes)
    sweep: dict[str, Any] = {"slm": pair[0], "llm": pair[1], "n": len(outcomes), "min_success_rate": min_success_rate}
    try:
        result = calibrate(outcomes, min_success_rate)
    except CalibrationError as error:
        try:
            curve = calibrate(outcomes, 0.0).curve if outcomes else ()
        except CalibrationError:
            curve = ()
        return {**sweep, "error": str(error), "curve": [_point(p) for p in curve]}
    return {**sweep, "best": _point(result.best), "curve": [_point(p) for p in result.curve]}
