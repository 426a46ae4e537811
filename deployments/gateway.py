"""The gateway deployment: OpenAI-compatible HTTP ingress and the Python entry point, over the tiers.

HTTP and DeploymentHandle callers share one code path (`chat` / `chat_stream`), so both get the same
validation, errors and `cascade` report. Checks that need no model (unknown model, token limits, invalid JSON
Schemas) run here, before a request costs an engine anything.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster.config import DEFAULT_MODEL_ALIAS, CascadeConfig, TierConfig
from deployments.protocol import ChatRequest, GatewayError
from deployments.tier_client import TierClient
from policies.cost import TierPrice, attempt_cost
from policies.verifiers import InvalidSchemaError, SchemaVerifier, validate_tool_schemas

api = FastAPI(title="slm-cascade", description="OpenAI-compatible gateway of an SLM-first serving cluster.")


def error_response(error: GatewayError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


@api.exception_handler(GatewayError)
async def _gateway_error(_: Request, error: GatewayError) -> JSONResponse:
    return error_response(error)


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The request body as JSON, refusing oversized, non-JSON and non-UTF-8 bodies with a 4xx."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise GatewayError(415, f"content type {content_type!r} is not supported; send application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise GatewayError(413, f"request body exceeds {max_bytes} bytes", code="body_too_large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise GatewayError(413, f"request body exceeds {max_bytes} bytes", code="body_too_large")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise GatewayError(400, "request body is not valid UTF-8", code="invalid_encoding") from None
    except json.JSONDecodeError as error:
        raise GatewayError(400, f"request body is not valid JSON: {error}", code="invalid_json") from None


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    """Serve's ingress pickles this class at decoration time: helpers it uses must be defined above it."""
    yield first
    async for line in rest:
        yield line


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(self, config: dict[str, Any], tier_handles: dict[str, DeploymentHandle]) -> None:
        self.config = CascadeConfig.model_validate(config)
        timeout_s = self.config.gateway.request_timeout_s
        self.tiers = {name: TierClient(name, handle, timeout_s) for name, handle in tier_handles.items()}

    # ---- Python entry points (DeploymentHandle) -------------------------------------------------------

    async def chat(self, request: ChatRequest | dict[str, Any]) -> dict[str, Any]:
        """One chat completion; the OpenAI response body plus a `cascade` report of what happened."""
        parsed = self._validate(request)
        tier = self._select_tier(parsed)
        result = await self.tiers[tier.name].chat(parsed.tier_body(tier.name))
        body = dict(result.body)  # `model` names the tier that answered, as OpenAI names the snapshot
        body["cascade"] = self._report(tier, body.get("usage", {}), result.engine_s)
        return body

    async def chat_stream(self, request: ChatRequest | dict[str, Any]) -> AsyncIterator[str]:
        """The same request as SSE lines (`data: {...}` chunks, then `data: [DONE]`)."""
        parsed = self._validate(request)
        tier = self._select_tier(parsed)
        async for line in self.tiers[tier.name].chat_stream(parsed.tier_body(tier.name)):
            yield line

    # ---- HTTP routes ------------------------------------------------------------------------------------

    @api.post("/v1/chat/completions")
    async def http_chat(self, request: Request) -> Response:
        payload = await read_json_body(request, self.config.gateway.max_body_bytes)
        parsed = self._validate(payload)
        if not parsed.stream:
            body = await self.chat(parsed)
            report = body["cascade"]
            headers = {
                "x-cascade-final-tier": report["final_tier"],
                "x-cascade-tiers-tried": ",".join(report["tiers_tried"]),
                "x-cascade-cost-usd": f"{report['cost_usd']:.10f}",
            }
            return JSONResponse(body, headers=headers)
        lines = self.chat_stream(parsed)
        first = await anext(lines)  # errors before the first token still get their own status code
        return StreamingResponse(
            _prepend(first, lines),
            media_type="text/event-stream",
            headers={"x-cascade-final-tier": self._select_tier(parsed).name},
        )

    @api.get("/v1/models")
    async def http_models(self) -> dict[str, Any]:
        ids = [DEFAULT_MODEL_ALIAS, *(tier.name for tier in self.config.tiers)]
        return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "slm-cascade"} for i in ids]}

    @api.get("/healthz")
    async def http_health(self) -> dict[str, str]:
        return {"status": "ok"}

    # ---- internals --------------------------------------------------------------------------------------

    def _validate(self, request: ChatRequest | dict[str, Any]) -> ChatRequest:
        if isinstance(request, ChatRequest):
            parsed = request
        elif isinstance(request, dict):
            try:
                parsed = ChatRequest.model_validate(request)
            except ValidationError as error:
                raise GatewayError.from_validation(error) from None
        else:
            raise GatewayError(400, "request body must be a JSON object", code="invalid_value")
        limit = self.config.gateway.max_tokens_limit
        requested = parsed.requested_max_tokens
        if requested is not None and requested > limit:
            param = "max_completion_tokens" if parsed.max_completion_tokens else "max_tokens"
            raise GatewayError(400, f"{param} must be <= {limit}, got {requested}", param=param, code="invalid_value")
        try:
            if parsed.response_schema is not None:
                SchemaVerifier(parsed.response_schema)
        except InvalidSchemaError as error:
            raise GatewayError(400, str(error), param="response_format.json_schema.schema", code="invalid_schema")
        try:
            if parsed.tools:
                validate_tool_schemas([tool.model_dump(mode="json") for tool in parsed.tools])
        except InvalidSchemaError as error:
            raise GatewayError(400, str(error), param="tools", code="invalid_schema") from None
        return parsed

    def _select_tier(self, request: ChatRequest) -> TierConfig:
        """The seam the cascade router replaces: `cascade` -> default tier, a tier name -> that tier."""
        if request.model == DEFAULT_MODEL_ALIAS:
            return self.config.default_tier
        if request.model in self.tiers:
            return self.config.tier(request.model)
        known = ", ".join([DEFAULT_MODEL_ALIAS, *self.tiers])
        raise GatewayError(
            404, f"model {request.model!r} does not exist; known: {known}", param="model", code="model_not_found"
        )

    def _report(self, tier: TierConfig, usage: dict[str, Any], engine_s: float) -> dict[str, Any]:
        price = TierPrice(tier.price.input_per_1m_usd, tier.price.output_per_1m_usd)
        cost = attempt_cost(price, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        return {
            "tiers_tried": [tier.name],
            "final_tier": tier.name,
            "confidence": None,
            "verifier_scores": {},
            "escalation_reason": None,
            "cost_usd": cost,
            "engine_ms": round(engine_s * 1000, 2),
        }
