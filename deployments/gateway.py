"""The gateway deployment: OpenAI-compatible HTTP ingress and the Python entry point, over the tiers.

HTTP and DeploymentHandle callers share one code path (`chat` / `chat_stream`), so both get the same
validation, errors and `cascade` report. Checks that need no model (unknown model, token limits, invalid JSON
Schemas) run in the gateway, before a request costs an engine anything. Model `cascade` runs the request's route
through the cascade; a tier's name runs that tier alone (still verified and reported, never escalated; streamed,
it is accounted but not verified: `tier_stream`). What every replica must agree on (accounting, rate limits,
feedback, recordings) lives in the cluster's books (`books`).

This module wires the parts together as a Serve deployment; each part is a module of its own, testable without
Ray: the HTTP edge and its errors (`gateway_http`), request checks (`gateway_validation`), keys, limits and
deadlines (`gateway_admission`), which runner serves a request (`gateway_routes`) and the response's shape
(`gateway_response`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster.config import DEFAULT_MODEL_ALIAS, CascadeConfig, RemoteTierConfig, RouteConfig
from cluster.store.recording import RecordedExample, recording_path
from cluster.telemetry import semconv
from cluster.telemetry.metrics import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from cluster.telemetry.service import GatewayTelemetry
from cluster.telemetry.tracing import extract_context, record_content
from deployments.adapters import available_adapters
from deployments.books import books_actor
from deployments.books_client import BooksClient, BooksUnavailableError
from deployments.cascade import Attempt, Tier
from deployments.gateway_admission import Admission, request_deadline
from deployments.gateway_http import (
    DEADLINE_HEADER,
    ROUTE_HEADER,
    gateway_api,
    read_json_body,
    replica_headers,
    trace_carrier,
)
from deployments.gateway_response import outcome_attributes, prepend, report_headers, response_body, sse_lines
from deployments.gateway_routes import RouteTable
from deployments.gateway_validation import ModelCatalog, RequestValidator
from deployments.judge import JudgeClient
from deployments.openapi import FEEDBACK_SCHEMA, chat_request_schema, json_body
from deployments.protocol import ChatRequest, GatewayError
from deployments.remote_tier import RemoteTierClient
from deployments.tier_client import TierClient
from deployments.tier_stream import accounted_stream
from deployments.tool_execution import ToolExecutor
from deployments.vllm_engine import completion_as_sse
from policies.access import ApiKey
from policies.cost import TierPrice
from policies.tool_registry import load_registry

# Serve's ingress pickles this app when it decorates the class below: its routes and handlers must be on it by then.
api = gateway_api()


def tier_clients(config: CascadeConfig, tier_handles: dict[str, DeploymentHandle]) -> dict[str, Tier]:
    """Every tier as the cascade calls it: a Serve handle for a vLLM tier, HTTP for a remote one."""
    timeout_s = config.gateway.request_timeout_s
    tiers: dict[str, Tier] = {}
    for tier in config.tiers:
        backend = (RemoteTierClient(tier) if isinstance(tier, RemoteTierConfig)
                   else TierClient(tier.name, tier_handles[tier.name], timeout_s))
        tiers[tier.name] = Tier(backend, TierPrice(tier.price.input_per_1m_usd, tier.price.output_per_1m_usd))
    return tiers


@serve.deployment
@serve.ingress(api)
class Gateway:
    """The cluster's entry point, one per replica: HTTP routes and handle methods over one request path."""

    def __init__(
        self,
        config: dict[str, Any],
        tier_handles: dict[str, DeploymentHandle],
        judge_handles: dict[str, DeploymentHandle],
    ) -> None:
        self.config = CascadeConfig.model_validate(config)
        gateway = self.config.gateway
        self.tiers = tier_clients(self.config, tier_handles)
        self.tools = ToolExecutor(load_registry(gateway.tools), gateway.tool_timeout_s)
        # Accounting, rate limits, feedback and recordings: one copy for every replica (deployments.books).
        store = str(recording_path(gateway.recording)) if gateway.recording.enabled else None
        self.books = BooksClient(books_actor(self.config.app_name, store, config), store, config)
        self.telemetry = GatewayTelemetry(gateway.telemetry, self.books.add_record)
        self.admission = Admission(gateway.auth, self.books.admit)
        self.validator = RequestValidator(gateway, ModelCatalog.from_config(self.config))
        judges = {name: JudgeClient(handle) for name, handle in judge_handles.items()}
        self.routes = RouteTable(self.config, self.tiers, judges, self.telemetry.tracer,
                                 lambda: self.books.serving_adapters)

    def __del__(self) -> None:
        """Serve calls this as it stops the replica: what is still buffered goes to the cluster's books first."""
        if hasattr(self, "books"):
            self.books.close()

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
        return await self._complete(await self.validator.checked(request), route, trace_context)

    async def chat_stream(
        self,
        request: ChatRequest | dict[str, Any],
        route: str | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> AsyncIterator[str]:
        """The same request as SSE lines (`data: {...}` chunks, then `data: [DONE]`), accounted like `chat`.

        A tier addressed by name streams token by token. The cascade must verify a whole answer before it
        commits to it, so model `cascade` sends the accepted answer as chunks once it has one, with its
        `cascade` report in the last chunk.
        """
        parsed = await self.validator.checked(request)
        lines = (self._tier_stream(parsed, trace_context) if self._streams_by_token(parsed)
                 else sse_lines(completion_as_sse(await self._complete(parsed, route, trace_context))))
        async for line in lines:
            yield line

    # ---- one path for HTTP and handle callers, after validation ----------------------------------------

    async def _complete(self, parsed: ChatRequest, route: str | None,
                        trace_context: dict[str, str] | None) -> dict[str, Any]:
        runner = self.routes.runner(parsed, route)
        by_route = parsed.model == DEFAULT_MODEL_ALIAS  # else a tier by name: no route adapter, nothing recorded
        deadline_s = request_deadline(parsed, None, self.config.gateway)
        context = extract_context(trace_context or {})
        with self.telemetry.tracer.start_as_current_span(semconv.SPAN_REQUEST, context=context) as span:
            span.set_attributes({semconv.CASCADE_ROUTE: runner.route.name, semconv.GEN_AI_OPERATION_NAME: "chat",
                                 semconv.GEN_AI_REQUEST_MODEL: parsed.model})
            if by_route and self.routes.adapter(runner.route.name):
                span.set_attribute(semconv.CASCADE_ADAPTER, self.routes.adapter(runner.route.name))
            try:
                try:
                    async with asyncio.timeout(deadline_s):  # cancels tier calls in flight, engine work with them
                        result = await runner.run(parsed)
                except TimeoutError:
                    raise GatewayError(504, f"request did not finish within its deadline of {deadline_s:g} s",
                                       code="deadline_exceeded") from None
                body = response_body(parsed, result)
            except GatewayError as error:
                span.set_attributes({semconv.CASCADE_OUTCOME: "failure", semconv.ERROR_TYPE: error.code or "error"})
                raise
            report = body["cascade"]
            if by_route:
                report["adapter"] = self.routes.adapter(runner.route.name)
            record_content(span, self.config.gateway.telemetry, input_messages=parsed.messages,
                           output_messages=[choice["message"] for choice in body["choices"]])
            if by_route:
                await self._record(runner.route, parsed, result.final, body["choices"][0]["message"])
            if runner.route.tool_execution == "server" and report["verified"]:
                report["tool_results"] = await self.tools.execute(body["choices"][0]["message"], self.telemetry.tracer)
            span.set_attributes(outcome_attributes(report))
            return body

    def _streams_by_token(self, parsed: ChatRequest) -> bool:
        """A vLLM tier addressed by name (no adapter) streams as it generates; everything else is answered whole."""
        tier = self.tiers.get(parsed.model)
        return tier is not None and isinstance(tier.backend, TierClient)

    def _tier_stream(self, parsed: ChatRequest, trace_context: dict[str, str] | None) -> AsyncGenerator[str, None]:
        tier = self.tiers[parsed.model]
        if not isinstance(tier.backend, TierClient):  # callers ask `_streams_by_token` first
            raise TypeError(f"tier {tier.name!r} does not stream by token")
        stream_options = (parsed.model_extra or {}).get("stream_options") or {}  # an object: validation saw to it
        return accounted_stream(tier.backend, tier.price, parsed.tier_body(tier.name), tracer=self.telemetry.tracer,
                                trace_context=trace_context,
                                deadline_s=request_deadline(parsed, None, self.config.gateway),
                                client_wants_usage=bool(stream_options.get("include_usage")))

    async def _record(self, route: RouteConfig, request: ChatRequest, final: Attempt,
                      message: dict[str, Any]) -> None:
        """Keeps an escalated request whose answer passed every verifier: what `cascade adapt` trains on.

        Passing the verifiers is the test, not the cascade's acceptance: a remote LLM gives no logprobs, so its
        confidence may stay under the route's threshold while its answer is verifiably right.
        """
        verdicts = final.outcome.verdicts
        if not self.config.gateway.recording.enabled or not route.record or request.store is False \
                or not verdicts or not all(v.passed for v in verdicts):
            return
        if final.tier == self.config.route_tiers(route)[0]:
            return  # the SLM answered: nothing to learn. Escalated or pre-routed past it: a lesson for it
        example = RecordedExample.create(route.name, final.tier, request.model_dump(
            mode="json", by_alias=True, exclude_none=True), message, self.config.gateway.recording.extra_fields)
        await self.books.record_example(example)

    # ---- HTTP routes ------------------------------------------------------------------------------------

    @api.post("/v1/chat/completions", openapi_extra=json_body(chat_request_schema()))
    async def http_chat(self, request: Request) -> Response:
        key = self._authenticate(request)  # before the body is read: an anonymous caller costs nothing more
        payload = await read_json_body(request, self.config.gateway.max_body_bytes)
        parsed = await self.validator.checked(payload)
        route = request.headers.get(ROUTE_HEADER)
        await self.admission.admit(key, parsed, lambda: self.routes.runner(parsed, route).route.name)
        deadline = request_deadline(parsed, request.headers.get(DEADLINE_HEADER), self.config.gateway)
        parsed = parsed.model_copy(update={"deadline_s": deadline})
        if not parsed.stream:
            body = await self._complete(parsed, route, trace_carrier(request.headers))
            return JSONResponse(body, headers={**report_headers(body["cascade"]), **replica_headers()})
        if self._streams_by_token(parsed):
            lines = self._tier_stream(parsed, trace_carrier(request.headers))
            first = await anext(lines)  # errors before the first token still get their own status code
            return StreamingResponse(prepend(first, lines), media_type="text/event-stream", headers=replica_headers())
        body = await self._complete(parsed, route, trace_carrier(request.headers))
        return StreamingResponse(sse_lines(completion_as_sse(body)), media_type="text/event-stream",
                                 headers={**report_headers(body["cascade"]), **replica_headers()})

    @api.get("/v1/models")
    async def http_models(self, request: Request) -> dict[str, Any]:
        self._authenticate(request)
        ids = [DEFAULT_MODEL_ALIAS, *self.tiers]
        for tier in self.config.vllm_tiers:
            if tier.lora is not None:
                ids += [f"{tier.name}:{adapter}" for adapter in await asyncio.to_thread(available_adapters, tier.lora)]
        return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "slm-cascade"} for i in ids]}

    @api.get("/v1/cascade/report")
    async def http_report(self, request: Request) -> dict[str, Any]:
        """The cluster's accounting over its sliding window: CPS, rates, latency, tokens, energy and source; and
        what this replica could not deliver to the books (`books_dropped`, 0 unless they were long unreachable)."""
        self._authenticate(request)
        return {**self.telemetry.report(await self._books_snapshot()), "books_dropped": self.books.dropped}

    @api.post("/v1/cascade/feedback/{request_id}", openapi_extra=json_body(FEEDBACK_SCHEMA))
    async def http_feedback(self, request_id: str, request: Request, response: Response) -> dict[str, Any]:
        """A client reports the real outcome of a request (e.g. the tool call did the job) after the fact."""
        self._authenticate(request)
        payload = await read_json_body(request, 4096)
        success = payload.get("success") if isinstance(payload, dict) else None
        if not isinstance(success, bool):
            raise GatewayError(400, "body must be {\"success\": true|false}", param="success", code="invalid_value")
        try:
            known = await self.books.feedback(request_id, success)
        except BooksUnavailableError:
            raise GatewayError(503, "the cluster's books are unavailable; send the feedback again",
                               code="books_unavailable", retry_after_s=5) from None
        if not known:
            raise GatewayError(404, f"request {request_id!r} is unknown or has left the accounting window",
                               param="request_id", code="request_not_found")
        response.headers.update(replica_headers())
        return {"request_id": request_id, "success": success}

    @api.get("/metrics")
    async def http_metrics(self) -> Response:
        return Response(self.telemetry.metrics_text(await self._books_snapshot()), media_type=PROMETHEUS_CONTENT_TYPE)

    @api.get("/healthz")
    async def http_health(self) -> dict[str, str]:
        return {"status": "ok"}

    def _authenticate(self, request: Request) -> ApiKey | None:
        """The caller's key (None when auth is off). /healthz and /metrics stay open for probes and scrapers;
        the chart's NetworkPolicy decides who reaches them."""
        return self.admission.authenticate(request.headers.get("authorization"))

    async def _books_snapshot(self) -> dict[str, Any]:
        try:
            return await self.books.snapshot()
        except BooksUnavailableError:
            raise GatewayError(503, "the cluster's books are unavailable; try again shortly", code="books_unavailable",
                               retry_after_s=5) from None
