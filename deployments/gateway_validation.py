"""What the gateway checks of a request before it costs an engine anything: the model exists, the token limit
holds, every JSON Schema compiles and stays within its budget, and the fields the gateway acts on make sense.

HTTP and handle callers go through the same checks, so both get the same 4xx for the same mistake.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cluster.config import ADAPTER_NAME_PATTERN, DEFAULT_MODEL_ALIAS, CascadeConfig, GatewayConfig
from deployments.protocol import ChatRequest, GatewayError, NamedToolChoice
from policies.schema_limits import check_request_limits
from policies.verifiers import InvalidSchemaError, SchemaVerifier, validate_tool_schemas

SCHEMA_KEYS_KEPT = 256  # as many as policies.verifiers keeps compiled schemas
INLINE_SCHEMA_BYTES = 16 * 1024  # larger schemas are validated in a thread, seen before or not


@dataclass(frozen=True)
class ModelCatalog:
    """The `model` values a request may name: `cascade`, a tier, or `<tier>:<adapter>` for a tier with LoRA."""

    tiers: tuple[str, ...]
    lora_tiers: tuple[str, ...]

    @classmethod
    def from_config(cls, config: CascadeConfig) -> ModelCatalog:
        return cls(tuple(tier.name for tier in config.tiers),
                   tuple(tier.name for tier in config.vllm_tiers if tier.lora is not None))

    def knows(self, model: str) -> bool:
        """Whether `model` may be served. Any well-formed adapter name passes: which adapters exist is the
        replica's to say (they are read at request time), and it answers 404 for one it does not have."""
        if model == DEFAULT_MODEL_ALIAS or model in self.tiers:
            return True
        tier_name, colon, adapter = model.partition(":")
        return bool(colon) and tier_name in self.lora_tiers and re.fullmatch(ADAPTER_NAME_PATTERN, adapter) is not None

    def described(self) -> str:
        return ", ".join([DEFAULT_MODEL_ALIAS, *self.tiers, *(f"{tier}:ADAPTER" for tier in self.lora_tiers)])


def schema_key(request: Any) -> str | None:
    """A digest of a request body's schema-bearing fields (what its validation costs depends on them), or None
    when validating them could take long enough to hold up the event loop: more than `INLINE_SCHEMA_BYTES` of
    schema JSON, or a body that is not a dict of JSON."""
    if not isinstance(request, dict):
        return None
    try:
        text = json.dumps([request.get("tools"), request.get("response_format")])
    except (TypeError, ValueError, RecursionError):
        return None  # not JSON: `RequestValidator.validate` says why
    if len(text) > INLINE_SCHEMA_BYTES:
        return None
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class RequestValidator:
    """Validates requests for one gateway replica, remembering which schemas it has already seen."""

    def __init__(self, gateway: GatewayConfig, models: ModelCatalog) -> None:
        self.gateway = gateway
        self.models = models
        self._seen_schemas: OrderedDict[str, None] = OrderedDict()

    async def checked(self, request: ChatRequest | dict[str, Any]) -> ChatRequest:
        """`validate`, once per request. Schemas new to this replica are validated in a thread: their first
        meta-validation costs milliseconds per KB (`bench/experiments/bench_verifier_cache.py`), which other
        requests on this replica should not wait for. Small ones seen before are compiled and cached
        (`policies.verifiers`), and validating the request again costs less than the hop to a thread, so it runs on
        the event loop; were their compiled form evicted since, recompiling a schema of at most
        `INLINE_SCHEMA_BYTES` stays short.
        """
        key = schema_key(request)
        if key is not None and key in self._seen_schemas:
            self._seen_schemas.move_to_end(key)
            return self.validate(request)
        parsed = await asyncio.to_thread(self.validate, request)
        if key is not None:
            self._seen_schemas[key] = None
            if len(self._seen_schemas) > SCHEMA_KEYS_KEPT:
                self._seen_schemas.popitem(last=False)
        return parsed

    def validate(self, request: ChatRequest | dict[str, Any]) -> ChatRequest:
        """The request parsed and checked, with the gateway's default `max_tokens` where it sets none."""
        parsed = _parsed(request)
        if not self.models.knows(parsed.model):
            raise GatewayError(404, f"model {parsed.model!r} does not exist; known: {self.models.described()}",
                               param="model", code="model_not_found")
        parsed = self._bounded_tokens(parsed)
        _check_schemas(parsed)
        _check_gateway_fields(parsed)
        return parsed

    def _bounded_tokens(self, parsed: ChatRequest) -> ChatRequest:
        """Without a limit an engine generates to the end of its context window: a request gets the default."""
        limit = self.gateway.max_tokens_limit
        requested = parsed.requested_max_tokens
        if requested is None:
            return parsed.model_copy(update={"max_tokens": self.gateway.default_max_tokens})
        if requested > limit:
            param = "max_completion_tokens" if parsed.max_completion_tokens else "max_tokens"
            raise GatewayError(400, f"{param} must be <= {limit}, got {requested}", param=param, code="invalid_value")
        return parsed


def _parsed(request: ChatRequest | dict[str, Any]) -> ChatRequest:
    if isinstance(request, ChatRequest):
        return request
    if not isinstance(request, dict):
        raise GatewayError(400, "request body must be a JSON object", code="invalid_value")
    try:
        return ChatRequest.model_validate(request)
    except ValidationError as error:
        raise GatewayError.from_validation(error) from None


def _invalid_schema(error: InvalidSchemaError, param: str) -> GatewayError:
    return GatewayError(400, str(error), param=param, code="invalid_schema")


def _check_schemas(parsed: ChatRequest) -> None:
    """Every schema the engines would compile into a grammar, checked first for size (one budget for the whole
    request: a forced tool choice compiles every tool into one grammar), then for validity."""
    tool_schemas = [tool.function.parameters for tool in parsed.tools or []]
    try:
        check_request_limits([*tool_schemas, *([parsed.response_schema] if parsed.response_schema else [])])
    except InvalidSchemaError as error:
        raise _invalid_schema(error, "tools" if tool_schemas else "response_format") from None
    if parsed.response_schema is not None:
        try:
            SchemaVerifier(parsed.response_schema)
        except InvalidSchemaError as error:
            raise _invalid_schema(error, "response_format.json_schema.schema") from None
    if parsed.tools:
        try:
            validate_tool_schemas(parsed.tool_definitions)
        except InvalidSchemaError as error:
            raise _invalid_schema(error, "tools") from None


def _check_gateway_fields(parsed: ChatRequest) -> None:
    """The fields the gateway itself acts on, where a well-typed value can still be unusable."""
    if isinstance(parsed.tool_choice, NamedToolChoice):
        names = {tool.function.name for tool in parsed.tools or []}
        if parsed.tool_choice.function.name not in names:
            raise GatewayError(400, f"tool_choice names {parsed.tool_choice.function.name!r}, which is not in "
                               "`tools`", param="tool_choice", code="invalid_value")
    stream_options = (parsed.model_extra or {}).get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise GatewayError(400, "stream_options must be an object, e.g. {\"include_usage\": true}",
                           param="stream_options", code="invalid_value")
    if parsed.n > 1 and parsed.model == DEFAULT_MODEL_ALIAS:
        raise GatewayError(400, "n > 1 is not supported on model `cascade`: each answer would need its own "
                           "cascade; address a tier by name", param="n", code="invalid_value")
