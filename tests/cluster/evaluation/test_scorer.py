"""The scorer on hand-made cases, and against BFCL's own AST checker on real cases."""

import copy
import random
import sys
import types

import pytest

from cluster.evaluation.bfcl import Case, load_cases, to_openai_tool
from cluster.evaluation.calls import parse_answer
from cluster.evaluation.scorer import score_case, standardize

AREA = {"name": "area", "parameters": {"type": "dict", "required": ["base", "height"], "properties": {
    "base": {"type": "float"}, "height": {"type": "integer"}, "unit": {"type": "string"}}}}
PLAY = {"name": "spotify.play", "parameters": {"type": "dict", "required": ["artist"], "properties": {
    "artist": {"type": "string"}, "duration": {"type": "integer"}}}}


def case(functions, truth, category="simple_python"):
    return Case("t", category, [{"role": "user", "content": "q"}], functions, [to_openai_tool(f) for f in functions],
                truth)


SIMPLE = case([AREA], [{"area": {"base": [10.0], "height": [5], "unit": ["cm", "centimetres", ""]}}])
PARALLEL = case([PLAY], [{"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
                         {"spotify.play": {"artist": ["Maroon 5"], "duration": [15, ""]}}], "parallel")


@pytest.mark.parametrize(("calls", "valid"), [
    ([{"area": {"base": 10.0, "height": 5, "unit": "cm"}}], True),
    ([{"area": {"base": 10, "height": 5}}], True),  # int for float; optional omitted
    ([{"area": {"base": 10.0, "height": 5, "unit": "Centi-Metres"}}], True),  # BFCL's normalisation
    ([{"area": {"base": 10.0, "height": 6}}], False),  # wrong value
    ([{"area": {"base": 10.0}}], False),  # missing required
    ([{"area": {"base": 10.0, "height": 5, "colour": "red"}}], False),  # extra parameter
    ([{"area": {"base": 10.0, "height": 5.0}}], False),  # float for int is not accepted
    ([{"area": {"base": 10.0, "height": True}}], False),  # bool is not an int
    ([{"volume": {"base": 10.0, "height": 5}}], False),  # wrong function
    ([], False),
    ([{"area": {"base": 10.0, "height": 5}}] * 2, False),  # one call expected
])
def test_simple_rules(calls, valid):
    assert score_case(SIMPLE, calls).valid is valid


def test_parallel_calls_match_in_any_order():
    first = {"spotify.play": {"artist": "Taylor Swift", "duration": 20}}
    second = {"spotify.play": {"artist": "maroon 5"}}
    assert score_case(PARALLEL, [first, second]).valid
    assert score_case(PARALLEL, [second, first]).valid
    assert not score_case(PARALLEL, [first]).valid
    assert not score_case(PARALLEL, [first, {"spotify.play": {"artist": "Muse"}}]).valid


def test_irrelevance_succeeds_only_without_a_call():
    irrelevant = case([AREA], None, "irrelevance")
    assert score_case(irrelevant, []).valid
    assert not score_case(irrelevant, [{"area": {"base": 1.0, "height": 1}}]).valid


def test_standardize_is_bfcls():
    assert standardize("April 1, 2024") == standardize("april 1 2024") == "april12024"
    assert standardize("it's") == 'it"s'


def test_parse_answer_reads_tool_calls_and_text():
    message = {"tool_calls": [{"function": {"name": "area", "arguments": '{"base": 1, "height": 2}'}}]}
    parsed = parse_answer(SIMPLE, message, guided=True)
    assert parsed.calls == [{"area": {"base": 1, "height": 2}}] and parsed.schema_valid and parsed.executable
    text = {"content": 'Sure:\n```json\n[{"name": "area", "arguments": {"base": 1.5, "height": "2"}}]\n```'}
    parsed = parse_answer(SIMPLE, text, guided=False)
    assert parsed.calls == [{"area": {"base": 1.5, "height": "2"}}]
    assert parsed.schema_valid and parsed.executable is False  # "2" is not an integer
    no_call = parse_answer(SIMPLE, {"content": "no idea"}, guided=False)
    assert no_call.calls == [] and not no_call.schema_valid and no_call.executable is None  # a call was expected
    broken = {"tool_calls": [{"function": {"name": "area", "arguments": "{not json"}}]}
    assert not parse_answer(SIMPLE, broken, guided=True).schema_valid


# ---- against BFCL's own checker ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bfcl_checker():
    """BFCL's ast_checker, imported with its model registry stubbed out (the registry imports every SDK)."""
    stub = types.ModuleType("bfcl_eval.constants.model_config")

    class Registry(dict):
        def __missing__(self, key):
            return types.SimpleNamespace(underscore_to_dot=False)

    stub.MODEL_CONFIG_MAPPING = Registry()
    saved = sys.modules.get(stub.__name__)
    sys.modules[stub.__name__] = stub
    try:
        from bfcl_eval.constants.enums import Language
        from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    finally:
        if saved is None:
            sys.modules.pop(stub.__name__)
        else:
            sys.modules[stub.__name__] = saved
    return lambda c, calls: ast_checker(c.functions, calls, c.ground_truth, Language.PYTHON, c.checker, "model")


def _mutations(rng, truth):
    def mutate(v):
        if isinstance(v, bool):
            return rng.choice([not v, int(v)])
        if isinstance(v, (int, float)):
            return rng.choice([v + 1, float(v) if isinstance(v, int) else int(v), str(v)])
        if isinstance(v, str):
            return rng.choice([v.upper(), v + " x", v.replace(" ", ", "), 5])
        if isinstance(v, list):
            return rng.choice([list(reversed(v)), v[:-1], v + v[:1]])
        if isinstance(v, dict):
            return {**v, "extra": 1}
        return v

    for _ in range(6):
        calls = copy.deepcopy(truth)
        if not calls:
            continue
        name, args = next(iter(rng.choice(calls).items()))
        operation = rng.randrange(5)
        if operation == 0 and args:
            key = rng.choice(list(args))
            args[key] = mutate(args[key])
        elif operation == 1 and args:
            del args[rng.choice(list(args))]
        elif operation == 2:
            args["bogus"] = 1
        elif operation == 3:
            calls.reverse()
        else:
            calls = calls[1:]
        yield calls


@pytest.mark.parametrize("category", ["simple_python", "multiple", "parallel", "parallel_multiple", "live_simple",
                                      "live_multiple", "live_parallel"])
def test_agrees_with_bfcl_ast_checker(bfcl_checker, category):
    from bench.simulated_llm import _truth

    rng = random.Random(category)
    compared = agreed_valid = 0
    for c in load_cases(category, limit=120):
        for calls in [_truth(c), *_mutations(rng, _truth(c))]:
            theirs = bfcl_checker(c, copy.deepcopy(calls))["valid"]
            assert score_case(c, copy.deepcopy(calls)).valid == theirs, (c.id, calls)
            compared += 1
            agreed_valid += theirs
    assert compared > 100 and 0 < agreed_valid < compared  # both verdicts were exercised
