"""`cascade calibrate`: choose the acceptance threshold from a JSONL file of labelled outcomes.

Each non-blank line is one request replayed through both tiers, a JSON object with the fields of
``policies.calibration.LabelledOutcome``::

    {"confidence": 0.82, "slm_correct": true, "slm_cost_usd": 4e-4, "fallback_cost_usd": 6e-3, "fallback_correct": true}

Types are strict (``true``/``false``, not 1/0); other keys (a request id, say) are ignored. The
decision itself is ``policies.calibration.calibrate``; this module only reads, checks and prints.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from policies.calibration import CalibrationError, CalibrationPoint, CalibrationResult, LabelledOutcome, calibrate

__all__ = ["CalibrateError", "load_outcomes", "run_calibrate"]

_MAX_REPORTED_ROWS = 10
_OUTCOME = TypeAdapter(LabelledOutcome)


class CalibrateError(ValueError):
    """Unreadable or empty data, a bad row (the message names file, line and field), a success-rate
    floor out of [0, 1] or one that no threshold reaches."""


def load_outcomes(path: str | Path) -> list[LabelledOutcome]:
    """Every labelled outcome in the JSONL file at ``path``; ``CalibrateError`` lists the bad rows."""
    path = Path(path)
    outcomes: list[LabelledOutcome] = []
    problems: list[str] = []
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    outcomes.append(_OUTCOME.validate_json(line, strict=True))
                except ValidationError as exc:
                    problems += [f"{path}:{number}: {_describe(e)}" for e in exc.errors()]
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrateError(f"cannot read labelled outcomes from {path}: {exc}") from exc
    if problems:
        shown = problems[:_MAX_REPORTED_ROWS]
        more = len(problems) - len(shown)
        raise CalibrateError("bad labelled outcomes:\n" + "\n".join(shown) + (f"\n... and {more} more" if more else ""))
    if not outcomes:
        raise CalibrateError(f"{path}: no labelled outcomes (the file is empty)")
    return outcomes


def run_calibrate(path: str | Path, min_success_rate: float, as_json: bool = False) -> str:
    """Calibrate on the file at ``path`` and return the report to print (a table, or JSON)."""
    outcomes = load_outcomes(path)
    try:
        result = calibrate(outcomes, min_success_rate)
    except (CalibrationError, ValueError) as exc:
        raise CalibrateError(f"{path}: {exc}") from exc
    if as_json:
        return _as_json(result, str(path), len(outcomes), min_success_rate)
    return _as_table(result, str(path), len(outcomes), min_success_rate)


def _describe(error: Any) -> str:
    loc = "/".join(str(p) for p in error["loc"])
    kind, message = error["type"], error["msg"]
    if kind == "json_invalid":
        return f"not valid JSON: {error.get('ctx', {}).get('error', message)}"
    if kind == "missing":
        return f"missing field '{loc}'"
    if kind == "value_error":  # LabelledOutcome.__post_init__: the message names the field
        return message.removeprefix("Value error, ")
    if not loc:
        return f"expected a JSON object with the fields of LabelledOutcome, got {type(error.get('input')).__name__}"
    return f"field '{loc}': {message} (got {error.get('input')!r})"


def _as_table(result: CalibrationResult, source: str, n: int, floor: float) -> str:
    best = result.best
    lines = [
        f"{n} labelled outcomes from {source}; success-rate floor {floor:.4f}",
        f"chosen threshold {best.threshold:.4f}: success rate {best.success_rate:.4f}, "
        f"CPS ${_cps(best.cps_usd)}, SLM answers {best.accepted_fraction:.1%}",
        "",
        f"  {'threshold':>9}  {'success_rate':>12}  {'cps_usd':>12}  {'accepted':>8}",
    ]
    for point in result.curve:
        mark = "*" if point == best else " "
        note = "  chosen" if point == best else "  below floor" if point.success_rate < floor else ""
        lines.append(
            f"{mark} {point.threshold:>9.4f}  {point.success_rate:>12.4f}  {_cps(point.cps_usd):>12}"
            f"  {point.accepted_fraction:>8.4f}{note}"
        )
    return "\n".join(lines)


def _as_json(result: CalibrationResult, source: str, n: int, floor: float) -> str:
    report = {
        "data": source,
        "n_outcomes": n,
        "min_success_rate": floor,
        "best": _point(result.best),
        "curve": [_point(p) for p in result.curve],
    }
    return json.dumps(report, indent=2, allow_nan=False)


def _point(point: CalibrationPoint) -> dict[str, Any]:
    """JSON has no infinity: a CPS with no success is ``null``."""
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(point).items()}


def _cps(cps_usd: float) -> str:
    return "inf" if math.isinf(cps_usd) else f"{cps_usd:.6g}"
