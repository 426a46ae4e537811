"""`cascade calibrate --fit / --target-error`: fit on labelled answers, certify on held-out ones, write the route.

The answers are synthetic and seeded: a right answer tends to be grounded and sure of its values, a wrong one
not, with overlap, so the fit has something real to find and nothing depends on chance.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from cluster.cli import main
from cluster.config import load_config
from cluster.operations.calibrate_route import CalibrateError, run_fit
from cluster.operations.confidence_fit import (
    FitError,
    LabelledAnswer,
    fit_confidence,
    held_out,
    read_labelled,
    score_answers,
)
from policies.confidence import FittedPolicy, build_confidence_policy


def answers(n: int, seed: int = 7, categories: tuple[str, ...] = ("a", "b")) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        right = rng.random() < 0.4
        rows.append({
            "policy": "slm-only", "case_id": f"case-{i}", "category": categories[i % len(categories)],
            "success": right, "confidence": rng.random(),
            "features": {"grounding": min(1.0, max(0.0, rng.gauss(0.9 if right else 0.6, 0.2))),
                         "value_min_logprob": min(0.0, rng.gauss(-0.3 if right else -1.5, 0.6)),
                         "verifier": 1.0},
        })
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(yaml.safe_dump(load_config().model_dump(mode="json", exclude_none=True), sort_keys=False))
    return path


def test_the_fit_ranks_held_out_answers_and_never_fits_on_them():
    labelled = read_labelled([write_rows(Path("/tmp") / "slm-cascade-fit-test.jsonl", answers(400))])
    result = fit_confidence(labelled)
    held = {a.case_id for a in result.held_out_answers}
    assert held == {a.case_id for a in labelled if held_out(a, frozenset())}
    assert 0.15 < len(held) / len(labelled) < 0.35  # a quarter, by a fixed hash of the case id
    assert result.train.n + result.held_out.n == len(labelled)
    assert result.held_out.auroc > 0.85  # the served confidence here is noise: about 0.5
    assert result.served_before is not None and abs(result.served_before.auroc - 0.5) < 0.15
    assert set(result.policy.features) == {"grounding", "value_min_logprob"}  # verifier never varied
    assert all(w > 0 for w in result.policy.weights)
    assert fit_confidence(labelled).policy == result.policy  # same data, same split, same model


def test_held_out_categories_are_the_evaluation_split():
    labelled = [LabelledAnswer(r["case_id"], r["category"], r["features"], r["success"])
                for r in answers(200)]
    result = fit_confidence(labelled, holdout_categories=["b"])
    assert {a.category for a in result.held_out_answers} == {"b"}
    with pytest.raises(FitError, match=r"no answers of held-out categories \['c'\]"):
        fit_confidence(labelled, holdout_categories=["c"])


def test_fit_and_certify_write_the_route_and_the_gateway_scores_with_it(tmp_path: Path, config_path: Path):
    data = write_rows(tmp_path / "records.jsonl", answers(600))
    printed = run_fit([data], fit=True, target_error=0.4, delta=0.1, config_path=config_path)
    assert "held out" in printed and "certified threshold" in printed
    config = load_config(config_path)
    route = config.route("default")
    assert route.confidence_policy == "fitted" and route.confidence_model is not None
    certificate = route.threshold_certificate
    assert certificate is not None and certificate.upper_bound <= 0.4 and certificate.target_error == 0.4
    assert 0 < route.threshold < 1
    assert config_path.with_name("cascade.yaml.bak").exists()
    # the held-out answers at or above the threshold are those the certificate counted
    labelled = read_labelled([data])
    policy = build_confidence_policy(route.confidence_policy, route.confidence_model.parameters())
    assert isinstance(policy, FittedPolicy)
    held = [a for a in labelled if held_out(a, frozenset())]
    accepted = [a for a, s in zip(held, score_answers(policy, held)) if s >= route.threshold]
    assert (len(accepted), sum(not a.success for a in accepted)) == (certificate.n_accepted, certificate.errors)


def bad_input_cases(tmp_path: Path) -> dict[str, tuple[list[Path], dict, str]]:
    rows = answers(300)
    unlabelled = [{k: v for k, v in r.items() if k != "success"} for r in rows]
    return {
        "too few": ([write_rows(tmp_path / "few.jsonl", answers(12))], {"fit": True}, "needs at least 5 of each"),
        "unlabelled": ([write_rows(tmp_path / "u.jsonl", unlabelled)], {"fit": True}, "--labels FILE"),
        "no features": ([write_rows(tmp_path / "nf.jsonl", [{"case_id": "x", "success": True}])], {"fit": True},
                        "cascade bench features"),
        "no records": ([write_rows(tmp_path / "empty.jsonl", [])], {"fit": True}, "the route has no records yet"),
        "not json": ([tmp_path / "bad.jsonl"], {"fit": True}, "bad.jsonl:1: not valid JSON"),
        "too little to certify": ([write_rows(tmp_path / "small.jsonl", answers(80))],
                                  {"fit": True, "target_error": 0.01, "delta": 0.05}, "label at least 504 more"),
    }


@pytest.mark.parametrize("case", ["too few", "unlabelled", "no features", "no records", "not json",
                                  "too little to certify"])
def test_bad_input_is_refused_with_the_fix_and_the_config_is_left_untouched(case: str, tmp_path: Path,
                                                                           config_path: Path):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    data, options, message = bad_input_cases(tmp_path)[case]
    before = config_path.read_bytes()
    with pytest.raises(CalibrateError, match=message):
        run_fit(data, config_path=config_path, **options)
    assert config_path.read_bytes() == before
    assert not config_path.with_name("cascade.yaml.bak").exists()


def test_labels_join_on_case_id_and_unknown_cases_are_refused(tmp_path: Path, config_path: Path):
    rows = answers(300)
    records = write_rows(tmp_path / "r.jsonl", [{k: v for k, v in r.items() if k != "success"} for r in rows])
    labels = write_rows(tmp_path / "labels.jsonl", [{"case_id": r["case_id"], "success": r["success"]} for r in rows])
    assert "fitted on" in run_fit([records], fit=True, labels=labels)
    unknown = write_rows(tmp_path / "unknown.jsonl", [{"case_id": "nobody", "success": True}])
    before = config_path.read_bytes()
    with pytest.raises(CalibrateError, match="1 labels name cases with no recorded answer, e.g. 'nobody'"):
        run_fit([records], fit=True, labels=unknown, config_path=config_path)
    assert config_path.read_bytes() == before


def test_certifying_without_a_fitted_route_says_to_fit_first(tmp_path: Path, config_path: Path, capsys):
    data = write_rows(tmp_path / "records.jsonl", answers(100))
    plain = yaml.safe_load(config_path.read_text())
    plain["routes"] = [{"name": "default", "tiers": ["slm", "fallback"]}]
    config_path.write_text(yaml.safe_dump(plain))
    assert main(["calibrate", "--data", str(data), "--target-error", "0.2", "--config", str(config_path)]) == 2
    assert "has no fitted confidence model: run with --fit" in capsys.readouterr().err
    assert main(["calibrate", "--data", str(data), "--min-success-rate", "0.5", "--fit"]) == 2
    assert "goes alone" in capsys.readouterr().err
