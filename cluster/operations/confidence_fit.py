"""Fit a route's confidence model on labelled answers, and certify a threshold on answers it never saw.

Labelled answers are JSON lines with an answer's named `features` (what the gateway reports in
`cascade.features`, and `cascade bench run` keeps in its records), whether it was right (`success`), and the
`case_id` it answered (a request id will do); `category` optionally names the kind of task. Labels that came
later (feedback, a grader) can be joined on `case_id` from a second file.

The split is by case, never by row: held-out cases are either named categories or a fixed hash of the case id,
so refitting on the same data holds out the same cases, and the figures printed come only from those. The
model is scikit-learn's logistic regression on standardised features; the served side is the pure
`policies.confidence.FittedPolicy`, which reads the same means, scales and weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policies.answer_features import FEATURES
from policies.confidence import ConfidenceSignals, FittedPolicy, TokenUncertainty

__all__ = ["FitError", "FitResult", "LabelledAnswer", "Scores", "case_bucket", "fit_confidence", "held_out",
           "read_labelled",
           "score_answers", "scores_of"]

MIN_TRAIN_PER_CLASS = 5
MIN_HELD_OUT = 10
HELD_OUT_BUCKETS = 4  # one case in four is held out when no category is named
_CALIBRATION_BINS = 10


class FitError(ValueError):
    """Unreadable, unlabelled or too few answers; the message says what to add or change."""


@dataclass(frozen=True)
class LabelledAnswer:
    case_id: str
    category: str
    features: dict[str, float]
    success: bool
    confidence: float | None = None  # what the route scored it when it was served, to compare with


@dataclass(frozen=True)
class Scores:
    """How well a confidence ranks and predicts success on a set of answers."""

    n: int
    right: int
    auroc: float
    brier: float
    calibration_error: float  # expected calibration error over equal-width bins


@dataclass(frozen=True)
class FitResult:
    policy: FittedPolicy
    train: Scores
    held_out: Scores
    served_before: Scores | None  # the confidence the answers carried when served, on the same held-out cases
    held_out_answers: tuple[LabelledAnswer, ...]


def read_labelled(paths: Iterable[str | Path], labels: str | Path | None = None,
                  policy: str | None = "slm-only") -> list[LabelledAnswer]:
    """Labelled answers from JSONL files (bench records, or any rows with `case_id`, `features`, `success`).

    Rows that carry a `policy` other than ``policy`` are skipped (a bench folder holds every policy's records);
    rows without an answer (an HTTP error) are skipped. ``labels`` joins `success` by `case_id`.
    """
    rows: dict[str, dict[str, Any]] = {}
    for path in paths:
        for number, row in _json_lines(Path(path)):
            if policy is not None and row.get("policy", policy) != policy or row.get("error"):
                continue
            if not isinstance(row.get("case_id"), str) or not isinstance(row.get("features"), dict):
                raise FitError(f"{path}:{number}: a labelled answer needs `case_id` (a string) and `features` (an "
                               "object, as `cascade.features` in a response); replay old bench records first with "
                               "`cascade bench features`")
            rows[row["case_id"]] = row
    if labels is not None:
        _join_labels(rows, Path(labels))
    unlabelled = [case for case, row in rows.items() if not isinstance(row.get("success"), bool)]
    if unlabelled:
        raise FitError(f"{len(unlabelled)} answers have no `success` label (true/false), e.g. {unlabelled[0]!r}: "
                       "label them, or pass --labels FILE with {\"case_id\": ..., \"success\": ...} lines")
    return [LabelledAnswer(case, str(row.get("category") or ""), {k: float(v) for k, v in row["features"].items()},
                           row["success"], row.get("confidence")) for case, row in rows.items()]


def _join_labels(rows: dict[str, dict[str, Any]], path: Path) -> None:
    unknown = []
    for number, label in _json_lines(path):
        if not isinstance(label.get("case_id"), str) or not isinstance(label.get("success"), bool):
            raise FitError(f"{path}:{number}: a label is {{\"case_id\": \"...\", \"success\": true|false}}")
        if label["case_id"] not in rows:
            unknown.append(label["case_id"])
        else:
            rows[label["case_id"]]["success"] = label["success"]
    if unknown:
        raise FitError(f"{path}: {len(unknown)} labels name cases with no recorded answer, e.g. {unknown[0]!r}: "
                       "pass the records they belong to with --data")


def _json_lines(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise FitError(f"cannot read {path}: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise FitError(f"{path}:{number}: not valid JSON: {error}") from None
        if not isinstance(row, dict):
            raise FitError(f"{path}:{number}: expected a JSON object")
        yield number, row


def case_bucket(case_id: str, buckets: int) -> int:
    """A case's bucket out of ``buckets``, from a hash of its id: the same case lands in the same split on
    every run and every machine."""
    return int(hashlib.sha256(case_id.encode()).hexdigest(), 16) % buckets


def held_out(answer: LabelledAnswer, categories: frozenset[str]) -> bool:
    """Whether an answer is in the evaluation split: its category is named, or (none named) its case id
    falls in the held-out hash bucket."""
    if categories:
        return answer.category in categories
    return case_bucket(answer.case_id, HELD_OUT_BUCKETS) == 0


def fit_confidence(answers: Sequence[LabelledAnswer], holdout_categories: Iterable[str] = (),
                   regularisation: float = 1.0, features: Sequence[str] = FEATURES) -> FitResult:
    """Fit on the training split, score on the held-out split; ``FitError`` when either is too small.

    ``features`` restricts the model to some of the named features (the benchmark's ablation)."""
    from sklearn.linear_model import LogisticRegression

    categories = frozenset(holdout_categories)
    known = {a.category for a in answers}
    if categories - known:
        raise FitError(f"no answers of held-out categories {sorted(categories - known)}; the data has "
                       f"{sorted(known)}")
    train = [a for a in answers if not held_out(a, categories)]
    test = [a for a in answers if held_out(a, categories)]
    _require_both_classes(train, MIN_TRAIN_PER_CLASS, "training")
    if len(test) < MIN_HELD_OUT or len({a.success for a in test}) < 2:
        raise FitError(f"the held-out split has {len(test)} answers ({sum(a.success for a in test)} right): it needs "
                       f"at least {MIN_HELD_OUT} with right and wrong ones among them; add answers or name other "
                       "--holdout-categories")
    names = [n for n in features if any(n in a.features for a in train)]
    if not names:
        raise FitError(f"the training answers carry none of the features {list(features)}")
    matrix = np.array([[a.features.get(n, np.nan) for n in names] for a in train], dtype=float)
    means = np.nanmean(matrix, axis=0)
    scales = np.nanstd(matrix, axis=0)
    keep = scales > 1e-9  # a feature that never varied in training carries nothing
    names = [n for n, k in zip(names, keep) if k]
    means, scales = means[keep], scales[keep]
    standard = np.nan_to_num((matrix[:, keep] - means) / scales, nan=0.0)  # missing: the training mean
    model = LogisticRegression(C=regularisation, max_iter=1000)
    model.fit(standard, [a.success for a in train])
    policy = FittedPolicy(tuple(names), tuple(float(w) for w in model.coef_[0]), tuple(float(m) for m in means),
                          tuple(float(s) for s in scales), float(model.intercept_[0]))
    served = [a for a in test if a.confidence is not None]
    return FitResult(
        policy=policy,
        train=scores_of(score_answers(policy, train), [a.success for a in train]),
        held_out=scores_of(score_answers(policy, test), [a.success for a in test]),
        served_before=(scores_of([float(a.confidence) for a in served], [a.success for a in served])
                       if len(served) == len(test) else None),
        held_out_answers=tuple(test),
    )


def _require_both_classes(answers: Sequence[LabelledAnswer], minimum: int, split: str) -> None:
    right = sum(a.success for a in answers)
    if right < minimum or len(answers) - right < minimum:
        raise FitError(f"the {split} split has {right} right and {len(answers) - right} wrong answers; fitting "
                       f"needs at least {minimum} of each: add labelled answers")


def score_answers(policy: Any, answers: Sequence[LabelledAnswer]) -> list[float]:
    """What a confidence policy scores each answer (the form verifiers' verdicts are in the features)."""
    empty = TokenUncertainty()
    return [policy.score(ConfidenceSignals(empty, (), a.features)) for a in answers]


def scores_of(confidence: Sequence[float], right: Sequence[bool]) -> Scores:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    p, y = np.asarray(confidence, dtype=float), np.asarray(right, dtype=bool)
    auroc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else math.nan
    bins = np.minimum((p * _CALIBRATION_BINS).astype(int), _CALIBRATION_BINS - 1)
    gap = sum(abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).sum() for b in np.unique(bins))
    return Scores(len(y), int(y.sum()), auroc, float(brier_score_loss(y, p)), float(gap / len(y)))
