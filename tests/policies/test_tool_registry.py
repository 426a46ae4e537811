"""The tool registry: signatures -> pydantic models -> OpenAI tools, and validation that agrees with
the ToolCallVerifier the cascade gates answers on."""

from __future__ import annotations

import json
import textwrap
from typing import Annotated, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from policies.tool_registry import (
    ToolRegistrationError,
    ToolRegistry,
    ToolValidationError,
    ValidatedCall,
    load_registry,
)
from policies.verifiers import Candidate, ToolCall, ToolCallVerifier, validate_tool_schemas


class Address(BaseModel):
    city: str
    zip_code: Annotated[str, Field(pattern=r"^\d{5}$")]


def book_trip(
    traveller: str,
    nights: Annotated[int, Field(ge=1, le=14, description="Nights to stay.")],
    address: Address,
    cabin: Literal["economy", "business"] = "economy",
    tags: list[str] = [],  # noqa: B006 - a default is copied by pydantic, never shared
    budget_usd: float | None = None,
) -> dict:
    """Book a trip for one traveller."""
    return {"traveller": traveller, "nights": nights, "address": address, "cabin": cabin, "tags": tags}


# What pydantic itself generates for book_trip's signature (titled with the tool name; no docstring,
# which would become the schema's description).
class BookTripArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", title="book_trip")

    traveller: str
    nights: Annotated[int, Field(ge=1, le=14, description="Nights to stay.")]
    address: Address
    cabin: Literal["economy", "business"] = "economy"
    tags: list[str] = []
    budget_usd: float | None = None


@pytest.fixture
def registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(book_trip)
    return registry


GOOD = {"traveller": "ada", "nights": 3, "address": {"city": "Paris", "zip_code": "75001"}}


def test_definition_is_pydantics_schema_as_an_openai_tool(registry):
    assert registry.tools() == [
        {
            "type": "function",
            "function": {
                "name": "book_trip",
                "description": "Book a trip for one traveller.",
                "parameters": BookTripArgs.model_json_schema(),
            },
        }
    ]
    parameters = registry.tools()[0]["function"]["parameters"]
    assert parameters["additionalProperties"] is False
    assert parameters["required"] == ["traveller", "nights", "address"]
    assert parameters["properties"]["nights"] == {
        "description": "Nights to stay.",
        "maximum": 14,
        "minimum": 1,
        "title": "Nights",
        "type": "integer",
    }
    assert parameters["properties"]["cabin"]["enum"] == ["economy", "business"]


def test_tools_pass_the_verifiers_schema_check_and_are_copies(registry):
    tools = registry.tools()
    validate_tool_schemas(tools)
    verdict = ToolCallVerifier(tools).verify(Candidate(tool_calls=(ToolCall("book_trip", json.dumps(GOOD)),)))
    assert verdict.passed
    tools[0]["function"]["name"] = "edited"
    assert registry.tools()[0]["function"]["name"] == "book_trip"


def test_validate_converts_to_annotated_types_and_fills_defaults(registry):
    call = registry.validate("book_trip", json.dumps({**GOOD, "nights": 3.0, "budget_usd": 500}))
    assert isinstance(call, ValidatedCall)
    assert call.name == "book_trip" and call.fn is book_trip
    assert call.kwargs == {
        "traveller": "ada",
        "nights": 3,
        "address": Address(city="Paris", zip_code="75001"),
        "cabin": "economy",
        "tags": [],
        "budget_usd": 500.0,
    }
    assert type(call.kwargs["nights"]) is int and type(call.kwargs["budget_usd"]) is float
    assert call.invoke()["address"] == Address(city="Paris", zip_code="75001")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("{", "not valid JSON"),
        ('{"traveller": "ada", "nights": NaN}', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({**GOOD, "nights": "3"}), "argument 'nights': '3' is not of type 'integer'"),
        (json.dumps({**GOOD, "nights": True}), "argument 'nights'"),
        (json.dumps({**GOOD, "nights": 15}), "argument 'nights': 15 is greater than the maximum of 14"),
        (json.dumps({**GOOD, "nights": 0}), "argument 'nights': 0 is less than the minimum of 1"),
        (json.dumps({**GOOD, "cabin": "first"}), "argument 'cabin': 'first' is not one of ['economy', 'business']"),
        (json.dumps({**GOOD, "tags": ["a", 1]}), "argument 'tags/1': 1 is not of type 'string'"),
        (json.dumps({**GOOD, "address": {"city": "Paris", "zip_code": "7500"}}), "argument 'address/zip_code'"),
        (json.dumps({**GOOD, "address": {"city": "Paris"}}), "'zip_code' is a required property"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "traveller"}), "'traveller' is a required property"),
        (json.dumps({**GOOD, "seat": "12A"}), "'seat' was unexpected"),
    ],
)
def test_validate_rejects_and_names_the_argument(registry, arguments, expected):
    with pytest.raises(ToolValidationError) as caught:
        registry.validate("book_trip", arguments)
    assert caught.value.tool == "book_trip"
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems
    assert expected in str(caught.value)


def test_unknown_function_lists_the_declared_ones(registry):
    with pytest.raises(ToolValidationError, match=r"unknown function 'book_hotel' \(declared: book_trip\)"):
        registry.validate("book_hotel", "{}")


def _even(n: int) -> int:
    if n % 2:
        raise ValueError("must be even")
    return n


def test_pydantic_only_checks_run_after_the_schema_and_name_the_argument():
    registry = ToolRegistry()

    @registry.register
    def halve(n: Annotated[int, AfterValidator(_even)]) -> int:
        return n // 2

    assert registry.validate("halve", '{"n": 4}').invoke() == 2
    with pytest.raises(ToolValidationError, match=r"halve: argument 'n': Value error, must be even \(got 3\)"):
        registry.validate("halve", '{"n": 3}')


def test_register_forms_names_and_descriptions():
    registry = ToolRegistry()

    @registry.register
    def plain(x: int) -> int:
        """First line.

        More detail."""
        return x

    @registry.register(name="renamed", description="Custom.")
    def original(x: int) -> int:
        return x

    def undocumented(x: int) -> int:
        return x

    assert registry.register(undocumented) is undocumented
    assert plain(1) == 1 and original(2) == 2  # decorators return the function itself
    functions = {t["function"]["name"]: t["function"] for t in registry.tools()}
    assert list(functions) == ["plain", "renamed", "undocumented"] == list(registry)
    assert functions["plain"]["description"] == "First line.\n\nMore detail."
    assert functions["renamed"]["description"] == "Custom."
    assert "description" not in functions["undocumented"]
    assert "renamed" in registry and "original" not in registry and len(registry) == 3
    assert registry.get("renamed").fn is original


def test_no_parameters_and_keyword_only_parameters():
    registry = ToolRegistry()

    @registry.register
    def now() -> str:
        return "noon"

    @registry.register
    def scale(*, factor: float = 2.0) -> float:
        return factor

    assert registry.tools()[0]["function"]["parameters"] == {
        "additionalProperties": False,
        "properties": {},
        "title": "now",
        "type": "object",
    }
    assert registry.validate("now", "{}").invoke() == "noon"
    assert registry.validate("scale", '{"factor": 3}').invoke() == 3.0


def test_parameter_names_that_clash_with_basemodel_attributes_work():
    registry = ToolRegistry()

    @registry.register
    def render(json: str, schema: int = 0, model_config: bool = False, copy: list[int] | None = None) -> tuple:
        return json, schema, model_config, copy

    properties = registry.tools()[0]["function"]["parameters"]["properties"]
    assert list(properties) == ["json", "schema", "model_config", "copy"]
    call = registry.validate("render", '{"json": "x", "schema": 2, "model_config": true, "copy": [1]}')
    assert call.invoke() == ("x", 2, True, [1])
    with pytest.raises(ToolValidationError, match="'p0' was unexpected"):  # internal field names stay internal
        registry.validate("render", '{"json": "x", "p0": "y"}')


def _no_hint(x):  # noqa: ANN001
    return x


def _var_args(*items: int) -> None: ...


def _var_kwargs(**options: int) -> None: ...


def _positional_only(x: int, /) -> None: ...


async def _async_tool(x: int) -> int:
    return x


class _Opaque:
    pass


def _opaque_param(thing: _Opaque) -> None: ...


@pytest.mark.parametrize(
    ("fn", "kwargs", "expected"),
    [
        (_no_hint, {}, "parameter 'x' has no type hint"),
        (_var_args, {}, r"parameter 'items': \*args"),
        (_var_kwargs, {}, r"parameter 'options': \*\*kwargs"),
        (_positional_only, {}, "parameter 'x': positional-only"),
        (_async_tool, {}, "async functions are not supported"),
        (lambda x: x, {}, "tool name '<lambda>' must match"),
        (_var_args, {"name": "has space"}, "tool name 'has space' must match"),
        (_opaque_param, {}, "cannot derive a JSON Schema"),
        (42, {}, "must be callable"),
    ],
)
def test_registration_errors_are_clear(fn, kwargs, expected):
    with pytest.raises(ToolRegistrationError, match=expected):
        ToolRegistry().register(fn, **kwargs)


def test_duplicate_names_are_refused():
    registry = ToolRegistry()
    registry.register(book_trip)
    with pytest.raises(ToolRegistrationError, match="'book_trip' is already registered"):
        registry.register(_even, name="book_trip")


@pytest.fixture
def tool_module(tmp_path, monkeypatch):
    (tmp_path / "registry_fixture_tools.py").write_text(
        textwrap.dedent(
            '''
            from typing import Literal

            PI = 3.14

            def add(a: int, b: int = 1) -> int:
                """Add two integers."""
                return a + b

            class Units:
                @staticmethod
                def convert(value: float, to: Literal["m", "ft"]) -> float:
                    return value if to == "m" else value * 3.28084

            def untyped(x):
                return x
            '''
        )
    )
    (tmp_path / "registry_fixture_broken.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "registry_fixture_bad_dep.py").write_text("import registry_fixture_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "registry_fixture_tools"


def test_load_registry_resolves_module_function_paths(tool_module):
    registry = load_registry([f"{tool_module}:add", f"{tool_module}:Units.convert"])
    assert list(registry) == ["add", "convert"]
    assert registry.validate("add", '{"a": 2}').invoke() == 3
    assert registry.validate("convert", '{"value": 1, "to": "m"}').invoke() == 1.0
    assert len(load_registry([])) == 0


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("registry_fixture_tools.add", "expected 'package.module:function'"),
        ("registry_fixture_tools:", "expected 'package.module:function'"),
        (":add", "expected 'package.module:function'"),
        ("registry_fixture_nowhere:add", "no module named 'registry_fixture_nowhere'"),
        ("registry_fixture_tools.sub:add", "no module named 'registry_fixture_tools.sub'"),
        ("registry_fixture_broken:f", "importing 'registry_fixture_broken' failed: RuntimeError: boom at import"),
        ("registry_fixture_bad_dep:f", "importing 'registry_fixture_bad_dep' failed: .*missing_dependency"),
        ("registry_fixture_tools:subtract", "'registry_fixture_tools' has no attribute 'subtract'"),
        ("registry_fixture_tools:Units.nope", "has no attribute 'Units.nope'"),
        ("registry_fixture_tools:PI", "'PI' is a float, not callable"),
        ("registry_fixture_tools:untyped", "tool entry 'registry_fixture_tools:untyped': .*'x' has no type hint"),
    ],
)
def test_load_registry_errors_name_the_entry(tool_module, entry, expected):
    with pytest.raises(ToolRegistrationError, match=expected):
        load_registry([entry])


def test_load_registry_refuses_the_same_function_twice(tool_module):
    with pytest.raises(ToolRegistrationError, match="'add' is already registered"):
        load_registry([f"{tool_module}:add", f"{tool_module}:add"])


# Arguments a model might plausibly produce: right and wrong keys, JSON values of every type.
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20) | st.floats(-3, 20, allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["city", "zip_code"]), inner),
    max_leaves=6,
)
_KEYS = ["traveller", "nights", "address", "cabin", "tags", "budget_usd", "seat"]


@settings(deadline=None)  # correctness, not speed: a loaded CI machine took 500 ms for one example
@given(
    st.dictionaries(st.sampled_from(_KEYS), _JSON_VALUES | st.sampled_from(["economy", "business", "12345"]))
    | st.builds(lambda nights: {**GOOD, "nights": nights}, st.integers(-1, 16) | st.floats(-1, 16, allow_nan=False))
)
def test_registry_accepts_exactly_what_the_verifier_passes(arguments):
    """No pydantic-only rule in book_trip, so the gate and the executor must never disagree."""
    registry = ToolRegistry()
    registry.register(book_trip)
    raw = json.dumps(arguments)
    verdict = ToolCallVerifier(registry.tools()).verify(Candidate(tool_calls=(ToolCall("book_trip", raw),)))
    try:
        registry.validate("book_trip", raw)
        accepted = True
    except ToolValidationError:
        accepted = False
    assert accepted == verdict.passed, (raw, verdict.reasons)
