"""Size and shape limits on client-supplied JSON Schemas, checked before anything else reads them.

A schema is client input that three components take on trust: jsonschema's meta-schema check and
validator recurse over it (a deep enough schema is a ``RecursionError``, not a 400), xgrammar turns it
into a grammar whose compile time grows with its nodes, enum values, patterns and string length bounds,
and the gateway matches its ``pattern``s against model output, which only a linear-time engine does safely:
every pattern must compile under RE2 (``policies.regex_safety``), which refuses what would backtrack.
The check is one iterative pass that stops at the first bound broken, so it is safe to run on anything a
JSON parser produced.

The unit is the request (``check_request_limits``): under a forced ``tool_choice`` every tool's parameters
compile into one grammar, and the gateway validates all of them, so the summed bounds are budgets for the
request as a whole; ``check_schema_limits`` is the same check for a request of one schema.

The walk treats every object as a possible subschema, wherever it sits: ``$ref`` may point anywhere
in the document (into ``default``, ``enum`` or an unknown keyword), and the validator then applies what
it finds there as a schema. A ``pattern`` key in an example value is checked too; that is the price.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.regex_safety import UnsupportedPatternError, repeat_count

__all__ = [
    "DEFAULT_SCHEMA_LIMITS",
    "InvalidSchemaError",
    "SchemaLimits",
    "check_request_limits",
    "check_schema_limits",
]


class InvalidSchemaError(ValueError):
    """A client-supplied schema (response format or tool parameters) is not a valid JSON Schema,
    or is one this gateway will not run (over a ``SchemaLimits`` bound, or a pattern RE2 refuses).

    This is a client error: the gateway maps it to HTTP 400 instead of running the cascade.
    Defined here rather than in ``policies.verifiers`` (which re-exports it) because the verifiers
    import this module: the error has to live on the lower layer.
    """


@dataclass(frozen=True)
class SchemaLimits:
    """Upper bounds on the schemas of one request; each is inclusive (a schema exactly at a bound passes).

    Costs quoted are from ``bench/experiments/bench_schema_limits.py`` on a shared, loaded 2-CPU box, with
    SmolLM2's tokenizer (49k tokens) for xgrammar; CPU time is quoted where wall time swung 2-5x with the
    load. Gemma 3's tokenizer (262k tokens) makes xgrammar's figures 2-5x larger, 5x for length bounds.
    For reference, OpenAI's Structured Outputs allows 10 levels of object nesting, 5000 properties and
    1000 enum values.

    Per schema:

    - ``max_depth`` = 32: nesting of objects and arrays, the root counting 1. Each level of ``properties``
      costs two (the map and the subschema), so 32 allows 15 levels of nested objects, more than OpenAI,
      and keeps jsonschema's recursion (a few frames a level) far under Python's limit of 1000.
    - ``max_nodes`` = 2000: objects and arrays in the whole document. Cost is linear in it and paid per
      new schema: ~0.2 ms a node for jsonschema's meta-schema check (synchronous, in the gateway) and
      ~0.25 ms a node for xgrammar to compile the grammar. Real schemas are tens to a few hundred nodes;
      2000 keeps ~5x headroom and a single schema's worst case near 0.4 s + 0.5 s (2.5x that at 5000).
    - ``max_pattern_chars`` = 512: length of each ``pattern`` / ``patternProperties`` key. Real patterns
      (dates, ids, e-mail) are under 200; the bound also caps what compiling each one costs.
    - ``max_pattern_repeat`` = 256: ``regex_safety.repeat_count`` of one pattern, its quantifiers' counts
      summed and nested ones multiplied (``{n,m}`` counts m, ``{n,}`` n, ``?``, ``*`` and ``+`` 1).
      xgrammar expands counted repeats, in time about quadratic in the count: ``^.{0,256}$`` ~25 ms,
      ``^.{0,1000}$`` ~300 ms, ``^[a-z]{1,10000}$`` over 6 s, all from patterns of under 20 characters,
      which ``max_pattern_chars`` cannot catch; nesting multiplies, so ``^(([a-z]{1,64}-){64})$`` (4096)
      takes ~6.5 s of CPU and ``^(([a-z]{1,16}-){16})$`` (256) ~0.35 s. 256 covers ``{1,255}`` (DNS
      names) and every fixed-format id. Not bounded yet: counted repeats that can hand characters to each
      other compile slowly within this bound (``[a-z]{0,64}`` four times in a row ~2.2 s of CPU, sixteen
      ``[a-z]{0,16}`` ~20 s), though RE2 matches them in linear time. RE2 itself refuses counts over 1000,
      nested ones multiplied.
    - ``max_properties`` = 512: entries of one ``properties`` map, as OpenAI-sized objects go. A map is
      checked and compiled as one unit (~100 ms of meta-schema check at the bound), and a model asked to
      fill 512 fields of one object is not producing a usable answer anyway.

    Per request, summed over all its schemas (for a lone schema, over that schema):

    - ``max_enum_values`` = 1024: ``enum`` entries plus ``const``s. Cheap even at the bound (~8 ms to
      compile); past ~1000 choices an enum is a lookup table, not a schema.
    - ``max_total_pattern_chars`` = 4096: characters of the distinct patterns. Without it the per-pattern
      bounds multiply: one ``patternProperties`` object may hold any number of keys, and a request any
      number of tools, each pattern one that RE2 and xgrammar both have to compile.
      4096 is eight patterns at ``max_pattern_chars`` or ~150 ordinary ones; repeated patterns count once.
    - ``max_total_length_bounds`` = 100: ``minLength`` / ``maxLength`` of the distinct length-bounded
      strings, summed (each counts its larger bound; a (minLength, maxLength) pair seen before is free).
      This is the dearest thing xgrammar compiles: it precomputes a token mask for every position of a
      bounded string, ~10 ms of CPU per unit of bound up to ~190, where it levels off at ~2 s. Identical
      pairs share that work wherever they sit; distinct pairs do not (twenty maxLengths 61-80 took minutes).
      The worst accepted request is one string at the bound (~1 s of CPU; splitting the sum over 2, 4 or 8
      distinct bounds costs less); 100 admits a ``maxLength: 100`` field or a handful of short ones
      (64 + 20 + 16) and refuses ``maxLength: 255`` and up, which cost twice as much. Unbounded strings,
      ``minLength: 0`` and array ``minItems`` / ``maxItems`` (twenty distinct counts: ~20 ms) are not counted.
    - ``max_request_nodes`` = 2000: objects and arrays across the schemas, each schema counting at least
      one. The gateway's meta-schema checks cost ~0.2 ms a node, and the grammar of a forced tool choice
      (one ``anyOf`` branch per tool) grows faster than linearly in tools: 318 real BFCL tools (2000 nodes)
      ~0.6 s of CPU, 650 (4000) ~1.9 s; the worst accepted, 129 tools of 13 parameters, ~0.5 s of checks
      and ~0.45 s of CPU to compile.
      Equal to ``max_nodes``, so a request's tools together get what one schema may have; the largest
      request in BFCL has 236 nodes (37 tools).
    - ``max_request_schemas`` = 129: schemas in the request, OpenAI's 128 tools plus a response schema.
      Nodes alone would let 2000 one-node tools through, a grammar that takes ~3 s of CPU to compile.
    """

    max_depth: int = 32
    max_nodes: int = 2000
    max_pattern_chars: int = 512
    max_pattern_repeat: int = 256
    max_properties: int = 512
    max_enum_values: int = 1024
    max_total_pattern_chars: int = 4096
    max_total_length_bounds: int = 100
    max_request_nodes: int = 2000
    max_request_schemas: int = 129


DEFAULT_SCHEMA_LIMITS = SchemaLimits()

_CONTAINERS = (Mapping, list, tuple)


def check_request_limits(
    schemas: Sequence[Any], limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS, *, labels: Sequence[str] | None = None
) -> None:
    """Check all the schemas of one request, each against the per-schema bounds and together against the
    per-request ones; raise ``InvalidSchemaError`` naming the schema, the bound and where.

    Call it once per request, before anything else reads the schemas, with every schema the request brings:
    each tool's ``function.parameters`` and the ``response_format`` schema. ``labels`` names the schemas
    in errors (``"tool #2 ('search')"``; default ``"schema #2"``); it must be as long as ``schemas``.
    Iterative and counting as it goes, so a 100k-deep or 1M-wide document fails fast, never with
    ``RecursionError``. Nodes are counted when discovered: at most ``max_nodes`` are ever queued.
    """
    if labels is not None and len(labels) != len(schemas):
        raise ValueError(f"{len(labels)} labels for {len(schemas)} schemas")
    if len(schemas) > limits.max_request_schemas:
        found = f"{len(schemas)} schemas (tools plus response format)"
        raise InvalidSchemaError(f"request over limit max_request_schemas={limits.max_request_schemas}: {found}")
    walk = _Walk(limits)
    for i, schema in enumerate(schemas):
        try:
            walk.run(schema)
        except InvalidSchemaError as exc:
            label = labels[i] if labels is not None else f"schema #{i}"
            raise InvalidSchemaError(f"{label}: {exc}") from exc


def check_schema_limits(schema: Any, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS) -> None:
    """``check_request_limits`` for a request of this one schema, with errors not prefixed by a label."""
    _Walk(limits).run(schema)


class _Walk:
    """The running totals of one request: nodes, enum values, distinct patterns and length bounds."""

    def __init__(self, limits: SchemaLimits) -> None:
        self._limits = limits
        self._nodes = 0  # in the schema being walked
        self._request_nodes = 0
        self._enum_values = 0
        self._pattern_chars = 0
        self._patterns: set[str] = set()
        self._length_total: float = 0
        self._length_bounds: set[tuple[float | None, float | None]] = set()
        self._unevaluated: str | None = None  # where the schema being walked has these keywords first
        self._pattern_properties: str | None = None

    def run(self, schema: Any) -> None:
        """Walk one more schema of the request."""
        self._nodes = 0
        self._unevaluated = self._pattern_properties = None
        self._count("")  # the root, container or not: every schema costs at least one node
        if not isinstance(schema, _CONTAINERS):
            return
        stack: list[tuple[Any, str, int]] = [(schema, "", 1)]
        while stack:
            node, where, depth = stack.pop()
            if isinstance(node, Mapping):
                self._keywords(node, where)
                children: Iterable[tuple[Any, Any]] = node.items()
            else:
                children = enumerate(node)
            for key, child in children:
                if isinstance(child, _CONTAINERS):
                    inner = f"{where}/{_escape(key)}"
                    self._count(inner)
                    if depth + 1 > self._limits.max_depth:
                        raise _over("max_depth", self._limits.max_depth, inner, f"nesting depth {depth + 1}")
                    stack.append((child, inner, depth + 1))

    def _count(self, where: str) -> None:
        limits = self._limits
        self._nodes += 1
        self._request_nodes += 1
        if self._nodes > limits.max_nodes:
            raise _over("max_nodes", limits.max_nodes, where, "too many objects and arrays")
        if self._request_nodes > limits.max_request_nodes:
            found = f"{self._request_nodes} objects and arrays in the request so far"
            raise _over("max_request_nodes", limits.max_request_nodes, where, found)

    def _keywords(self, node: Mapping[Any, Any], where: str) -> None:
        """Check the keywords of one object, read as a subschema whether or not it is one."""
        limits = self._limits
        properties = node.get("properties")
        if isinstance(properties, Mapping) and len(properties) > limits.max_properties:
            raise _over("max_properties", limits.max_properties, f"{where}/properties", f"{len(properties)} properties")
        enum = node.get("enum")
        self._enum_values += (len(enum) if isinstance(enum, (list, tuple)) else 0) + ("const" in node)
        if self._enum_values > limits.max_enum_values:
            found = f"{self._enum_values} enum/const values so far"
            raise _over("max_enum_values", limits.max_enum_values, where, found)
        self._length_bounds_of(node, where)
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            self._pattern(pattern, f"{where}/pattern")
        pattern_properties = node.get("patternProperties")
        if isinstance(pattern_properties, Mapping):
            for key in pattern_properties:
                if isinstance(key, str):
                    self._pattern(key, f"{where}/patternProperties/{_escape(key)}")
        self._unevaluated_with_patterns(node, where)
        if where and isinstance(node.get("$schema"), str):
            raise InvalidSchemaError(
                f"'{_show(where + '/$schema')}': a `$schema` is allowed only at the schema's root: jsonschema "
                "validates a subschema of another dialect with its stock validator, whose patterns backtrack"
            )

    def _unevaluated_with_patterns(self, node: Mapping[Any, Any], where: str) -> None:
        """jsonschema's ``unevaluatedProperties`` matches ``patternProperties`` with ``re``, not RE2, anywhere
        in the document (through ``$ref``, ``allOf``...): a schema may have one of the two, not both."""
        if "unevaluatedProperties" in node and self._unevaluated is None:
            self._unevaluated = f"{where}/unevaluatedProperties"
        if isinstance(node.get("patternProperties"), Mapping) and self._pattern_properties is None:
            self._pattern_properties = f"{where}/patternProperties"
        if self._unevaluated is not None and self._pattern_properties is not None:
            raise InvalidSchemaError(
                f"'{_show(self._unevaluated)}' with '{_show(self._pattern_properties)}' in one schema is not "
                "supported: the validator would match those patterns with a backtracking engine"
            )

    def _length_bounds_of(self, node: Mapping[Any, Any], where: str) -> None:
        """Count a (minLength, maxLength) pair the first time it is seen, as its larger bound."""
        pair = (_number(node.get("minLength")), _number(node.get("maxLength")))
        if pair in self._length_bounds:
            return
        self._length_bounds.add(pair)
        low, high = (bound or 0 for bound in pair)
        self._length_total += max(low, high, 0)
        if self._length_total > self._limits.max_total_length_bounds:
            key = "maxLength" if high >= low else "minLength"
            found = f"distinct string length bounds summing to {self._length_total} so far"
            raise _over("max_total_length_bounds", self._limits.max_total_length_bounds, f"{where}/{key}", found)

    def _pattern(self, pattern: str, where: str) -> None:
        """Check each distinct pattern once: repeats of a date pattern are common and cost nothing."""
        if pattern in self._patterns:
            return
        self._pattern_chars += len(pattern)
        if self._pattern_chars > self._limits.max_total_pattern_chars:
            found = f"{self._pattern_chars} characters of distinct patterns so far"
            raise _over("max_total_pattern_chars", self._limits.max_total_pattern_chars, where, found)
        _check_pattern(pattern, where, self._limits)
        self._patterns.add(pattern)


def _check_pattern(pattern: str, where: str, limits: SchemaLimits) -> None:
    if len(pattern) > limits.max_pattern_chars:
        raise _over("max_pattern_chars", limits.max_pattern_chars, where, f"a pattern of {len(pattern)} characters")
    try:
        repeats = repeat_count(pattern)  # compiles it under RE2 first
    except UnsupportedPatternError as exc:
        raise InvalidSchemaError(
            f"invalid regular expression at '{_show(where)}': {exc} (see docs/json-schema-patterns.md): {pattern!r}"
        ) from exc
    if repeats > limits.max_pattern_repeat:
        raise _over("max_pattern_repeat", limits.max_pattern_repeat, where, f"quantifier counts summing to {repeats}")


def _number(value: Any) -> float | None:
    """A finite JSON number as a bound, else None: the meta-schema check refuses the rest later, and a NaN
    counted here would make every later sum compare false."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if isinstance(value, int) or math.isfinite(value) else None


def _over(limit: str, value: int, where: str, found: str) -> InvalidSchemaError:
    return InvalidSchemaError(f"schema over limit {limit}={value} at '{_show(where)}': {found}")


def _escape(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")  # RFC 6901


def _show(where: str) -> str:
    """The same spelling as the verifiers' meta-schema errors: 'properties/a', '<root>'."""
    return where.removeprefix("/") or "<root>"
