"""What the worst requests `policies.schema_limits` accepts cost wherever schemas are processed. A table, not a test.

For each limit, the largest request of a plausible shape that still passes (found by search, so the figures
follow the limits if they change), then two realistic tool schemas and costs no limit bounds (array item
counts, which compile in milliseconds, and adjacent overlapping counted repeats in a pattern, which do not).
A request of many tools is compiled the way a forced `tool_choice` sends it to the engine: one array-of-calls
schema with an `anyOf` branch per tool. Columns, median ms over --repeats runs:

- limits:     `check_request_limits`, the gateway's first look at a request's schemas.
- jsonschema: meta-schema check of each schema + validator construction + one validation of a matching
              instance (the gateway).
- ebnf:       `xgrammar.Grammar.from_json_schema`, schema -> grammar, the CPU-only half of what the engine does.
- compile:    `GrammarCompiler.compile_json_schema` with the tokenizer of --model (cache off): what vLLM does
              for a schema it has not seen. Skipped, with a note, when that model is not in the model cache.
- compile cpu: the same compile in CPU time of this process (all its threads): on a loaded machine wall time
              swings with the load, this does not; on idle cores wall time is about half of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import xgrammar
from jsonschema import Draft202012Validator
from tqdm import tqdm

from policies.schema_limits import DEFAULT_SCHEMA_LIMITS, InvalidSchemaError, check_request_limits
from policies.tool_choice import ForcedTools, forced_tool_schema

SMOLLM2 = "smollm2-135m-instruct"


class Case(NamedTuple):
    name: str
    schema: dict[str, Any]  # what the engine compiles
    instance: Any  # one value valid under ``schema``, for the validation half of the jsonschema column
    request: tuple[dict[str, Any], ...] = ()  # the schemas the gateway checks, when not just ``schema``

    @property
    def checked(self) -> tuple[dict[str, Any], ...]:
        return self.request or (self.schema,)


def _largest_accepted(build: Callable[[int], Case]) -> Case:
    """The case for the largest ``n`` that `check_request_limits` accepts (doubling, then bisection)."""

    def accepted(n: int) -> bool:
        try:
            check_request_limits(build(n).checked)
        except InvalidSchemaError:
            return False
        return True

    low, high = 1, 2
    while accepted(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if accepted(middle) else (low, middle)
    return build(low)


def _deep(levels: int) -> Case:
    schema: dict[str, Any] = {"type": "string"}
    instance: Any = "leaf"
    for _ in range(levels):
        schema = {"type": "object", "properties": {"child": schema, "label": {"type": "string"}}, "required": ["child"]}
        instance = {"child": instance}
    return Case(f"max_depth: {levels} nested objects", schema, instance)


def _enum(values: int) -> Case:
    codes = [f"code-{i:05d}" for i in range(values)]
    schema = {"type": "object", "properties": {"code": {"enum": codes}}, "required": ["code"]}
    return Case(f"max_enum_values: enum of {values}", schema, {"code": codes[-1]})


def _many_objects(objects: int) -> Case:
    fields = {f"f{j}": {"type": "string"} for j in range(48)}
    members = {f"o{i}": {"type": "object", "properties": fields} for i in range(objects)}
    schema = {"type": "object", "properties": members}
    return Case(f"max_nodes: {objects} objects x 48 props", schema, {"o0": {"f0": "x"}})


def _wide(properties: int) -> Case:
    kinds = ["string", "integer", "boolean"]
    props = {f"p{i}": {"type": kinds[i % 3]} for i in range(properties)}
    samples = {"string": "x", "integer": 1, "boolean": True}
    schema = {"type": "object", "properties": props, "required": [f"p{i}" for i in range(0, properties, 2)]}
    instance = {f"p{i}": samples[kinds[i % 3]] for i in range(0, properties, 2)}
    return Case(f"max_properties: {properties} props", schema, instance)


def _long_pattern(words: int) -> Case:
    alternatives = [f"w{i:04d}" for i in range(words)]
    pattern = f"^({'|'.join(alternatives)})(-[a-z0-9]+)*$"
    return Case(f"max_pattern_chars: {len(pattern)} chars", {"type": "string", "pattern": pattern}, "w0000-ab")


def _counted_pattern(count: int) -> Case:
    return Case(f"max_pattern_repeat: ^.{{0,{count}}}$", {"type": "string", "pattern": f"^.{{0,{count}}}$"}, "abc")


def _nested_pattern(count: int) -> Case:
    pattern = f"^(([a-z]{{1,{count}}}-){{{count}}})$"
    return Case(f"max_pattern_repeat: {pattern}", {"type": "string", "pattern": pattern}, "ab-" * count)


def _length_bounds(parts: int) -> Callable[[int], Case]:
    """Strings with ``parts`` distinct maxLengths, the largest ``n``: distinct bounds do not share work."""

    def build(n: int) -> Case:
        bounds = [n - i for i in range(parts)]
        props = {f"s{i}": {"type": "string", "maxLength": bound} for i, bound in enumerate(bounds)}
        shown = f"maxLength {n}" if parts == 1 else f"{parts} maxLengths {bounds[-1]}-{n}"
        return Case(f"max_total_length_bounds: {shown}", {"type": "object", "properties": props}, {"s0": "x"})

    return build


def _tools(props: int) -> Case:
    """As many tools as a request may bring, of ``props`` string parameters each, compiled as a forced tool
    choice: the most ``anyOf`` branches, which is what makes that grammar grow faster than linearly."""
    count = DEFAULT_SCHEMA_LIMITS.max_request_schemas
    params = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(props)}}
    tools = [{"type": "function", "function": {"name": f"tool_{i:03d}", "parameters": params}} for i in range(count)]
    schema = forced_tool_schema(tools, ForcedTools(function_name=None), parallel=True)
    instance = [{"name": "tool_000", "arguments": {"p0": "x"}}]
    return Case(f"max_request_nodes: {count} tools x {props} props", schema, instance, (params,) * count)


WEATHER = Case(
    "tool: get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    {"city": "Oslo", "unit": "c"},
)

BOOK_TRIP = Case(
    "tool: book_trip",
    {
        "type": "object",
        "properties": {
            "origin": {"type": "string", "pattern": r"^[A-Z]{3}$"},
            "destination": {"type": "string", "pattern": r"^[A-Z]{3}$"},
            "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
            "cabin": {"enum": ["economy", "premium", "business", "first"]},
            "travellers": {
                "type": "array",
                "minItems": 1,
                "maxItems": 9,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": 80},
                        "age": {"type": "integer", "minimum": 0, "maximum": 120},
                        "email": {"type": "string", "pattern": r"^[\w.+-]+@([\w-]+\.)+[\w-]{2,}$"},
                    },
                    "required": ["name", "age"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["origin", "destination", "date", "travellers"],
        "additionalProperties": False,
    },
    {"origin": "OSL", "destination": "LIS", "date": "2025-06-01", "travellers": [{"name": "A", "age": 30}]},
)


# Array item counts look like string lengths (a counted repeat in the grammar) but compile in milliseconds,
# so no limit counts them; twenty distinct ones show it.
_ARRAYS = {f"a{n}": {"type": "array", "items": {"type": "string"}, "maxItems": n} for n in range(61, 81)}
ITEM_COUNTS = Case("not bounded: 20 maxItems 61-80", {"type": "object", "properties": _ARRAYS}, {"a61": ["x"]})

# Counted repeats that can hand characters to each other make xgrammar's regex compile expensive (16 of
# {0,16} take ~20 s of CPU) while staying within every pattern limit; re runs them in polynomial time, so
# regex_safety accepts them. Not bounded yet: the row shows the cost.
ADJACENT_REPEATS = Case(
    "not bounded: ^([a-z]{0,64}){4 adjacent}$",
    {"type": "string", "pattern": "^" + "[a-z]{0,64}" * 4 + "$"},
    "abc",
)


def _jsonschema(case: Case) -> bool:
    for schema in case.checked:
        Draft202012Validator.check_schema(schema)
    return Draft202012Validator(case.schema).is_valid(case.instance)


def _compiler(model: str) -> tuple[xgrammar.GrammarCompiler | None, str]:
    """A compiler over ``model``'s tokenizer from the model cache, or None and why not."""
    from cluster.store.models import is_prepared, model_dir

    if not is_prepared(model):
        return None, f"compile columns skipped: {model} is not prepared (`cascade models prepare`)"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir(model))
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer)
    return xgrammar.GrammarCompiler(info, cache_enabled=False), f"compile: {model} tokenizer, vocab {info.vocab_size}"


def _median_ms(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``repeats`` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        run()
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def _time_case(case: Case, compiler: xgrammar.GrammarCompiler | None, repeats: int) -> list[float]:
    text = json.dumps(case.schema)
    row = [
        _median_ms(lambda: check_request_limits(case.checked), repeats)[0],
        _median_ms(lambda: _jsonschema(case), repeats)[0],
        _median_ms(lambda: xgrammar.Grammar.from_json_schema(text), repeats)[0],
    ]
    if compiler is not None:
        row.extend(_median_ms(lambda: compiler.compile_json_schema(text), repeats))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    parser.add_argument("--model", default=SMOLLM2, help="prepared model whose tokenizer the compile columns use")
    args = parser.parse_args()

    builders = [_deep, _enum, _many_objects, _wide, _long_pattern, _counted_pattern, _nested_pattern,
                *(_length_bounds(parts) for parts in (1, 2, 4, 8)), _tools]
    cases = [_largest_accepted(build) for build in tqdm(builders, desc="largest accepted requests", unit="limit")]
    cases += [WEATHER, BOOK_TRIP, ITEM_COUNTS, ADJACENT_REPEATS]
    compiler, compiler_note = _compiler(args.model)

    rows = [(case, _time_case(case, compiler, args.repeats)) for case in tqdm(cases, desc="timing", unit="schema")]

    print(f"\nlimits: {DEFAULT_SCHEMA_LIMITS}")
    print(compiler_note)
    columns = ["limits", "jsonschema", "ebnf"] + (["compile", "compile cpu"] if compiler is not None else [])
    print(f"{'request (largest accepted)':44s} {'bytes':>8s} " + " ".join(f"{c + ' ms':>15s}" for c in columns))
    for case, row in rows:
        size = sum(len(json.dumps(schema)) for schema in case.checked)
        print(f"{case.name:44s} {size:8d} " + " ".join(f"{ms:15.2f}" for ms in row))
    for case in cases:
        if not _jsonschema(case):
            print(f"note: the sample instance of {case.name!r} does not match its schema")


if __name__ == "__main__":
    main()
