"""`cascade calibrate`: choose a route's threshold, fit its confidence model, certify its threshold.

`--min-success-rate` picks the threshold with the lowest CPS above a success floor from labelled outcomes of
both tiers (below). `--fit` fits the confidence model on labelled answers (`cluster.operations.confidence_fit`), and
`--target-error A --delta D` certifies the lowest threshold whose accepted answers err at most A with
confidence 1-D; both write into the route of `--config` (`run_fit`).

Each non-blank line is one request replayed through both tiers, a JSON object with the fields of
``policies.calibration.LabelledOutcome``::

    {"confidence": 0.82, "slm_correct": true, "slm_cost_usd": 4e-4, "fallback_cost_usd": 6e-3, "fallback_correct": true}

Types are strict (``true``/``false``, not 1/0); other keys (a request id, say) are ignored. The
decision itself is ``policies.calibration.calibrate``; this module only reads, checks and prints.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cluster.config import DEFAULT_ROUTE, load_config
from cluster.config.edit import write_route_fields
from cluster.operations.confidence_fit import (
    FitError,
    FitResult,
    LabelledAnswer,
    fit_confidence,
    held_out,
    read_labelled,
    score_answers,
)
from policies.calibration import (
    CalibrationError,
    CalibrationPoint,
    CalibrationResult,
    LabelledOutcome,
    calibrate,
    certify_threshold,
)
from policies.confidence import FittedPolicy, build_confidence_policy

__all__ = ["CalibrateError", "load_outcomes", "run_calibrate", "run_fit"]

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
        (f"chosen threshold {best.threshold:.4f}: success rate {best.success_rate:.4f}, "
        f"CPS ${_cps(best.cps_usd)}, SLM answers {best.accepted_fraction:.1%}"),
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


def run_fit(data: Sequence[str | Path], *, fit: bool, labels: str | Path | None = None,
            holdout_categories: Sequence[str] = (), target_error: float | None = None, delta: float = 0.05,
            config_path: str | Path | None = None, route: str = DEFAULT_ROUTE) -> str:
    """Fit a confidence model and/or certify a threshold from labelled answers; write them into the route of
    the config file when one is given (validated first; on any error the file is left as it was).

    The threshold is certified on the held-out split alone: with ``fit`` the fit's own; without it the route's
    fitted model is scored on the answers given, split the same way (pass answers it was not fitted on).
    """
    if not fit and target_error is None:
        raise CalibrateError("nothing to do: pass --fit, --target-error, or --min-success-rate")
    try:
        answers = read_labelled(data, labels)
        if not answers:
            raise FitError("no labelled answers in " + ", ".join(map(str, data)) + ": the route has no records yet;"
                           " run traffic or `cascade bench run --policies slm-only` and label it first")
        lines: list[str] = [f"{len(answers)} labelled answers from {', '.join(map(str, data))}"]
        fields: dict[str, Any] = {}
        if fit:
            result = fit_confidence(answers, holdout_categories)
            policy = result.policy
            held = {a.case_id for a in result.held_out_answers}
            lines += _fit_lines(result)
            fields = {"confidence_policy": FittedPolicy.name, "confidence_model": {
                "features": list(policy.features), "weights": list(policy.weights), "means": list(policy.means),
                "scales": list(policy.scales), "bias": policy.bias,
                "fitted_on": {"data": [str(d) for d in data], "train": result.train.n,
                              "held_out": result.held_out.n, "held_out_auroc": round(result.held_out.auroc, 4),
                              "held_out_brier": round(result.held_out.brier, 4)}}}
        else:
            policy = _route_policy(config_path, route)
            held = {a.case_id for a in answers if held_out(a, frozenset(holdout_categories))}
        if target_error is not None:
            tested_on = [a for a in answers if a.case_id in held]
            certificate = certify_threshold(_scored(policy, tested_on), target_error, delta)
            lines.append(f"certified threshold {certificate.threshold:.4f}: {certificate.n_accepted} of "
                         f"{certificate.n_total} held-out answers reach it, {certificate.errors} wrong; error <= "
                         f"{certificate.upper_bound:.4f} with confidence {1 - delta:g} (target {target_error:g})")
            fields |= {"threshold": certificate.threshold, "threshold_certificate": {
                **{k: v for k, v in asdict(certificate).items() if k != "threshold"},
                "data": ", ".join(map(str, data))}}
    except (FitError, CalibrationError, ValueError) as error:
        raise CalibrateError(str(error)) from None
    if config_path is not None:
        write_route_fields(Path(config_path), route, fields)
        lines.append(f"written to routes.{route} in {config_path} ({', '.join(fields)}); previous file kept as "
                     f"{config_path}.bak; apply with `cascade up --config {config_path}`")
    elif fit and target_error is None:
        lines.append("not written: pass --config FILE (and --target-error to set a threshold on the new scale)")
    return "\n".join(lines)


def _scored(policy: Any, answers: Sequence[LabelledAnswer]) -> list[tuple[float, bool]]:
    return list(zip(score_answers(policy, answers), (a.success for a in answers)))


def _fit_lines(result: FitResult) -> list[str]:
    lines = [(f"fitted on {result.train.n} answers ({result.train.right} right); held out {result.held_out.n} "
             f"({result.held_out.right} right), never fitted on:")]
    rows = [("fitted, held out", result.held_out), ("fitted, training", result.train)]
    if result.served_before is not None:
        rows.append(("served before, held out", result.served_before))
    lines += [f"  {name:<24} AUROC {s.auroc:.4f}  Brier {s.brier:.4f}  calibration error {s.calibration_error:.4f}"
              for name, s in rows]
    weights = sorted(zip(result.policy.features, result.policy.weights), key=lambda pair: -abs(pair[1]))
    lines.append("  weights (standardised): " + ", ".join(f"{n} {w:+.2f}" for n, w in weights))
    return lines


def _route_policy(config_path: str | Path | None, route: str) -> Any:
    if config_path is None:
        raise CalibrateError("--target-error without --fit certifies a route's fitted model: pass --config FILE")
    config = load_config(config_path)
    settings = next((r for r in config.routes if r.name == route), None)
    if settings is None or settings.confidence_model is None:
        raise CalibrateError(f"route {route!r} in {config_path} has no fitted confidence model: run with --fit")
    return build_confidence_policy(settings.confidence_policy, settings.confidence_model.parameters())
