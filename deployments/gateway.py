"""The gateway deployment: OpenAI-compatible HTTP ingress and the Python entry point, over the tiers.

HTTP and DeploymentHandle callers share one code path (`chat` / `chat_stream`), so both get the same
validation, errors and `cascade` report. Checks that need no model (unknown model, token limits, invalid JSON
Schemas) run here, before a request costs an engine anything. Model `cascade` runs the request's route
through the cascade; a tier's name runs that tier alone (still verified and reported, never escalated).
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

from cluster.config import DEFAULT_MODEL_ALIAS, DEFAULT_ROUTE, CascadeConfig, RemoteTierConfig, RouteConfig
from cluster.telemetry import semconv
from cluster.telemetry.accounting import UnknownRequestError
from cluster.telemetry.metrics import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from cluster.telemetry.service import GatewayTelemetry
from cluster.telemetry.tracing import extract_context, record_content
from deployments.cascade import CascadeResult, CascadeRunner, Tier
from deployments.judge import JudgeClient
from deployments.protocol import ChatRequest, GatewayError, NamedToolChoice
from deployments.remote_tier import RemoteTierClient
from deployments.tier_client import TierClient
from deployments.tool_execution import ToolExecutor
from deployments.vllm_engine import completion_as_sse
from policies.cost import TierPrice
from policies.tool_registry import load_registry
from policies.verifiers import InvalidSchemaError, SchemaVerifier, validate_tool_schemas

api = FastAPI(title="slm-cascade", description="OpenAI-compatible gateway of an SLM-first serving cluster.")


def error_response(error: GatewayError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


@api.exception_handler(GatewayError)
async def _gateway_error(_: Request, error: GatewayError) -> JSONResponse:
    return error_response(error)


@api.exception_handler(Exception)
async def _unexpected_error(_: Request, error: Exception) -> JSONResponse:
    """A bug still answers in OpenAI's error shape, without internals; Serve logs the traceback."""
    return error_response(GatewayError(500, "internal error", code="internal_error"))


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
    except RecursionError:
        raise GatewayError(400, "request body is nested too deeply", code="invalid_json") from None


def _response_body(request: ChatRequest, result: CascadeResult) -> dict[str, Any]:
    """The final attempt's OpenAI body with the cascade report; logprobs only if the client asked for them."""
    attempt = result.final
    if attempt.result is None:  # every attempt failed at the tier: nothing to return but the error
        raise attempt.error
    body = dict(attempt.result.body)
    body["choices"] = [{**choice, "logprobs": _client_logprobs(request, choice.get("logprobs"))}
                       for choice in body["choices"]]
    body["cascade"] = result.report()
    return body


def _client_logprobs(request: ChatRequest, logprobs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cascade always asks tiers for top-k logprobs; the client gets what it asked for, or none."""
    extra = request.model_extra or {}
    if not extra.get("logprobs") or logprobs is None:
        return None
    keep = extra.get("top_logprobs") or 0
    return {"content": [{**token, "top_logprobs": token.get("top_logprobs", [])[:keep]}
                        for token in logprobs.get("content") or []]}


def _report_headers(report: dict[str, Any]) -> dict[str, str]:
    return {
        "x-cascade-final-tier": report["final_tier"],
        "x-cascade-tiers-tried": ",".join(report["tiers_tried"]),
        "x-cascade-verified": str(report["verified"]).lower(),
        "x-cascade-escalation-reason": report["escalation_reason"] or "none",
        "x-cascade-cost-usd": f"{report['cost_usd']:.10f}",
    }


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    """Serve's ingress pickles the class below at decoration time: the helpers it uses must come before it."""
    yield first
    async for line in rest:
        yield line


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(
        self,
        config: dict[str, Any],
        tier_handles: dict[str, DeploymentHandle],
        judge_handles: dict[str, DeploymentHandle],
    ) -> None:
        self.config = CascadeConfig.model_validate(config)
        timeout_s = self.config.gateway.request_timeout_s
        tiers: dict[str, Tier] = {}
        for tier in self.config.tiers:
            backend = (
                RemoteTierClient(tier)
                if isinstance(tier, RemoteTierConfig)
                else TierClient(tier.name, tier_handles[tier.name], timeout_s)
            )
            tiers[tier.name] = Tier(backend, TierPrice(tier.price.input_per_1m_usd, tier.price.output_per_1m_usd))
        self.tiers = tiers
        self.tools = ToolExecutor(load_registry(self.config.gateway.tools), self.config.gateway.tool_timeout_s)
        self.telemetry = GatewayTelemetry.start(self.config.gateway.telemetry)
        tracer = self.telemetry.tracer
        self.routes = {
            route.name: CascadeRunner(
                route,
                [tiers[name] for name in self.config.route_tiers(route)],
                JudgeClient(judge_handles[route.name]) if route.name in judge_handles else None,
                tracer,
            )
            for route in self.config.routes
        }
        # A tier addressed by name is a one-tier route: verified and reported, never escalated, never repaired.
        self.single_tier = {
            name: CascadeRunner(RouteConfig(name=name, tiers=[name], max_repairs=0), [tier], tracer=tracer)
            for name, tier in tiers.items()
        }

    # ---- Python entry points (DeploymentHandle) -------------------------------------------------------

    async def chat(
        self,
        request: ChatRequest | dict[str, Any],
        route: str | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One chat completion; the OpenAI response body plus a `cascade` report of what happened.

        `trace_context` carries a W3C `traceparent` (HTTP callers: the request headers), so the request's
        spans join the caller's trace.
        """
        parsed = self._validate(request)
        runner = self._runner(parsed, route)
        context = extract_context(trace_context or {})
        with self.telemetry.tracer.start_as_current_span(semconv.SPAN_REQUEST, context=context) as span:
            span.set_attributes({semconv.CASCADE_ROUTE: runner.route.name, semconv.GEN_AI_OPERATION_NAME: "chat",
                                 semconv.GEN_AI_REQUEST_MODEL: parsed.model})
            try:
                result = await runner.run(parsed)
                body = _response_body(parsed, result)
            except GatewayError as error:
                span.set_attributes({semconv.CASCADE_OUTCOME: "failure", semconv.ERROR_TYPE: error.code or "error"})
                raise
            report = body["cascade"]
            report["request_id"] = body["id"]
            record_content(span, self.config.gateway.telemetry, input_messages=parsed.messages,
                           output_messages=[choice["message"] for choice in body["choices"]])
            if runner.route.tool_execution == "server" and report["verified"]:
                report["tool_results"] = await self.tools.execute(body["choices"][0]["message"], self.telemetry.tracer)
            span.set_attributes({
                semconv.CASCADE_REQUEST_ID: body["id"],
                semconv.CASCADE_OUTCOME: "success" if report["verified"] else "failure",
                semconv.CASCADE_ESCALATED: len(set(report["tiers_tried"])) > 1,
                semconv.CASCADE_TIERS_TRIED: report["tiers_tried"],
                semconv.CASCADE_ESCALATION_REASON: report["escalation_reason"] or "",
            })
            return body

    async def chat_stream(self, request: ChatRequest | dict[str, Any], route: str | None = None) -> AsyncIterator[str]:
        """The same request as SSE lines (`data: {...}` chunks, then `data: [DONE]`).

        A tier addressed by name streams token by token. The cascade must verify a whole answer before it
        commits to it, so model `cascade` sends the accepted answer as chunks once it has one.
        """
        parsed = self._validate(request)
        tier = self.tiers.get(parsed.model)
        if tier is not None and isinstance(tier.backend, TierClient):
            async for line in tier.backend.chat_stream(parsed.tier_body(tier.name)):
                yield line
            return
        for line in completion_as_sse(await self.chat(parsed, route)):
            yield line

    # ---- HTTP routes ------------------------------------------------------------------------------------

    @api.post("/v1/chat/completions")
    async def http_chat(self, request: Request) -> Response:
        payload = await read_json_body(request, self.config.gateway.max_body_bytes)
        parsed = self._validate(payload)
        route = request.headers.get("x-cascade-route")
        if not parsed.stream:
            body = await self.chat(parsed, route, dict(request.headers))
            return JSONResponse(body, headers=_report_headers(body["cascade"]))
        lines = self.chat_stream(parsed, route)
        first = await anext(lines)  # errors before the first token still get their own status code
        return StreamingResponse(_prepend(first, lines), media_type="text/event-stream")

    @api.get("/v1/models")
    async def http_models(self) -> dict[str, Any]:
        ids = [DEFAULT_MODEL_ALIAS, *self.tiers]
        return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "slm-cascade"} for i in ids]}

    @api.get("/v1/cascade/report")
    async def http_report(self) -> dict[str, Any]:
        """This replica's accounting over its sliding window: CPS, rates, latency, tokens, energy and source."""
        return self.telemetry.report()

    @api.post("/v1/cascade/feedback/{request_id}")
    async def http_feedback(self, request_id: str, request: Request) -> dict[str, Any]:
        """A client reports the real outcome of a request (e.g. the tool call did the job) after the fact."""
        payload = await read_json_body(request, 4096)
        success = payload.get("success") if isinstance(payload, dict) else None
        if not isinstance(success, bool):
            raise GatewayError(400, "body must be {\"success\": true|false}", param="success", code="invalid_value")
        try:
            self.telemetry.accounting.record_feedback(request_id, success)
        except UnknownRequestError:
            raise GatewayError(404, f"request {request_id!r} is unknown or has left the accounting window",
                               param="request_id", code="request_not_found") from None
        return {"request_id": request_id, "success": success}

    @api.get("/metrics")
    async def http_metrics(self) -> Response:
        return Response(self.telemetry.metrics_text(), media_type=PROMETHEUS_CONTENT_TYPE)

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
        if parsed.model != DEFAULT_MODEL_ALIAS and parsed.model not in self.tiers:
            known = ", ".join([DEFAULT_MODEL_ALIAS, *self.tiers])
            raise GatewayError(
                404, f"model {parsed.model!r} does not exist; known: {known}", param="model", code="model_not_found"
            )
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
        if isinstance(parsed.tool_choice, NamedToolChoice):
            names = {tool.function.name for tool in parsed.tools or []}
            if parsed.tool_choice.function.name not in names:
                raise GatewayError(400, f"tool_choice names {parsed.tool_choice.function.name!r}, which is not in "
                                   "`tools`", param="tool_choice", code="invalid_value")
        if parsed.n > 1 and parsed.model == DEFAULT_MODEL_ALIAS:
            raise GatewayError(400, "n > 1 is not supported on model `cascade`: each answer would need its own "
                               "cascade; address a tier by name", param="n", code="invalid_value")
        return parsed

    def _runner(self, request: ChatRequest, route: str | None) -> CascadeRunner:
        if request.model != DEFAULT_MODEL_ALIAS:
            return self.single_tier[request.model]
        name = route or request.route or DEFAULT_ROUTE
        if name not in self.routes:
            raise GatewayError(
                400, f"route {name!r} does not exist; known: {', '.join(self.routes)}", param="route",
                code="route_not_found",
            )
        return self.routes[name]
