"""Answer features recomputed from bench records, with the code the gateway runs.

A record of `cascade bench run` keeps the answer (`message`) and its token logprobs. Replaying them through
`policies.answer_features` with the case's own conversation and tools gives the features the cascade would
have scored, so records taken before a feature existed (or before it changed) can still be fitted and
evaluated on, and an offline figure and a served one come from the same function.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.runner import RECORDS_FILE
from cluster.config.edit import write_atomically
from cluster.evaluation.bfcl import CATEGORIES, Case, load_cases
from policies.answer_features import answer_features
from policies.grounding import GroundingVerifier
from policies.verifiers import Candidate, ToolCallVerifier, safe_verify

__all__ = ["annotate_records", "record_features"]


def record_features(record: Mapping[str, Any], case: Case) -> dict[str, float] | None:
    """The features of a recorded guided answer to ``case``; None for a record without an answer."""
    message = record.get("message")
    if not isinstance(message, Mapping):
        return None
    candidate = Candidate.from_message(message)
    verdicts = [safe_verify(ToolCallVerifier(case.tools, require_call=case.expects_calls), candidate)]
    grounding = GroundingVerifier(case.messages, case.tools).report(candidate)
    usage = {"prompt_tokens": record.get("tokens_in"), "completion_tokens": record.get("tokens_out")}
    return answer_features(record.get("logprobs"), verdicts, grounding, usage=usage)


def annotate_records(out_dir: str | Path) -> int:
    """Write each answered record's replayed `features` into `records.jsonl` in `out_dir`; returns how many.

    Records of categories or cases this BFCL data does not have are left as they are.
    """
    path = Path(out_dir) / RECORDS_FILE
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    cases: dict[str, dict[str, Case]] = {}
    annotated = 0
    for record in records:
        category = record.get("category")
        if category not in cases:
            cases[category] = {c.id: c for c in load_cases(category)} if category in CATEGORIES else {}
        case = cases[category].get(record.get("case_id"))
        features = record_features(record, case) if case is not None else None
        if features is not None:
            record["features"] = features
            annotated += 1
    write_atomically(path, "".join(json.dumps(r) + "\n" for r in records), backup=False)  # replayable again
    return annotated
