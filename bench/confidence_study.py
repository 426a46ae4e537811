"""`cascade bench confidence`: fit the confidence model on training categories, report it on others.

Input: bench folders of `cascade bench run --policies slm-only` (their records keep each answer and its token
logprobs), some named as training data and some as evaluation data, and optionally `llm-only` runs of the
embedded fallback on the evaluation cases. Every answer's features are replayed with the gateway's own code
(`bench.features`), the model is fitted exactly as `cascade calibrate --fit` fits it (on the training
categories, a fixed quarter of their cases held out), and then, on the evaluation categories only:

- AUROC of the fitted confidence, of the confidence the answers were served with, and of the ablations
  (logprobs only, form verifiers only, grounding only, all), per category and pooled;
- the routing figures of `bench.routing_quality` with a *simulated* fallback (BFCL's answers at a set accuracy
  and price, as `cascade simulate-llm` answers), and with the real embedded fallback where it was run;
- the grounding verifier's precision and recall on the SLM's answers;
- a risk-coverage plot and a CPS-vs-success plot with the random-router line and the oracle point.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.features import annotate_records
from bench.report import load_records
from bench.routing_quality import routing_quality
from bench.simulated_llm import answers_right
from cluster.operations.confidence_fit import (
    FitResult,
    LabelledAnswer,
    fit_confidence,
    read_labelled,
    score_answers,
    scores_of,
)
from policies.answer_features import FEATURE_GROUPS, FEATURES
from policies.calibration import LabelledOutcome
from policies.cost import TierPrice, attempt_cost
from policies.grounding import UNSUPPORTED_BELOW

__all__ = ["ABLATIONS", "SimulatedFallback", "run_study"]

ABLATIONS: dict[str, tuple[str, ...]] = {
    "logprobs only": FEATURE_GROUPS["logprobs"],
    "verifiers only": FEATURE_GROUPS["verifiers"],
    "grounding only": FEATURE_GROUPS["grounding"],
    "all but size": tuple(n for n in FEATURES if n not in FEATURE_GROUPS["size"]),
    "all": FEATURES,
}
RECORDS = "records.jsonl"
SIMULATED_PRICE = TierPrice(0.6, 0.8)  # per 1M tokens in and out: the README's simulated 7B-70B fallback


class SimulatedFallback:
    """What `cascade simulate-llm` would have answered: right with probability `accuracy`, decided per case by
    the same seeded draw, priced per 1M tokens on the SLM's own token counts. Simulated: labelled so."""

    def __init__(self, accuracy: float = 0.9, price: TierPrice = SIMULATED_PRICE, seed: int = 0) -> None:
        self.accuracy, self.price, self.seed = accuracy, price, seed

    def outcome(self, record: dict[str, Any]) -> tuple[bool, float]:
        right = answers_right(record["case_id"], self.accuracy, self.seed)
        return right, attempt_cost(self.price, record.get("tokens_in", 0), max(record.get("tokens_out", 0), 1))


def _folder_records(folders: Sequence[Path], policy: str) -> dict[str, dict[str, Any]]:
    return {r["case_id"]: r for folder in folders for r in load_records(folder)
            if r["policy"] == policy and not r.get("error")}


def _outcomes(answers: Sequence[LabelledAnswer], confidence: Sequence[float], slm: dict[str, dict[str, Any]],
              fallback: Any) -> list[LabelledOutcome]:
    """Per answer, the SLM side from its record and the fallback side from ``fallback(case_id)``."""
    outcomes = []
    for answer, score in zip(answers, confidence):
        other = fallback(answer.case_id)
        if other is None:
            continue
        right, cost = other
        outcomes.append(LabelledOutcome(min(max(score, 0.0), 1.0), answer.success,
                                        float(slm[answer.case_id].get("cost_usd") or 0.0), cost, right))
    return outcomes


def _grounding_quality(answers: Sequence[LabelledAnswer]) -> dict[str, Any]:
    """The veto's rule on the answers' features: flagged = a leaf supported below the bar, or a repeated call."""
    flagged = [a for a in answers
               if a.features.get("grounding_min", 1.0) < UNSUPPORTED_BELOW or a.features.get("duplicate_calls", 0) > 0]
    right = [a for a in answers if a.success]
    wrong_flagged = sum(not a.success for a in flagged)
    return {
        "answers": len(answers), "flagged": len(flagged),
        "precision": wrong_flagged / len(flagged) if flagged else None,
        "recall_of_wrong": wrong_flagged / (len(answers) - len(right)) if len(answers) > len(right) else None,
        "flagged_share_of_right": sum(a.success for a in flagged) / len(right) if right else None,
    }


def run_study(train: Sequence[str | Path], evaluate: Sequence[str | Path], out_dir: str | Path,
              fallback_runs: Sequence[str | Path] = (), simulated: SimulatedFallback | None = None,
              threshold: float | None = None) -> dict[str, Any]:
    """Replay, fit, evaluate; writes report.json, report.md and plots into ``out_dir`` and returns the report.

    ``threshold`` adds the operating point of a route at that threshold (the embedded default's, say)."""
    from bench.plots import write_routing_plots

    simulated = simulated or SimulatedFallback()
    train_folders, eval_folders = [Path(p) for p in train], [Path(p) for p in evaluate]
    for folder in [*train_folders, *eval_folders]:
        annotate_records(folder)
    train_answers = read_labelled([f / RECORDS for f in train_folders])
    eval_answers = read_labelled([f / RECORDS for f in eval_folders])
    overlap = {a.case_id for a in train_answers} & {a.case_id for a in eval_answers}
    if overlap:
        raise ValueError(f"{len(overlap)} cases are in both the training and the evaluation data")
    fits: dict[str, FitResult] = {name: fit_confidence(train_answers, features=names)
                                  for name, names in ABLATIONS.items()}
    model = fits["all"].policy
    slm_records = _folder_records(eval_folders, "slm-only")
    real = _folder_records([Path(p) for p in fallback_runs], "llm-only")
    by_category: dict[str, list[LabelledAnswer]] = {}
    for answer in eval_answers:
        by_category.setdefault(answer.category, []).append(answer)
    report: dict[str, Any] = {
        "training": {"folders": [str(f) for f in train_folders], "answers": len(train_answers),
                     "categories": sorted({a.category for a in train_answers}),
                     "held_out_auroc": fits["all"].held_out.auroc},
        "model": {"features": list(model.features), "weights": list(model.weights), "bias": model.bias},
        "simulated_fallback": {"accuracy": simulated.accuracy, "price_per_1m_usd": [simulated.price.input_per_1m_usd,
                                                                                    simulated.price.output_per_1m_usd]},
        "categories": {},
    }
    for category, answers in sorted(by_category.items()) + [("pooled", eval_answers)]:
        confidence = score_answers(model, answers)
        labels = [a.success for a in answers]
        entry: dict[str, Any] = {
            "n": len(answers), "right": sum(labels),
            "auroc": {"fitted": scores_of(confidence, labels).auroc,
                      "served (before)": scores_of([a.confidence or 0.0 for a in answers], labels).auroc,
                      **{f"ablation: {name}": scores_of(score_answers(fit.policy, answers), labels).auroc
                         for name, fit in fits.items()}},
            "calibration": scores_of(confidence, labels).__dict__,
            "grounding": _grounding_quality(answers),
            "simulated": routing_quality(_outcomes(answers, confidence, slm_records,
                                                   lambda case: simulated.outcome(slm_records[case])),
                                         threshold=threshold),
        }
        with_real = _outcomes(answers, confidence, slm_records, lambda case: (
            (bool(real[case]["success"]), float(real[case].get("cost_usd") or 0.0)) if case in real else None))
        if with_real:
            entry["embedded_fallback"] = routing_quality(with_real, threshold=threshold)
        report["categories"][category] = entry
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_routing_plots(report["categories"]["pooled"], eval_answers, model, fits, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    return report


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# Confidence: fitted on training categories, measured on others", "",
             (f"Training: {', '.join(report['training']['categories'])} ({report['training']['answers']} SLM answers);"
             f" held-out AUROC within training {report['training']['held_out_auroc']:.3f}."), "",
             ("| category | n | right | AUROC fitted | AUROC served before | logprobs only | verifiers only | "
             "grounding only | grounding precision | right answers flagged |"), "|---" * 10 + "|"]
    for category, entry in report["categories"].items():
        a, g = entry["auroc"], entry["grounding"]
        lines.append(f"| {category} | {entry['n']} | {entry['right']} | {_f(a['fitted'])} | {_f(a['served (before)'])}"
                     f" | {_f(a['ablation: logprobs only'])} | {_f(a['ablation: verifiers only'])} | "
                     f"{_f(a['ablation: grounding only'])} | {_f(g['precision'])} | "
                     f"{_f(g['flagged_share_of_right'])} |")
    for kind, title in (("simulated", "a simulated fallback (BFCL's answers at the set accuracy: simulated)"),
                        ("embedded_fallback", "the embedded fallback (Gemma-3-270M, measured)")):
        rows = [(c, e[kind]) for c, e in report["categories"].items() if kind in e]
        if not rows:
            continue
        lines += ["", f"Routing with {title}:", "",
                  ("| category | SLM | fallback | oracle | best cascade (escalating) | APGR (perfect ranking) | "
                  "escalated for 50% / 80% of gap | CPS at 0.95x fallback / oracle's | / fallback's |"),
                  "|---" * 9 + "|"]
        for category, q in rows:
            at = q["cascade_at_target"] or {}
            lines.append(f"| {category} | {q['slm_success_rate']:.1%} | {q['fallback_success_rate']:.1%} | "
                         f"{q['oracle_success_rate']:.1%} | {q['best_cascade_success_rate']:.1%} "
                         f"({q['best_cascade_escalated_share']:.0%}) | {_f(q['apgr'])} "
                         f"({_f(q['apgr_perfect_ranking'])}) | "
                         f"{_f(q['escalation_for_50pct_gap'])} / "
                         f"{_f(q['escalation_for_80pct_gap'])} | {_f(q['cps_ratio_to_oracle'])} "
                         f"(escalating {_f(at.get('escalated_share'))}) | {_f(q['cps_ratio_to_fallback'])} |")
        points = [(c, q["at_threshold"]) for c, q in rows if q.get("at_threshold")]
        if points:
            lines += ["", f"At threshold {points[0][1]['threshold']:.4f}:", "",
                      "| category | escalated | success | CPS (USD) | error of kept SLM answers |", "|---" * 5 + "|"]
            lines += [f"| {c} | {p['escalated_share']:.1%} | {p['success_rate']:.1%} | {_f(p['cps_usd'], '.3g')} | "
                      f"{_f(p['accepted_error_rate'])} |" for c, p in points]
    lines += ["", *[f"![{p}]({p})" for p in report["plots"]]]
    return "\n".join(lines) + "\n"


def _f(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)
