"""BFCL's AST checker rules (Python language) on the tool calls an endpoint returned.

`bfcl_eval.eval_checker.ast_eval.ast_checker` cannot be imported here: it pulls in every model handler and
their SDKs (tree_sitter, anthropic, ...), which bfcl-eval is installed without. So the rules are written out
again, rule for rule, and `tests/bench/test_scorer.py` checks them against the original's verdicts. The rules:

- the function name must be the expected one; required parameters present; no parameter outside both the
  doc and the possible answer;
- types as BFCL maps them ("float" accepts an int; bool is not an int; "any" is a string); a value of the
  possible answer's own type is accepted too (BFCL's "variable" case);
- strings compare after lowercasing and removing spaces and `,./-_*^` (and ' becomes "); lists and dicts
  compare element-wise the same way; otherwise the value must be one of the listed ones;
- a parameter omitted only if its possible answers contain "" (optional);
- parallel calls match in any order (greedily, as BFCL does); irrelevance succeeds when there is no call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cluster.evaluation.bfcl import Case

__all__ = ["Call", "Score", "score_case", "standardize"]

Call = dict[str, dict[str, Any]]  # BFCL's shape for one call: {function name: {argument: value}}

_TYPES: dict[str, type] = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list,
                           "tuple": list, "dict": dict, "any": str}
_NESTED = ("array", "tuple")
_PUNCTUATION = re.compile(r"[ \,\.\/\-\_\*\^]")


@dataclass(frozen=True)
class Score:
    valid: bool
    error: str = ""


_OK = Score(True)


def standardize(text: str) -> str:
    """BFCL's string normalisation: April 1, 2024 == april 1 2024."""
    return _PUNCTUATION.sub("", text).lower().replace("'", '"')


def _norm(value: Any) -> Any:
    return standardize(value) if isinstance(value, str) else value


def _answer_type(possible: Sequence[Any]) -> type | None:
    return next((type(answer) for answer in possible if answer != ""), None)


def _type_ok(value: Any, possible: Sequence[Any], expected: type, nested: type | None) -> tuple[bool, bool]:
    """(type is acceptable, value stands for a variable): BFCL's `type_checker`, one nesting level."""
    answer_type = _answer_type(possible)
    is_variable = answer_type is not None and answer_type != expected
    if type(value) == expected:  # noqa: E721 - exact type, as BFCL: True is not an int
        if nested is None:
            return True, is_variable
        for answer in possible:
            if type(answer) != list or all(_type_ok(item, answer, nested, None)[0] for item in value):  # noqa: E721
                return True, is_variable
    if answer_type is not None and type(value) == answer_type:  # noqa: E721
        return True, True
    return False, is_variable


def _dict_ok(value: dict[str, Any], possible: Sequence[Any]) -> bool:
    for answer in possible:
        if answer == "":
            continue
        if all(key in answer and _norm(item) in [_norm(a) for a in answer[key]] for key, item in value.items()) \
                and all(key in value or "" in options for key, options in answer.items()):
            return True
    return False


def _list_of_dicts_ok(value: list[Any], possible: Sequence[Any]) -> bool:
    return any(
        len(value) == len(answer) and all(_dict_ok(item, [expected]) for item, expected in zip(value, answer))
        for answer in possible
    )


def _value_ok(value: Any, possible: Sequence[Any], expected: type, nested: type | None) -> bool:
    if expected is dict:
        return _dict_ok(value, possible)
    if expected is list and nested is dict:
        return _list_of_dicts_ok(value, possible)
    if expected is str:
        return standardize(value) in [standardize(a) for a in possible if isinstance(a, str)]
    if expected is list:
        return [_norm(v) for v in value] in [[_norm(a) for a in answer] for answer in possible]
    return value in possible


def check_call(function: dict[str, Any], call: Call, answer: dict[str, dict[str, list[Any]]]) -> Score:
    """BFCL's `simple_function_checker` for one call against one expected call."""
    name = function["name"]
    expected_args = next(iter(answer.values()))
    if name not in call:
        return Score(False, f"function {name!r} not called")
    args = call[name]
    properties = function["parameters"]["properties"]
    for required in function["parameters"].get("required", []):
        if required not in args:
            return Score(False, f"missing required parameter {required!r}")
    for param, value in args.items():
        if param not in properties or param not in expected_args:
            return Score(False, f"unexpected parameter {param!r}")
        kind = properties[param]["type"]
        expected = _TYPES[kind]
        nested = _TYPES[properties[param]["items"]["type"]] if kind in _NESTED else None
        if kind == "float" and type(value) == int:  # noqa: E721 - Python's int-to-float promotion
            value = float(value)
        type_ok, is_variable = _type_ok(value, expected_args[param], expected, nested)
        if not type_ok:
            return Score(False, f"parameter {param!r}: expected type {kind}, got {type(value).__name__}")
        ok = value in expected_args[param] if is_variable else _value_ok(value, expected_args[param], expected, nested)
        if not ok:
            return Score(False, f"parameter {param!r}: {value!r} not in {expected_args[param]!r}")
    for param, options in expected_args.items():
        if param not in args and "" not in options:
            return Score(False, f"parameter {param!r} omitted but not optional")
    return _OK


def _function(case: Case, name: str) -> dict[str, Any]:
    return next(f for f in case.functions if f["name"] == name)


def score_case(case: Case, calls: Sequence[Call]) -> Score:
    """Did these calls answer the case, by BFCL's rules."""
    if not case.expects_calls:
        return _OK if not calls else Score(False, f"{len(calls)} call(s) made where none is relevant")
    answers = case.ground_truth or []
    if len(calls) != len(answers):
        return Score(False, f"wrong number of calls: {len(calls)}, expected {len(answers)}")
    if not case.parallel:
        answer = answers[0]
        return check_call(_function(case, next(iter(answer))), calls[0], answer)
    matched: set[int] = set()
    for i, answer in enumerate(answers):
        function = _function(case, next(iter(answer)))
        index = next((j for j, call in enumerate(calls) if j not in matched
                      and check_call(function, call, answer).valid), None)
        if index is None:
            return Score(False, f"no call matches expected call {i} ({next(iter(answer))})")
        matched.add(index)
    return _OK
