"""Schema limits: each bound passes at its value and fails one past it, the summed bounds span all the
schemas of a request, huge and deep schemas fail fast with a 400-style error (never RecursionError), and
patterns RE2 refuses are refused naming where (which ones: ``test_regex_safety``)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.schema_limits import DEFAULT_SCHEMA_LIMITS, SchemaLimits, check_request_limits, check_schema_limits
from policies.verifiers import Candidate, InvalidSchemaError, SchemaVerifier, validate_tool_schemas

LIMITS = DEFAULT_SCHEMA_LIMITS


def _nested(depth: int) -> dict:
    """``depth`` objects, each the ``items`` of the one outside it."""
    schema: dict = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


def _with_nodes(nodes: int) -> dict:
    """A schema with exactly ``nodes`` objects/arrays: the root, an ``examples`` list and empty objects."""
    return {"type": "object", "examples": [{} for _ in range(nodes - 2)]}


def _object(properties: int) -> dict:
    return {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(properties)}}


def _patterns_totalling(chars: int) -> dict:
    """Distinct patterns, each at most 500 characters, whose lengths sum to ``chars``."""
    sizes = [500] * (chars // 500) + ([chars % 500] if chars % 500 else [])
    keys = [f"x{i:03d}" + "a" * (size - 4) for i, size in enumerate(sizes)]
    return {"type": "object", "patternProperties": {key: {"type": "string"} for key in keys}}


def _tool(parameters: dict, name: str = "f") -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


# --- each bound at and just past its value -------------------------------------------------------------

# limit -> the schemas of a request exactly at the bound ``n``; the per-request sums are split over two
# schemas, each within the bound on its own, to show that they are counted across the request.
BOUNDARY_CASES = {
    "max_depth": lambda n: [_nested(n)],
    "max_nodes": lambda n: [_with_nodes(n)],
    "max_pattern_chars": lambda n: [{"type": "string", "pattern": "a" * n}],
    "max_pattern_repeat": lambda n: [{"type": "string", "pattern": f"^[a-z]{{2,{n - 2}}}-?\\d+$"}],
    "max_properties": lambda n: [_object(n)],
    "max_enum_values": lambda n: [{"enum": list(range(n - 1))}, {"const": "x"}],
    "max_total_pattern_chars": lambda n: [_patterns_totalling(n - 100), {"pattern": "b" * 100}],
    "max_total_length_bounds": lambda n: [{"type": "string", "maxLength": n - 10}, {"type": "string", "minLength": 10}],
    "max_request_nodes": lambda n: [_with_nodes(n // 2), _with_nodes(n - n // 2)],
    "max_request_schemas": lambda n: [{"type": "object"}] * n,
}


def test_every_limit_has_a_boundary_case() -> None:
    assert set(BOUNDARY_CASES) == {field.name for field in fields(SchemaLimits)}


@pytest.mark.parametrize("limit", sorted(BOUNDARY_CASES))
def test_limit_accepts_its_value_and_rejects_one_more(limit: str) -> None:
    value = getattr(LIMITS, limit)
    check_request_limits(BOUNDARY_CASES[limit](value))
    with pytest.raises(InvalidSchemaError, match=rf"over limit {limit}={value}\b"):
        check_request_limits(BOUNDARY_CASES[limit](value + 1))


@pytest.mark.parametrize("limit", sorted(BOUNDARY_CASES))
def test_schemas_at_every_bound_are_valid_json_schemas(limit: str) -> None:
    """The accepted worst cases must also get through the verifier, or the bounds are not the real ones."""
    for schema in BOUNDARY_CASES[limit](getattr(LIMITS, limit)):
        SchemaVerifier(schema)


def test_limits_are_configurable() -> None:
    check_schema_limits(_nested(40), SchemaLimits(max_depth=40))
    with pytest.raises(InvalidSchemaError, match="max_depth=8"):
        check_schema_limits(_nested(9), SchemaLimits(max_depth=8))


def test_a_repeated_pattern_counts_once_toward_the_total() -> None:
    pattern = r"^\d{4}-\d{2}-\d{2}$" + "x" * 100
    properties = {f"date{i}": {"type": "string", "pattern": pattern} for i in range(100)}
    check_schema_limits({"type": "object", "properties": properties})  # 100 x 117 chars > 4096, but one pattern


def test_error_names_the_location() -> None:
    schema = {"type": "object", "properties": {"a/b": {"type": "object", "properties": {"c": _nested(40)}}}}
    with pytest.raises(InvalidSchemaError, match=r"at 'properties/a~1b/properties/c/items/items/"):
        check_schema_limits(schema)


# --- requests -------------------------------------------------------------------------------------------


def test_request_errors_name_the_schema_by_label_or_index() -> None:
    schemas = [{"type": "string"}, _nested(40)]
    with pytest.raises(InvalidSchemaError, match=r"^schema #1: schema over limit max_depth=32"):
        check_request_limits(schemas)
    with pytest.raises(InvalidSchemaError, match=r"^response: schema over limit max_depth=32"):
        check_request_limits(schemas, labels=["tool", "response"])
    with pytest.raises(ValueError, match="1 labels for 2 schemas"):
        check_request_limits(schemas, labels=["tool"])


def test_an_empty_request_passes() -> None:
    check_request_limits([])


def test_each_schema_counts_at_least_one_node() -> None:
    """Otherwise a request of many boolean or scalar schemas would be free."""
    check_request_limits([True] * 100, SchemaLimits(max_request_nodes=100))
    with pytest.raises(InvalidSchemaError, match=r"schema #100: .*max_request_nodes=100 at '<root>'"):
        check_request_limits([True] * 101, SchemaLimits(max_request_nodes=100))


def test_identical_length_bounds_count_once_across_the_request() -> None:
    """xgrammar compiles one rule per distinct (minLength, maxLength) pair and reuses it wherever it sits."""
    name = {"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 100}}}
    check_request_limits([name] * 100)


def test_a_length_bound_pair_is_the_unit() -> None:
    """Same maxLength, different minLength: two rules, two costs; each pair counts its larger bound."""
    schemas = [{"type": "string", "maxLength": 100}, {"type": "string", "minLength": 1, "maxLength": 100}]
    with pytest.raises(InvalidSchemaError, match=r"schema #1: .*max_total_length_bounds=100 at 'maxLength'"):
        check_request_limits(schemas)
    with pytest.raises(InvalidSchemaError, match=r"at 'properties/s/minLength': .* summing to 200"):
        check_schema_limits({"type": "object", "properties": {"s": {"minLength": 200}}})


@pytest.mark.parametrize("bound", [0, -5, True, "200", None, [200], {"n": 200}, float("nan"), float("inf")])
def test_length_bounds_that_are_not_positive_finite_numbers_cost_nothing_here(bound: object) -> None:
    """The meta-schema check refuses the invalid ones later; here they must neither crash nor count."""
    at_the_bound = {"maxLength": LIMITS.max_total_length_bounds}
    check_request_limits([{"type": "string", "minLength": bound, "maxLength": bound}, at_the_bound])


def test_tools_share_one_request_budget() -> None:
    tools = [_tool({"type": "object", "properties": {"a": {"type": "string", "maxLength": 100}}}, "a"),
             _tool({"type": "object", "properties": {"b": {"type": "string", "maxLength": 50}}}, "b")]
    with pytest.raises(InvalidSchemaError, match=r"tool #1 \('b'\): .*max_total_length_bounds=100"):
        validate_tool_schemas(tools)


def test_too_many_tools_are_refused() -> None:
    tools = [_tool({"type": "object"}, f"t{i}") for i in range(LIMITS.max_request_schemas + 1)]
    with pytest.raises(InvalidSchemaError, match="max_request_schemas=129: 130 schemas"):
        validate_tool_schemas(tools)


def test_tools_run_out_of_request_nodes_at_a_named_tool() -> None:
    tools = [_tool(_with_nodes(900), f"t{i}") for i in range(3)]
    with pytest.raises(InvalidSchemaError, match=r"tool #2 \('t2'\): .*max_request_nodes=2000"):
        validate_tool_schemas(tools)


# --- pathological sizes ---------------------------------------------------------------------------------


def test_ten_thousand_levels_fail_without_recursion_error() -> None:
    with pytest.raises(InvalidSchemaError, match="max_depth=32"):
        check_schema_limits(_nested(10_000))
    with pytest.raises(InvalidSchemaError, match=r"response schema: .*max_depth=32"):
        SchemaVerifier(_nested(10_000))


def test_deep_nesting_in_a_tool_is_a_tool_error() -> None:
    with pytest.raises(InvalidSchemaError, match=r"tool #0 \('f'\): .*max_depth"):
        validate_tool_schemas([_tool({"type": "object", "properties": {"x": _nested(100)}})])


def test_huge_enum_is_rejected() -> None:
    with pytest.raises(InvalidSchemaError, match="max_enum_values=1024 at 'properties/size'"):
        SchemaVerifier({"type": "object", "properties": {"size": {"enum": [str(i) for i in range(1_000_000)]}}})


def test_very_wide_array_fails_on_node_count() -> None:
    with pytest.raises(InvalidSchemaError, match="max_nodes=2000"):
        check_schema_limits({"default": [[] for _ in range(200_000)]})


def test_a_cyclic_python_object_terminates() -> None:
    """Not JSON, but a caller bug must not hang the gateway: the node bound stops the walk."""
    loop: dict = {}
    loop["items"] = loop
    with pytest.raises(InvalidSchemaError):
        check_schema_limits(loop)


# --- patterns (which ones RE2 refuses: test_regex_safety) ---------------------------------------------


@pytest.mark.parametrize("pattern", [r"^\d{4}-\d{2}-\d{2}$", r"^([a-z0-9-]+\.)+[a-z]{2,}$", r"^(?<id>[A-Z]{3})$"])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    check_schema_limits({"type": "string", "pattern": pattern})
    check_schema_limits({"type": "object", "patternProperties": {pattern: {"type": "string"}}})
    SchemaVerifier({"type": "string", "pattern": pattern})


def test_a_backreference_is_refused_naming_the_pattern_and_why() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": r"^(\w)\1$"}}}
    match = r"invalid regular expression at 'properties/a/pattern': a backreference \\1: RE2 matches in linear time"
    with pytest.raises(InvalidSchemaError, match=match):
        check_schema_limits(schema)


def test_a_catastrophic_pattern_is_accepted_and_validation_stays_fast() -> None:
    """``(a+)+$`` takes Python's re exponential time on a near miss; the verifiers match with RE2."""
    verifier = SchemaVerifier({"type": "object", "properties": {"q": {"type": "string", "pattern": "(a+)+$"}}})
    started = time.perf_counter()
    verdict = verifier.verify(Candidate(text=json.dumps({"q": "a" * 50_000 + "!"})))
    assert time.perf_counter() - started < 10.0  # exponential under Python's re: it would never end
    assert verdict.verified and not verdict.passed and verdict.reasons[0].startswith("at 'q': 'aaa")
    assert verifier.verify(Candidate(text=json.dumps({"q": "aaaa"}))).passed


def test_nested_counted_repeats_multiply_toward_max_pattern_repeat() -> None:
    """Their sum is 33; xgrammar expands 17 x 16."""
    match = "max_pattern_repeat=256 at 'pattern': quantifier counts summing to 272"
    with pytest.raises(InvalidSchemaError, match=match):
        check_schema_limits({"type": "string", "pattern": r"^(([a-z]{1,16}-){17})$"})


def test_re2_refuses_nested_counts_past_1000_before_they_are_counted() -> None:
    """64 x 64: ~6.5 s of CPU for xgrammar to compile."""
    with pytest.raises(InvalidSchemaError, match=r"at 'pattern': a counted repeat over 1000"):
        check_schema_limits({"type": "string", "pattern": r"^(([a-z]{1,64}-){64})$"})


def test_a_refused_pattern_property_key_is_named() -> None:
    with pytest.raises(InvalidSchemaError, match=r"at 'patternProperties/\(\?=a\)b': a look-ahead"):
        check_schema_limits({"type": "object", "patternProperties": {"(?=a)b": {}}})


def test_a_refused_pattern_behind_a_ref_into_data_is_refused() -> None:
    """The validator applies whatever `$ref` points at as a schema, even inside `default`."""
    schema = {"$ref": "#/default", "default": {"pattern": "(?<=a)b"}}
    with pytest.raises(InvalidSchemaError, match="at 'default/pattern': a look-behind"):
        check_schema_limits(schema)


def test_a_refused_pattern_in_a_tool_is_refused_naming_the_tool() -> None:
    params = {"type": "object", "properties": {"q": {"type": "string", "pattern": r"^a++$"}}}
    match = r"tool #0 \('f'\): invalid regular expression at 'properties/q/pattern'"
    with pytest.raises(InvalidSchemaError, match=match):
        validate_tool_schemas([_tool(params)])


@pytest.mark.parametrize("pattern", ["[", "(?<=a+)b", "a{1001}", "a**", "(?P<x>a)(?P=y)", r"\p{L}"])
def test_invalid_regex_is_rejected(pattern: str) -> None:
    with pytest.raises(InvalidSchemaError, match="invalid regular expression at 'pattern'"):
        check_schema_limits({"pattern": pattern})


def test_a_count_re2_reads_as_text_still_counts() -> None:
    """RE2 takes ``{99999999999}`` (and ``{01}``) for literal text; the count errs on the safe side."""
    with pytest.raises(InvalidSchemaError, match="max_pattern_repeat=256 at 'pattern'"):
        check_schema_limits({"pattern": "a{99999999999}"})


def test_unevaluated_properties_with_pattern_properties_is_refused() -> None:
    """jsonschema matches patternProperties for unevaluatedProperties with Python's re, not RE2."""
    schema = {"allOf": [{"patternProperties": {"^x-": {}}}], "unevaluatedProperties": False}
    match = r"'unevaluatedProperties' with 'allOf/0/patternProperties' in one schema is not supported"
    with pytest.raises(InvalidSchemaError, match=match):
        check_schema_limits(schema)
    check_request_limits([{"unevaluatedProperties": False}, {"patternProperties": {"^x-": {}}}])  # two schemas


# --- the contract: a JSON value either passes or is a client error ---------------------------------------

_KEYS = st.sampled_from(
    ["type", "properties", "items", "enum", "const", "pattern", "patternProperties", "$ref", "minLength", "maxLength"]
)
_REGEXISH = st.text(alphabet="ab.*+?|()[]{}^$\\-0123,dws", max_size=12)
_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | _REGEXISH
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(_KEYS | st.text(max_size=6) | _REGEXISH, children, max_size=6),
    max_leaves=60,
)


_SMALL = SchemaLimits(max_depth=4, max_nodes=20, max_enum_values=5, max_total_length_bounds=10, max_request_nodes=30)


@settings(max_examples=400, deadline=None)
@given(st.lists(_JSON, max_size=4))
def test_any_json_values_pass_or_raise_invalid_schema_error(values: list[object]) -> None:
    try:
        result = check_request_limits(values, _SMALL)
    except InvalidSchemaError:
        return
    assert result is None


@pytest.mark.parametrize("where", ["properties", "$defs"])
def test_a_nested_schema_dialect_is_refused_so_no_pattern_escapes_re2(where: str) -> None:
    """jsonschema gives a subschema with its own `$schema` the stock validator, which matches with Python's re."""
    nested = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "string", "pattern": "^(a+)+$"}
    schema = {"type": "object", where: {"x": nested}}
    with pytest.raises(InvalidSchemaError, match=re.escape(f"'{where}/x/$schema': a `$schema` is allowed only at")):
        check_schema_limits(schema)
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": {"$schema": {"type": "string"}}}  # a root dialect, and a property named "$schema"
    check_schema_limits(root)
