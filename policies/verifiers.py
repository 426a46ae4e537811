"""Deterministic verifiers: does an answer satisfy the contract the client asked for?

Verifiers are the cascade's hard evidence. Token probabilities say how sure the model was;
a verifier says whether the answer is usable (parses, matches the schema, calls a real tool
with valid arguments). Every verifier returns a ``Verdict``; the confidence and escalation
policies read verdicts and never call verifiers themselves, so they stay pure and cheap.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable

from policies.regex_safety import linear_time
from policies.schema_limits import InvalidSchemaError, check_request_limits

__all__ = [
    "Candidate",
    "InvalidSchemaError",
    "SchemaVerifier",
    "ToolCall",
    "ToolCallVerifier",
    "Verdict",
    "Verifier",
    "all_verified",
    "any_failed",
    "safe_verify",
    "validate_tool_schemas",
]

# Reasons end up in logs and repair prompts; a validation message can embed a huge instance.
_MAX_REASON_CHARS = 300
# Compiled validators kept per process (a gateway replica): each holds its schema, at most about a megabyte
# (the request body limit), so the cache stays bounded.
_COMPILED_SCHEMAS_KEPT = 256
_COMBINATORS = ("allOf", "anyOf", "oneOf")


@dataclass(frozen=True)
class Verdict:
    """Outcome of one verifier on one answer.

    ``score`` is a graded signal in [0, 1] (e.g. the fraction of tool calls that were valid)
    for policies that weigh evidence; ``passed`` is the gate. ``score is None`` means
    *unverified*: the verifier crashed or timed out, so there is no evidence either way
    (see ``policies.confidence`` for how that is treated).
    """

    name: str
    score: float | None
    passed: bool
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.score is None:
            if self.passed:
                raise ValueError("an unverified verdict (score=None) cannot be passed")
        elif not 0.0 <= self.score <= 1.0:
            raise ValueError(f"verdict score must be in [0, 1], got {self.score}")

    @classmethod
    def unverified(cls, name: str, reason: str) -> Verdict:
        """The verifier could not run to completion (crash, timeout): no evidence."""
        return cls(name=name, score=None, passed=False, reasons=(reason,))

    @property
    def verified(self) -> bool:
        return self.score is not None

    @property
    def failed(self) -> bool:
        """Verifiably wrong: the verifier ran and said no (an unverified verdict is not a failure)."""
        return self.verified and not self.passed


def any_failed(verdicts: Iterable[Verdict]) -> bool:
    return any(verdict.failed for verdict in verdicts)


def all_verified(verdicts: Iterable[Verdict]) -> bool:
    return all(verdict.verified for verdict in verdicts)


class ToolCall(NamedTuple):
    """One OpenAI-style tool call; ``arguments`` is the raw JSON string the model produced."""

    name: str
    arguments: str


@dataclass(frozen=True)
class Candidate:
    """An answer to verify: its text content and any tool calls it made."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Candidate:
        """The candidate of an OpenAI assistant message (`content`, `tool_calls`)."""
        calls = tuple(ToolCall(c["function"]["name"], c["function"].get("arguments") or "")
                      for c in message.get("tool_calls") or ())
        return cls(text=message.get("content") or "", tool_calls=calls)


class Verifier(ABC):
    """A deterministic check of one aspect of an answer. Built once per request from its spec."""

    name: ClassVar[str]

    @abstractmethod
    def verify(self, candidate: Candidate) -> Verdict:
        """Check ``candidate``; raises ``InvalidSchemaError`` only for a broken spec."""


def safe_verify(verifier: Verifier, candidate: Candidate) -> Verdict:
    """Run ``verifier``, turning any exception into an unverified verdict.

    A verifier bug must not fail the request, and must not count as the model's fault either.
    Timeouts are the caller's job (it owns the clock); it should use ``Verdict.unverified`` too.
    """
    try:
        return verifier.verify(candidate)
    except Exception as exc:  # noqa: BLE001 - any crash means "no evidence", by design
        return Verdict.unverified(verifier.name, _clip(f"verifier crashed: {type(exc).__name__}: {exc}"))


class SchemaVerifier(Verifier):
    """The text must be strict JSON (no NaN/Infinity) that validates against ``schema``."""

    name = "schema"

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        _check_limits([schema], ["response schema"])
        self._validator = _compile(schema, "response schema")

    def verify(self, candidate: Candidate) -> Verdict:
        try:
            instance = _loads_strict(candidate.text)
        except ValueError as exc:
            return _failed(self.name, 0.0, [f"not valid JSON: {exc}"])
        errors = _errors(self._validator, instance, "response schema")
        if errors:
            return _failed(self.name, 0.0, [_describe(e) for e in errors])
        return Verdict(self.name, 1.0, True)


class _CompiledTool(NamedTuple):
    validator: Validator
    known_args: frozenset[str] | None  # None: the schema itself decides which extra args are allowed


class ToolCallVerifier(Verifier):
    """Every call must name a declared function with arguments valid for its parameter schema.

    Unknown arguments are rejected even when the schema omits ``additionalProperties: false``:
    models hallucinate plausible argument names and most tool executors crash on them. A schema
    that explicitly declares ``additionalProperties`` or ``patternProperties`` is respected.
    ``require_call`` mirrors ``tool_choice="required"``. Score = fraction of valid calls.
    """

    name = "tool_calls"

    def __init__(self, tools: Sequence[Mapping[str, Any]], require_call: bool = False) -> None:
        self._tools = _compile_tools(tools)
        self._require_call = require_call

    def verify(self, candidate: Candidate) -> Verdict:
        calls = candidate.tool_calls
        if not calls:
            if self._require_call:
                return _failed(self.name, 0.0, ["no tool call made but one is required"])
            return Verdict(self.name, 1.0, True)
        reasons: list[str] = []
        valid = 0
        for name, arguments in calls:
            problems = self._check_call(name, arguments)
            valid += not problems
            reasons.extend(problems)
        if reasons:
            return _failed(self.name, valid / len(calls), reasons)
        return Verdict(self.name, 1.0, True)

    def _check_call(self, name: str, arguments: str) -> list[str]:
        tool = self._tools.get(name)
        if tool is None:
            return [f"unknown function '{name}' (declared: {', '.join(sorted(self._tools)) or 'none'})"]
        try:
            args = _loads_strict(arguments)
        except ValueError as exc:
            return [f"{name}: arguments are not valid JSON: {exc}"]
        if not isinstance(args, dict):
            return [f"{name}: arguments must be a JSON object, got {type(args).__name__}"]
        problems = []
        if tool.known_args is not None:
            problems += [f"{name}: unknown argument '{a}'" for a in sorted(set(args) - tool.known_args)]
        problems += [f"{name}: {_describe(e, 'argument')}" for e in _errors(tool.validator, args, name)]
        return problems


def validate_tool_schemas(tools: Sequence[Mapping[str, Any]]) -> None:
    """Raise ``InvalidSchemaError`` naming the first malformed tool definition, or the tool at which the
    tools together run past the request's ``SchemaLimits`` (gateway -> 400)."""
    _compile_tools(tools)


def _compile_tools(tools: Sequence[Mapping[str, Any]]) -> dict[str, _CompiledTool]:
    declared: dict[str, tuple[str, Mapping[str, Any]]] = {}  # name -> (label, parameters)
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        name = fn.get("name") if isinstance(fn, Mapping) else None
        label = f"tool #{i} ({name!r})" if isinstance(name, str) else f"tool #{i}"
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(fn, Mapping):
            raise InvalidSchemaError(f"{label}: expected {{'type': 'function', 'function': {{...}}}}")
        if not isinstance(name, str) or not name:
            raise InvalidSchemaError(f"{label}: function.name must be a non-empty string")
        if name in declared:
            raise InvalidSchemaError(f"{label}: duplicate function name")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, Mapping) or params.get("type", "object") != "object":
            raise InvalidSchemaError(f"{label}: parameters must be a JSON Schema of type 'object'")
        declared[name] = (label, params)
    _check_limits([params for _, params in declared.values()], [label for label, _ in declared.values()])
    return {
        name: _CompiledTool(_compile(params, label), _known_args(params)) for name, (label, params) in declared.items()
    }


def _known_args(params: Mapping[str, Any]) -> frozenset[str] | None:
    if "additionalProperties" in params or "patternProperties" in params:
        return None
    branches = [params, *(b for c in _COMBINATORS for b in params.get(c, ()) if isinstance(b, Mapping))]
    return frozenset(k for b in branches for k in b.get("properties", {}))


def _check_limits(schemas: Sequence[Any], labels: Sequence[str]) -> None:
    """The size limits, checked before ``_compile``: the metaschema check recurses over a schema, so a deep
    one would crash it, and a ``pattern`` RE2 cannot run must never be matched against a model's output."""
    try:
        check_request_limits(schemas, labels=labels)
    except InvalidSchemaError as exc:
        raise InvalidSchemaError(_clip(str(exc))) from exc


def _compile(schema: Any, label: str) -> Validator:
    """Check ``schema`` (already within ``_check_limits``) against its metaschema (Draft 2020-12 unless
    ``$schema`` says otherwise).

    Format checking stays off: ``format`` is an annotation in 2020-12 and clients rarely mean it.
    Patterns are matched with RE2 (``regex_safety.linear_time``), in time linear in the answer.
    The gateway validates a request's schemas and the cascade then builds its verifiers from the same ones,
    and agents send the same tools again and again: compiled validators are kept by the schema's JSON text.
    """
    if not isinstance(schema, (Mapping, bool)):
        raise InvalidSchemaError(f"{label}: a schema must be a JSON object or boolean, got {type(schema).__name__}")
    return _compile_json(json.dumps(schema), label)


@functools.lru_cache(maxsize=_COMPILED_SCHEMAS_KEPT)
def _compile_json(schema_json: str, label: str) -> Validator:
    """``_compile`` of one schema's JSON text; a schema that fails raises, and failures are not kept."""
    schema = json.loads(schema_json)
    cls = linear_time(validator_for(schema, default=Draft202012Validator))
    try:
        cls.check_schema(schema, format_checker=cls.FORMAT_CHECKER)  # its `regex` format: RE2 compiles it
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "<root>"
        raise InvalidSchemaError(_clip(f"{label}: invalid JSON Schema at '{where}': {exc.message}")) from exc
    remote = _remote_ref(schema)
    if remote is not None:
        raise InvalidSchemaError(_clip(f"{label}: only local $ref ('#...') is allowed, got {remote!r}"))
    # An empty registry: jsonschema's default would fetch unknown URIs over the network (client-chosen URLs).
    return cls(schema, registry=Registry())


def _remote_ref(node: Any, budget: int = 10_000) -> str | None:
    """The first `$ref` / `$dynamicRef` that does not point inside the schema itself, if any."""
    stack = [node]
    while stack and budget > 0:
        budget -= 1
        current = stack.pop()
        if isinstance(current, Mapping):
            for key in ("$ref", "$dynamicRef"):
                ref = current.get(key)
                if isinstance(ref, str) and not ref.startswith("#"):
                    return ref
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return None


def _errors(validator: Validator, instance: Any, label: str) -> list[ValidationError]:
    try:
        errors = list(validator.iter_errors(instance))
    except Unresolvable as exc:  # $ref to nothing: found only while validating, still the schema's fault
        raise InvalidSchemaError(f"{label}: unresolvable $ref: {exc}") from exc
    return sorted(errors, key=lambda e: ([str(p) for p in e.absolute_path], e.message))


def _describe(error: ValidationError, what: str = "at") -> str:
    where = "/".join(str(p) for p in error.absolute_path)
    text = f"{what} '{where}': {error.message}" if where else error.message
    return _clip(text)


def _loads_strict(text: str) -> Any:
    """``json.loads`` that rejects NaN/Infinity (not JSON) and pathological nesting."""

    def reject(token: str) -> Any:
        raise ValueError(f"{token} is not valid JSON")

    try:
        return json.loads(text, parse_constant=reject)
    except RecursionError as exc:
        raise ValueError("nesting too deep") from exc


def _failed(name: str, score: float, reasons: Iterable[str]) -> Verdict:
    return Verdict(name, score, False, tuple(reasons))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."

