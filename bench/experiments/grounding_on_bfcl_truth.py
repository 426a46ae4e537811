"""How often grounding flags BFCL's own right answers, beside a literal check (every value written verbatim).

A right answer should pass grounding, so the share of BFCL's right answers that it flags is its false-positive
rate on the benchmark. The literal check, which flags an answer unless every value appears verbatim in the
conversation, is the naive baseline it is measured against.

Each case's right answer is its first acceptable value per argument (arguments whose first acceptable value is
empty, i.e. optional ones, are left out). Prints one line per category:

    .venv/bin/python bench/experiments/grounding_on_bfcl_truth.py
"""
import json
from collections.abc import Iterator
from typing import Any

from cluster.evaluation.bfcl import Case, load_cases
from policies.grounding import GroundingVerifier, conversation_text
from policies.verifiers import Candidate, ToolCall

CATEGORIES = ["simple_python", "parallel", "live_multiple", "multiple", "live_simple", "parallel_multiple"]


def leaves(value: Any) -> Iterator[Any]:
    """Every scalar inside nested dicts and lists."""
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


def right_answer(case: Case) -> list[dict[str, Any]]:
    """The arguments of each ground-truth call, at its first acceptable value per argument."""
    answer = []
    for ground_truth_call in case.ground_truth:
        ((name, acceptable_values),) = ground_truth_call.items()
        arguments = {key: values[0] for key, values in acceptable_values.items() if values and values[0] != ""}
        answer.append({"name": name, "arguments": arguments})
    return answer


def literal_check_flags(answer: list[dict[str, Any]], text: str) -> bool:
    """True when some value (other than a boolean or None) is not written verbatim in the conversation."""
    return any(
        not isinstance(value, bool) and value is not None and str(value) not in text
        for call in answer
        for value in leaves(call["arguments"])
    )


def grounding_flags(case: Case, answer: list[dict[str, Any]]) -> bool:
    calls = tuple(ToolCall(call["name"], json.dumps(call["arguments"])) for call in answer)
    return not GroundingVerifier(case.messages, case.tools).verify(Candidate(tool_calls=calls)).passed


def main() -> None:
    for category in CATEGORIES:
        cases = load_cases(category, None)
        literal_flagged = grounding_flagged = 0
        for case in cases:
            answer = right_answer(case)
            literal_flagged += literal_check_flags(answer, conversation_text(case.messages))
            grounding_flagged += grounding_flags(case, answer)
        print(f"{category:18s} {len(cases):5d}  literal check flags {literal_flagged / len(cases):.1%}  "
              f"grounding flags {grounding_flagged / len(cases):.1%}")


if __name__ == "__main__":
    main()
