import json

import pytest

from policies.verifiers import (
    Candidate,
    InvalidSchemaError,
    SchemaVerifier,
    ToolCall,
    ToolCallVerifier,
    Verdict,
    safe_verify,
    validate_tool_schemas,
)

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "sku": {"type": "string"},
        "qty": {"type": "integer", "minimum": 1, "maximum": 10},
        "size": {"enum": ["S", "M", "L"]},
    },
    "required": ["sku", "qty"],
}


def _tool(name, parameters=None, **extra):
    function = {"name": name, "description": f"{name} tool", **extra}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


WEATHER = _tool(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        "required": ["city"],
    },
)
TOOLS = [WEATHER, _tool("ping"), _tool("log", {"type": "object", "additionalProperties": True})]


def _text(obj) -> Candidate:
    return Candidate(text=json.dumps(obj))


def _calls(*calls) -> Candidate:
    return Candidate(
        tool_calls=tuple(
            ToolCall(name, json.dumps(args) if not isinstance(args, str) else args) for name, args in calls
        )
    )


# --- Verdict -------------------------------------------------------------------------------


def test_verdict_rejects_score_outside_unit_interval():
    with pytest.raises(ValueError):
        Verdict("x", 1.5, True)


def test_unverified_verdict_has_no_score_and_does_not_pass():
    v = Verdict.unverified("schema", "timed out")
    assert (v.score, v.passed, v.verified, v.reasons) == (None, False, False, ("timed out",))
    with pytest.raises(ValueError):
        Verdict("schema", None, True)


# --- SchemaVerifier ------------------------------------------------------------------------


def test_schema_accepts_valid_json():
    v = SchemaVerifier(ORDER_SCHEMA).verify(_text({"sku": "A1", "qty": 2, "size": "M"}))
    assert v == Verdict("schema", 1.0, True, ())


@pytest.mark.parametrize(
    ("instance", "fragment"),
    [
        ({"sku": "A1", "qty": "2"}, "at 'qty': '2' is not of type 'integer'"),
        ({"sku": "A1", "qty": 2, "size": "XL"}, "at 'size': 'XL' is not one of"),
        ({"sku": "A1", "qty": 11}, "at 'qty': 11 is greater than the maximum of 10"),
        ({"sku": "A1", "qty": 0}, "at 'qty': 0 is less than the minimum of 1"),
        ({"sku": "A1"}, "'qty' is a required property"),
        ({"sku": "A1", "qty": True}, "at 'qty': True is not of type 'integer'"),
    ],
)
def test_schema_rejects_invalid_instances_with_located_reasons(instance, fragment):
    v = SchemaVerifier(ORDER_SCHEMA).verify(_text(instance))
    assert not v.passed and v.score == 0.0
    assert any(fragment in r for r in v.reasons), v.reasons


@pytest.mark.parametrize("text", ['{"sku": "A1", "qty": 2', "", "```json\n{}\n```", '{"x": NaN}', "Infinity"])
def test_schema_rejects_malformed_or_non_strict_json(text):
    v = SchemaVerifier({}).verify(Candidate(text=text))
    assert not v.passed
    assert v.reasons[0].startswith("not valid JSON")


def test_schema_survives_pathologically_deep_json():
    v = SchemaVerifier({}).verify(Candidate(text="[" * 100_000 + "]" * 100_000))
    assert not v.passed and "nesting too deep" in v.reasons[0]


def test_schema_format_is_not_checked():
    assert SchemaVerifier({"type": "string", "format": "email"}).verify(_text("not-an-email")).passed


@pytest.mark.parametrize("schema", [{"type": "strng"}, {"properties": {"a": {"minimum": "1"}}}, ["not", "a", "schema"]])
def test_invalid_schema_raises_domain_error(schema):
    with pytest.raises(InvalidSchemaError, match="response schema"):
        SchemaVerifier(schema)


def test_default_dialect_is_2020_12_but_declared_dialect_is_respected():
    tuple_items = {"type": "array", "items": [{"type": "integer"}]}  # legal in draft-07, not in 2020-12
    with pytest.raises(InvalidSchemaError):
        SchemaVerifier(tuple_items)
    draft7 = SchemaVerifier({"$schema": "http://json-schema.org/draft-07/schema#", **tuple_items})
    assert draft7.verify(_text([1])).passed
    assert not draft7.verify(_text(["x"])).passed


def test_unresolvable_ref_is_a_schema_error_and_unverified_under_safe_verify():
    verifier = SchemaVerifier({"$ref": "#/$defs/missing"})
    with pytest.raises(InvalidSchemaError, match="unresolvable"):
        verifier.verify(_text(1))
    verdict = safe_verify(verifier, _text(1))
    assert not verdict.verified and "unresolvable" in verdict.reasons[0]


def test_safe_verify_turns_a_crash_into_unverified():
    class Broken(SchemaVerifier):
        def verify(self, candidate):
            raise RuntimeError("boom")

    verdict = safe_verify(Broken({}), Candidate(text="{}"))
    assert verdict == Verdict.unverified("schema", "verifier crashed: RuntimeError: boom")


# --- ToolCallVerifier ----------------------------------------------------------------------


def test_valid_tool_calls_pass():
    v = ToolCallVerifier(TOOLS).verify(_calls(("get_weather", {"city": "Oslo", "unit": "c", "days": 3}), ("ping", {})))
    assert v == Verdict("tool_calls", 1.0, True, ())


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (("get_weather", {"city": 7}), "get_weather: argument 'city': 7 is not of type 'string'"),
        (("get_weather", {"city": "Oslo", "unit": "k"}), "get_weather: argument 'unit': 'k' is not one of ['c', 'f']"),
        (
            ("get_weather", {"city": "Oslo", "days": 15}),
            "get_weather: argument 'days': 15 is greater than the maximum of 14",
        ),
        (("get_weather", {"unit": "c"}), "get_weather: 'city' is a required property"),
        (("get_weather", {"city": "Oslo", "country": "NO"}), "get_weather: unknown argument 'country'"),
        (("ping", {"x": 1}), "ping: unknown argument 'x'"),
        (("get_wether", {"city": "Oslo"}), "unknown function 'get_wether' (declared: get_weather, log, ping)"),
        (("get_weather", '{"city": "Oslo"'), "get_weather: arguments are not valid JSON"),
        (("get_weather", '["Oslo"]'), "get_weather: arguments must be a JSON object, got list"),
    ],
)
def test_invalid_tool_calls_name_function_and_argument(call, expected):
    v = ToolCallVerifier(TOOLS).verify(_calls(call))
    assert not v.passed and v.score == 0.0
    assert any(r.startswith(expected) for r in v.reasons), v.reasons


def test_explicit_additional_properties_is_respected():
    verifier = ToolCallVerifier(TOOLS + [_tool("strict", {"type": "object", "additionalProperties": False})])
    assert verifier.verify(_calls(("log", {"anything": 1}))).passed
    rejected = verifier.verify(_calls(("strict", {"extra": 1})))
    assert not rejected.passed and "'extra' was unexpected" in rejected.reasons[0]


def test_arguments_declared_in_combinator_branches_are_known():
    params = {"type": "object", "anyOf": [{"properties": {"a": {"type": "string"}}}, {"properties": {"b": {}}}]}
    verifier = ToolCallVerifier([_tool("f", params)])
    assert verifier.verify(_calls(("f", {"a": "x"}))).passed
    assert not verifier.verify(_calls(("f", {"c": "x"}))).passed


def test_score_is_fraction_of_valid_calls():
    v = ToolCallVerifier(TOOLS).verify(
        _calls(("ping", {}), ("nope", {}), ("get_weather", {"city": "A"}), ("ping", {"y": 1}))
    )
    assert not v.passed and v.score == 0.5 and len(v.reasons) == 2


def test_no_call_passes_unless_required():
    assert ToolCallVerifier(TOOLS).verify(Candidate(text="hi")).passed
    required = ToolCallVerifier(TOOLS, require_call=True).verify(Candidate(text="hi"))
    assert not required.passed and required.reasons == ("no tool call made but one is required",)


# --- validate_tool_schemas -----------------------------------------------------------------


def test_valid_tools_pass_validation():
    validate_tool_schemas(TOOLS)  # raises on failure


@pytest.mark.parametrize(
    ("tools", "match"),
    [
        (
            [WEATHER, _tool("bad", {"type": "object", "properties": {"x": {"type": "strin"}}})],
            r"tool #1 \('bad'\): invalid JSON Schema at 'properties/x/type'",
        ),
        ([{"type": "function", "function": {"description": "no name"}}], r"tool #0: function.name"),
        ([WEATHER, WEATHER], r"tool #1 \('get_weather'\): duplicate"),
        ([{"type": "retrieval"}], r"tool #0: expected"),
        (["get_weather"], r"tool #0: expected"),
        ([_tool("arr", {"type": "array"})], r"tool #0 \('arr'\): parameters must be a JSON Schema of type 'object'"),
    ],
)
def test_bad_tool_definitions_raise_naming_the_tool(tools, match):
    with pytest.raises(InvalidSchemaError, match=match):
        validate_tool_schemas(tools)
    with pytest.raises(InvalidSchemaError, match=match):
        ToolCallVerifier(tools)


@pytest.mark.parametrize("ref", ["http://169.254.169.254/latest", "file:///etc/passwd", "other.json#/a"])
def test_schemas_may_only_reference_themselves(ref: str) -> None:
    """A client-supplied schema must never make the gateway fetch a URL (SSRF) or read a file."""
    with pytest.raises(InvalidSchemaError, match="only local"):
        SchemaVerifier({"type": "object", "properties": {"a": {"$ref": ref}}})


def test_a_schema_seen_again_reuses_its_compiled_validator_and_a_bad_one_fails_every_time() -> None:
    """The gateway's check and the cascade's verifiers compile each request's schema once between them."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    first, second = SchemaVerifier(schema), SchemaVerifier(json.loads(json.dumps(schema)))
    assert first._validator is second._validator
    assert second.verify(Candidate(text='{"city": 1}')).passed is False
    for _ in range(2):
        with pytest.raises(InvalidSchemaError, match="invalid JSON Schema"):
            SchemaVerifier({"type": "object", "minProperties": -1})
