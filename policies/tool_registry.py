"""Validator-first tool execution, the pure half: typed Python functions as OpenAI tools.

A ``ToolRegistry`` turns annotated callables into tools. Each function's signature becomes a
pydantic model (``pydantic.create_model``; ``Annotated[..., Field(...)]`` constraints, ``Literal``
enums, nested models; a parameter with a default is optional) and that model's JSON Schema
becomes the tool's ``parameters``, with ``additionalProperties: false``.

``validate`` checks a model's tool call in two stages and returns a ``ValidatedCall`` only when
both pass:

1. the ``ToolCallVerifier`` built from the tool's own definition: exactly the check the cascade
   gates answers on, so whatever the verifier passed the registry accepts (types are JSON's:
   ``"3"`` is not an integer, ``3.0`` is);
2. the pydantic model, which converts JSON values into the annotated Python types (nested
   models, ``int`` from ``3.0``) and runs any custom validators a JSON Schema cannot express.

Running the function is a side effect and stays out of this module: ``ValidatedCall.invoke`` is a
plain call, for the gateway to run under its own timeout and thread.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticUndefined

from policies.verifiers import Candidate, InvalidSchemaError, ToolCall, ToolCallVerifier, validate_tool_schemas

__all__ = [
    "RegisteredTool",
    "ToolRegistrationError",
    "ToolRegistry",
    "ToolValidationError",
    "ValidatedCall",
    "load_registry",
]

# OpenAI's rule for function names.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_INPUT_CHARS = 80
_UNSUPPORTED_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional-only parameters cannot be passed by name",
    inspect.Parameter.VAR_POSITIONAL: "*args has no JSON Schema",
    inspect.Parameter.VAR_KEYWORD: "**kwargs has no JSON Schema",
}


class ToolRegistrationError(ValueError):
    """A function cannot be a tool (bad name, missing type hint, unsupported type), or a
    ``load_registry`` entry does not resolve to a function. A configuration error."""


class ToolValidationError(ValueError):
    """A model's tool call is unusable: unknown function, malformed JSON, wrong, unknown, missing
    or out-of-range arguments. ``problems`` name the argument each; ``str()`` joins them."""

    def __init__(self, tool: str, problems: Sequence[str]) -> None:
        self.tool = tool
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class RegisteredTool:
    """One registered function with its derived argument model and OpenAI tool definition."""

    name: str
    fn: Callable[..., Any]
    model: type[BaseModel]
    definition: Mapping[str, Any]  # {"type": "function", "function": {...}}; ToolRegistry.tools() hands out copies
    verifier: ToolCallVerifier
    param_of_field: Mapping[str, str]  # model field name -> the function's parameter name


@dataclass(frozen=True)
class ValidatedCall:
    """A tool call whose arguments passed validation: the function and its keyword arguments,
    already converted to the annotated Python types."""

    name: str
    fn: Callable[..., Any]
    kwargs: Mapping[str, Any]

    def invoke(self) -> Any:
        """Call the function. No timeout, thread or error handling here: that is the caller's."""
        return self.fn(**self.kwargs)


class ToolRegistry:
    """Named, typed functions exposed as OpenAI tools. Register at startup, then only read.

    ``register`` works as ``registry.register(fn)``, ``@registry.register`` and
    ``@registry.register(name=..., description=...)``, and returns the function unchanged.
    """

    def __init__(self) -> None:
        self._tools: dict[str, RegisteredTool] = {}

    @overload
    def register(self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None) -> Any: ...

    @overload
    def register(
        self, fn: None = None, *, name: str | None = None, description: str | None = None
    ) -> Callable[[Callable[..., Any]], Any]: ...

    def register(
        self, fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None
    ) -> Any:
        """Register ``fn`` under ``name`` (default ``fn.__name__``), described by ``description``
        (default: its docstring). Raises ``ToolRegistrationError``."""
        if fn is None:
            return lambda f: self.register(f, name=name, description=description)
        tool = _build_tool(fn, name, description)
        if tool.name in self._tools:
            raise ToolRegistrationError(f"tool '{tool.name}' is already registered")
        try:  # the whole tool list as a client would send it: names unique, every schema valid
            validate_tool_schemas([*(t.definition for t in self._tools.values()), tool.definition])
        except InvalidSchemaError as exc:
            raise ToolRegistrationError(f"tool '{tool.name}': {exc}") from exc
        self._tools[tool.name] = tool
        return fn

    def tools(self) -> list[dict[str, Any]]:
        """OpenAI tool definitions, in registration order (deep copies: callers may edit them)."""
        return [copy.deepcopy(dict(t.definition)) for t in self._tools.values()]

    def get(self, name: str) -> RegisteredTool:
        """The registered tool ``name``; ``KeyError`` if there is none."""
        return self._tools[name]

    def validate(self, name: str, arguments: str) -> ValidatedCall:
        """Check a tool call (``arguments``: the raw JSON string the model produced).

        Raises ``ToolValidationError`` whose problems name the function or argument at fault.
        """
        tool = self._tools.get(name)
        if tool is None:
            declared = ", ".join(self._tools) or "none"
            raise ToolValidationError(name, [f"unknown function '{name}' (declared: {declared})"])
        verdict = tool.verifier.verify(Candidate(tool_calls=(ToolCall(name, arguments),)))
        if not verdict.passed:
            raise ToolValidationError(name, verdict.reasons)
        try:
            validated = tool.model.model_validate_json(arguments)
        except ValidationError as exc:
            raise ToolValidationError(name, [_describe(name, e) for e in exc.errors()]) from exc
        kwargs = {param: getattr(validated, field) for field, param in tool.param_of_field.items()}
        return ValidatedCall(name=name, fn=tool.fn, kwargs=kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)


def load_registry(import_paths: Sequence[str]) -> ToolRegistry:
    """A registry of the functions named ``"package.module:function"`` (or ``module:Class.method``).

    Raises ``ToolRegistrationError`` naming the entry: malformed path, module not found or failing
    to import, attribute missing, not callable, or not usable as a tool.
    """
    registry = ToolRegistry()
    for entry in import_paths:
        fn = _resolve(entry)
        try:
            registry.register(fn)
        except ToolRegistrationError as exc:
            raise ToolRegistrationError(f"tool entry '{entry}': {exc}") from exc
    return registry


def _resolve(entry: str) -> Callable[..., Any]:
    module_name, sep, attr_path = entry.partition(":") if isinstance(entry, str) else ("", "", "")
    if not (sep and module_name and attr_path):
        raise ToolRegistrationError(f"tool entry {entry!r}: expected 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ToolRegistrationError(f"tool entry '{entry}': no module named '{exc.name}'") from exc
        raise ToolRegistrationError(f"tool entry '{entry}': importing '{module_name}' failed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the module's own import-time crash, reported as config error
        raise ToolRegistrationError(
            f"tool entry '{entry}': importing '{module_name}' failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise ToolRegistrationError(f"tool entry '{entry}': '{module_name}' has no attribute '{attr_path}'")
        target = getattr(target, part)
    if not callable(target):
        raise ToolRegistrationError(f"tool entry '{entry}': '{attr_path}' is a {type(target).__name__}, not callable")
    return target


def _build_tool(fn: Callable[..., Any], name: str | None, description: str | None) -> RegisteredTool:
    if not callable(fn):
        raise ToolRegistrationError(f"a tool must be callable, got {type(fn).__name__}")
    name = name if name is not None else getattr(fn, "__name__", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolRegistrationError(f"tool name {name!r} must match {_NAME.pattern} (pass name=...)")
    # fn is callable (checked above), so fn.__call__ exists: an instance whose __call__ is async is async too.
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            fn.__call__):  # type: ignore[operator]  # mypy misreads a Callable's `__call__` as not callable
        raise ToolRegistrationError(f"tool '{name}': async functions are not supported; register a sync wrapper")
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, ValueError) as exc:
        raise ToolRegistrationError(f"tool '{name}': cannot read its signature: {exc}") from exc

    fields: dict[str, Any] = {}
    param_of_field: dict[str, str] = {}
    for i, param in enumerate(signature.parameters.values()):
        if param.kind in _UNSUPPORTED_KINDS:
            raise ToolRegistrationError(f"tool '{name}': parameter '{param.name}': {_UNSUPPORTED_KINDS[param.kind]}")
        if param.annotation is inspect.Parameter.empty:
            raise ToolRegistrationError(f"tool '{name}': parameter '{param.name}' has no type hint")
        # Fields get neutral names and the parameter name as alias, so parameters called `json`,
        # `schema` or `model_config` neither shadow BaseModel attributes nor break the model.
        field = f"p{i}"
        default = PydanticUndefined if param.default is inspect.Parameter.empty else param.default
        fields[field] = (Annotated[param.annotation, Field(alias=param.name)], default)
        param_of_field[field] = param.name

    config = ConfigDict(extra="forbid", allow_inf_nan=False)
    try:
        model = create_model(name, __config__=config, **fields)
        parameters = model.model_json_schema()
    except Exception as exc:  # noqa: BLE001 - pydantic raises several types for unsupported hints
        raise ToolRegistrationError(f"tool '{name}': cannot derive a JSON Schema: {type(exc).__name__}: {exc}") from exc

    doc = description if description is not None else inspect.getdoc(fn)
    function: dict[str, Any] = {"name": name}
    if doc:
        function["description"] = doc
    function["parameters"] = parameters
    definition = {"type": "function", "function": function}
    try:
        verifier = ToolCallVerifier([definition])
    except InvalidSchemaError as exc:
        raise ToolRegistrationError(f"tool '{name}': {exc}") from exc
    return RegisteredTool(name, fn, model, definition, verifier, param_of_field)


def _describe(tool: str, error: Mapping[str, Any]) -> str:
    """One pydantic error as a verifier-style reason naming the argument (``loc`` uses aliases)."""
    where = "/".join(str(p) for p in error["loc"])
    if error["type"] == "missing":
        return f"{tool}: missing required argument '{where}'"
    got = repr(error.get("input"))
    if len(got) > _MAX_INPUT_CHARS:
        got = got[: _MAX_INPUT_CHARS - 3] + "..."
    return f"{tool}: argument '{where}': {error['msg']} (got {got})"
