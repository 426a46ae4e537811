"""Choose the embedded default route's threshold on training data only, and print how.

The confidence model is fitted on the training categories (`cascade calibrate --fit`). Its threshold for the
embedded fallback is chosen here, also on training data: every training answer is scored by a model fitted
without it (5 folds by a hash of the case id, the same fit), joined with the fallback's answers to the same
cases (an `llm-only` bench run), and `policies.calibration.calibrate` picks the lowest-CPS threshold whose
success is at least the better single tier's. The evaluation categories are never read.

    .venv/bin/python bench/experiments/default_threshold.py --train runs/simple_python runs/parallel \
        runs/live_multiple --fallback-run runs/fallback/simple_python
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import load_records
from cluster.operations.confidence_fit import LabelledAnswer, case_bucket, fit_confidence, read_labelled, score_answers
from policies.calibration import LabelledOutcome, calibrate

FOLDS = 5


def out_of_fold_scores(answers: list[LabelledAnswer]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for fold in range(FOLDS):
        def in_fold(answer: LabelledAnswer, fold: int = fold) -> bool:
            return case_bucket(answer.case_id, FOLDS) == fold

        marked = [LabelledAnswer(a.case_id, "held-out-fold" if in_fold(a) else a.category, a.features, a.success)
                  for a in answers]
        policy = fit_confidence(marked, holdout_categories=["held-out-fold"]).policy
        tested = [a for a in answers if in_fold(a)]
        scores.update(zip((a.case_id for a in tested), score_answers(policy, tested)))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", required=True, metavar="DIR")
    parser.add_argument("--fallback-run", nargs="+", required=True, metavar="DIR")
    args = parser.parse_args()
    answers = read_labelled([Path(d) / "records.jsonl" for d in args.train])
    scores = out_of_fold_scores(answers)
    slm = {r["case_id"]: r for d in args.train for r in load_records(Path(d)) if r["policy"] == "slm-only"}
    fallback = {r["case_id"]: r for d in args.fallback_run for r in load_records(Path(d))
                if r["policy"] == "llm-only" and not r.get("error")}
    outcomes = [LabelledOutcome(scores[a.case_id], a.success, float(slm[a.case_id].get("cost_usd") or 0.0),
                                float(fallback[a.case_id].get("cost_usd") or 0.0), bool(fallback[a.case_id]["success"]))
                for a in answers if a.case_id in fallback]
    slm_rate = sum(o.slm_correct for o in outcomes) / len(outcomes)
    fallback_rate = sum(o.fallback_correct for o in outcomes) / len(outcomes)
    floor = max(slm_rate, fallback_rate) + 1 / len(outcomes)  # strictly better than either tier alone
    best = calibrate(outcomes, floor).best
    print(f"{len(outcomes)} training cases answered by both tiers: SLM {slm_rate:.1%}, fallback {fallback_rate:.1%}")
    print(f"lowest-CPS threshold with success >= {floor:.1%}: {best.threshold:.4f} (success {best.success_rate:.1%}, "
          f"SLM keeps {best.accepted_fraction:.1%}, CPS ${best.cps_usd:.3g})")


if __name__ == "__main__":
    main()
