"""The gateway deployment: OpenAI-compatible HTTP ingress and the Python entry point, over the tiers.

HTTP and DeploymentHandle callers share one code path (`chat` / `chat_stream`), so both get the same
validation, errors and `cascade` report. Checks that need no model (unknown model, token limits, invalid JSON
Schemas) run here, before a request costs an engine anything. Model `cascade` runs the request's route
through the cascade; a tier's name runs that tier alone (still verified and reported, never escalated; streamed,
it is accounted but not verified: `tier_stream`). What every replica must agree on (accounting, rate limits,
feedback, recordings) lives in the cluster's books (`books`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster.config import (
    ADAPTER_NAME_PATTERN,
    DEFAULT_MODEL_ALIAS,
    DEFAULT_ROUTE,
    AuthConfig,
    CascadeConfig,
    GatewayConfig,
    RemoteTierConfig,
    RouteConfig,
    TierConfig,
)
from cluster.store.recording import RecordedExample, recording_path
from cluster.telemetry import semconv
from cluster.telemetry.metrics import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from cluster.telemetry.service import GatewayTelemetry
from cluster.telemetry.tracing import extract_context, record_content
from deployments.adapters import available_adapters
from deployments.books import books_actor
from deployments.books_client import BooksClient, BooksUnavailableError
from deployments.cascade import Attempt, CascadeResult, CascadeRunner, Tier
from deployments.judge import JudgeClient
from deployments.openapi import FEEDBACK_SCHEMA, chat_request_schema, json_body
from deployments.protocol import ChatRequest, GatewayError, NamedToolChoice
from deployments.remote_tier import RemoteTierClient
from deployments.tier_client import AdapterClient, TierClient
from deployments.tier_stream import accounted_stream
from deployments.tool_execution import ToolExecutor
from deployments.vllm_engine import completion_as_sse
from policies.access import AccessError, ApiKey, KeyRing
from policies.cost import TierPrice
from policies.schema_limits import check_request_limits
from policies.tool_registry import load_registry
from policies.verifiers import InvalidSchemaError, SchemaVerifier, validate_tool_schemas

api = FastAPI(title="slm-cascade", description="OpenAI-compatible gateway of an SLM-first serving cluster.")


DEADLINE_HEADER = "x-cascade-deadline-s"
REPLICA_HEADER = "x-cascade-gateway-replica"
TRACE_HEADERS = ("traceparent", "tracestate")
SCHEMA_KEYS_KEPT = 256  # as many as policies.verifiers keeps compiled schemas
INLINE_SCHEMA_BYTES = 16 * 1024  # larger schemas are validated in a thread, seen before or not


def replica_headers() -> dict[str, str]:
    """Which gateway replica answered: any replica serves any request, and an operator (or a test) can see
    which one did. Empty outside a Serve replica."""
    try:
        return {REPLICA_HEADER: serve.get_replica_context().replica_id.unique_id}
    except RayServeException:
        return {}


def error_response(error: GatewayError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else {}
    headers.update(replica_headers())
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


@api.exception_handler(GatewayError)
async def _gateway_error(_: Request, error: GatewayError) -> JSONResponse:
    return error_response(error)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    """Routing errors (unknown path 404, wrong method 405) in the same OpenAI shape as every other error."""
    return error_response(GatewayError(error.status_code, str(error.detail), code="not_found"
                                       if error.status_code == 404 else "invalid_request"))


@api.exception_handler(RequestValidationError)
async def _request_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(part) for part in first["loc"]) or None
    return error_response(GatewayError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param,
                                       code="invalid_value"))


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


def keyring_from_config(auth: AuthConfig) -> KeyRing | None:
    """The configured keys; None when auth is off (then every HTTP caller is admitted)."""
    if not auth.required:
        return None
    return KeyRing(ApiKey(key.name, key.sha256, frozenset(key.routes), key.direct_tiers, key.requests_per_minute,
                          key.burst) for key in auth.keys)


def as_gateway_error(error: AccessError) -> GatewayError:
    """Access errors name the key's holder, never the token, so their message is safe to return."""
    return GatewayError(error.status, str(error), code=error.code, retry_after_s=getattr(error, "retry_after_s", None))


def request_deadline(request: ChatRequest, header: str | None, gateway: GatewayConfig) -> float:
    """Seconds the whole request may take: the client's (header wins over body) within the gateway's limit."""
    value: float | None = request.deadline_s
    if header is not None:
        try:
            value = float(header)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise GatewayError(400, f"header {DEADLINE_HEADER} must be a positive number of seconds",
                               param=DEADLINE_HEADER, code="invalid_value")
    if value is None:
        return gateway.default_deadline_s
    if value > gateway.max_deadline_s:
        raise GatewayError(400, f"deadline_s must be <= {gateway.max_deadline_s:g}, got {value:g}",
                           param="deadline_s", code="invalid_value")
    return value


def schema_key(request: Any) -> str | None:
    """A digest of a request body's schema-bearing fields (what its validation costs depends on them), or None
    when validating them could take long enough to hold up the event loop: more than `INLINE_SCHEMA_BYTES` of
    schema JSON, or a body that is not a dict of JSON."""
    if not isinstance(request, dict):
        return None
    try:
        text = json.dumps([request.get("tools"), request.get("response_format")])
    except (TypeError, ValueError, RecursionError):
        return None  # not JSON: `_validate` says why
    if len(text) > INLINE_SCHEMA_BYTES:
        return None
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def trace_carrier(headers: Mapping[str, str]) -> dict[str, str]:
    """Only the W3C trace headers travel on; the rest (the caller's key among them) stays at the edge."""
    return {name: headers[name] for name in TRACE_HEADERS if name in headers}


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


async def _lines(lines: list[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    """Serve's ingress pickles the class below at decoration time: the helpers it uses must come before it.

    `rest` is closed with this generator: a client gone mid-stream closes the tier's stream at once."""
    async with aclosing(rest):
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
        self.lora_tiers: dict[str, TierConfig] = {t.name: t for t in self.config.vllm_tiers if t.lora is not None}
        self.keyring = keyring_from_config(self.config.gateway.auth)
        self.tools = ToolExecutor(load_registry(self.config.gateway.tools), self.config.gateway.tool_timeout_s)
        # Accounting, rate limits, feedback and recordings: one copy for every replica (deployments.books).
        recording = self.config.gateway.recording
        store = str(recording_path(recording)) if recording.enabled else None
        self.books = BooksClient(books_actor(self.config.app_name, store, config), store, config)
        self.telemetry = GatewayTelemetry(self.config.gateway.telemetry, self.books.add_record)
        tracer = self.telemetry.tracer
        self.judges = {name: JudgeClient(handle) for name, handle in judge_handles.items()}
        # Each route's runner and the adapter its first tier runs: the config's, until the cluster's ledger
        # serves a version of its own (a round promoted one, or a rollback returned to one).
        self.routes: dict[str, CascadeRunner] = {}
        self.route_adapters: dict[str, str | None] = {}
        self._adapters_generation = -1
        self._sync_adapters()
        self._validated_schemas: OrderedDict[str, None] = OrderedDict()
        # A tier addressed by name is a one-tier route: verified and reported, never escalated, never repaired.
        self.single_tier = {
            name: CascadeRunner(self._one_tier_route(name), [tier], tracer=tracer) for name, tier in tiers.items()
        }

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
        return await self._complete(await self._checked(request), route, trace_context)

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
        parsed = await self._checked(request)
        lines = (self._tier_stream(parsed, trace_context) if self._streams_by_token(parsed)
                 else _lines(completion_as_sse(await self._complete(parsed, route, trace_context))))
        async for line in lines:
            yield line

    # ---- one path for HTTP and handle callers, after validation ----------------------------------------

    async def _complete(self, parsed: ChatRequest, route: str | None,
                        trace_context: dict[str, str] | None) -> dict[str, Any]:
        runner = self._runner(parsed, route)
        deadline_s = request_deadline(parsed, None, self.config.gateway)
        context = extract_context(trace_context or {})
        with self.telemetry.tracer.start_as_current_span(semconv.SPAN_REQUEST, context=context) as span:
            span.set_attributes({semconv.CASCADE_ROUTE: runner.route.name, semconv.GEN_AI_OPERATION_NAME: "chat",
                                 semconv.GEN_AI_REQUEST_MODEL: parsed.model})
            if parsed.model == DEFAULT_MODEL_ALIAS and self.route_adapters.get(runner.route.name):
                span.set_attribute(semconv.CASCADE_ADAPTER, self.route_adapters[runner.route.name])
            try:
                try:
                    async with asyncio.timeout(deadline_s):  # cancels tier calls in flight, engine work with them
                        result = await runner.run(parsed)
                except TimeoutError:
                    raise GatewayError(504, f"request did not finish within its deadline of {deadline_s:g} s",
                                       code="deadline_exceeded") from None
                body = _response_body(parsed, result)
            except GatewayError as error:
                span.set_attributes({semconv.CASCADE_OUTCOME: "failure", semconv.ERROR_TYPE: error.code or "error"})
                raise
            report = body["cascade"]
            report["request_id"] = body["id"]
            if parsed.model == DEFAULT_MODEL_ALIAS:
                report["adapter"] = self.route_adapters[runner.route.name]
            record_content(span, self.config.gateway.telemetry, input_messages=parsed.messages,
                           output_messages=[choice["message"] for choice in body["choices"]])
            if parsed.model == DEFAULT_MODEL_ALIAS:
                await self._record(runner.route, parsed, result.final, body["choices"][0]["message"])
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

    def _streams_by_token(self, parsed: ChatRequest) -> bool:
        """A vLLM tier addressed by name (no adapter) streams as it generates; everything else is answered whole."""
        tier = self.tiers.get(parsed.model)
        return tier is not None and isinstance(tier.backend, TierClient)

    def _tier_stream(self, parsed: ChatRequest, trace_context: dict[str, str] | None) -> AsyncIterator[str]:
        tier = self.tiers[parsed.model]
        stream_options = (parsed.model_extra or {}).get("stream_options") or {}  # an object: `_validate` saw to it
        return accounted_stream(tier.backend, tier.price, parsed.tier_body(tier.name), tracer=self.telemetry.tracer,
                                trace_context=trace_context,
                                deadline_s=request_deadline(parsed, None, self.config.gateway),
                                client_wants_usage=bool(stream_options.get("include_usage")))

    # ---- HTTP routes ------------------------------------------------------------------------------------

    @api.post("/v1/chat/completions", openapi_extra=json_body(chat_request_schema()))
    async def http_chat(self, request: Request) -> Response:
        key = self._authenticate(request)  # before the body is read: an anonymous caller costs nothing more
        payload = await read_json_body(request, self.config.gateway.max_body_bytes)
        parsed = await self._checked(payload)
        route = request.headers.get("x-cascade-route")
        await self._admit(key, parsed, route)
        deadline = request_deadline(parsed, request.headers.get(DEADLINE_HEADER), self.config.gateway)
        parsed = parsed.model_copy(update={"deadline_s": deadline})
        if not parsed.stream:
            body = await self._complete(parsed, route, trace_carrier(request.headers))
            return JSONResponse(body, headers={**_report_headers(body["cascade"]), **replica_headers()})
        if self._streams_by_token(parsed):
            lines = self._tier_stream(parsed, trace_carrier(request.headers))
            first = await anext(lines)  # errors before the first token still get their own status code
            return StreamingResponse(_prepend(first, lines), media_type="text/event-stream", headers=replica_headers())
        body = await self._complete(parsed, route, trace_carrier(request.headers))
        return StreamingResponse(_lines(completion_as_sse(body)), media_type="text/event-stream",
                                 headers={**_report_headers(body["cascade"]), **replica_headers()})

    @api.get("/v1/models")
    async def http_models(self, request: Request) -> dict[str, Any]:
        self._authenticate(request)
        ids = [DEFAULT_MODEL_ALIAS, *self.tiers]
        for name, tier in self.lora_tiers.items():
            ids += [f"{name}:{adapter}" for adapter in await asyncio.to_thread(available_adapters, tier.lora)]
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

    # ---- internals --------------------------------------------------------------------------------------

    async def _books_snapshot(self) -> dict[str, Any]:
        try:
            return await self.books.snapshot()
        except BooksUnavailableError:
            raise GatewayError(503, "the cluster's books are unavailable; try again shortly", code="books_unavailable",
                               retry_after_s=5) from None

    def _one_tier_route(self, tier: str) -> RouteConfig:
        """A tier alone. Its answers are scored as the default route scores them when that route starts on it:
        the confidence a client (or `cascade bench`) sees for the tier is then the one the cascade would act on."""
        default = self.config.route(DEFAULT_ROUTE)  # the config requires it
        scoring: dict[str, Any] = {}
        if self.config.route_tiers(default)[:1] == [tier]:
            scoring = {"confidence_policy": default.confidence_policy, "confidence_model": default.confidence_model}
        return RouteConfig(name=tier, tiers=[tier], max_repairs=0, **scoring)

    def _sync_adapters(self) -> None:
        """Rebuild the runner of each route whose serving adapter changed since the last request (a few small
        objects; the tiers' clients, breakers and handles are shared)."""
        generation, serving = self.books.serving_adapters
        if generation == self._adapters_generation:
            return
        self._adapters_generation = generation
        for route in self.config.routes:
            adapter = serving.get(route.name, route.adapter)
            if route.name in self.routes and self.route_adapters[route.name] == adapter:
                continue
            self.route_adapters[route.name] = adapter
            self.routes[route.name] = CascadeRunner(route, self._route_tiers(route, adapter),
                                                    self.judges.get(route.name), self.telemetry.tracer)

    def _route_tiers(self, route: RouteConfig, adapter: str | None) -> list[Tier]:
        """The route's tiers; with an adapter, its first tier runs it (same breaker: it is the same replicas)."""
        tiers = [self.tiers[name] for name in self.config.route_tiers(route)]
        if adapter is not None:
            tiers[0] = self._adapted(tiers[0].name, adapter)
        return tiers

    def _adapted(self, tier_name: str, adapter: str) -> Tier:
        tier = self.tiers[tier_name]
        return dataclasses.replace(tier, backend=AdapterClient(tier.backend, adapter))

    def _known_model(self, model: str) -> bool:
        """`cascade`, a tier, or `<tier>:<adapter>` for a tier with LoRA (the replica knows which adapters exist)."""
        if model == DEFAULT_MODEL_ALIAS or model in self.tiers:
            return True
        tier_name, colon, adapter = model.partition(":")
        valid_name = re.fullmatch(ADAPTER_NAME_PATTERN, adapter) is not None
        return bool(colon) and tier_name in self.lora_tiers and valid_name

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

    def _authenticate(self, request: Request) -> ApiKey | None:
        """The caller's key (None when auth is off). /healthz and /metrics stay open for probes and scrapers;
        the chart's NetworkPolicy decides who reaches them."""
        if self.keyring is None:
            return None
        try:
            return self.keyring.authenticate(request.headers.get("authorization"))
        except AccessError as error:
            raise as_gateway_error(error) from None

    async def _admit(self, key: ApiKey | None, request: ChatRequest, route: str | None) -> None:
        """May this key send this request now: its routes, direct tier access and rate limit (cluster-wide)."""
        if key is None:
            return
        direct = request.model != DEFAULT_MODEL_ALIAS
        try:
            self.keyring.authorize(key, route=None if direct else self._runner(request, route).route.name,
                                   tier=request.model if direct else None)
            await self.books.admit(key)
        except AccessError as error:
            raise as_gateway_error(error) from None

    async def _checked(self, request: ChatRequest | dict[str, Any]) -> ChatRequest:
        """`_validate`, once per request. Schemas new to this replica are validated in a thread: their first
        meta-validation costs milliseconds per KB (`bench/experiments/bench_verifier_cache.py`), which other requests
        on this replica should not wait for. Small ones seen before are compiled and cached (`policies.verifiers`),
        and validating the request again costs less than the hop to a thread, so it runs on the event loop; were
        their compiled form evicted since, recompiling a schema of at most `INLINE_SCHEMA_BYTES` stays short.
        """
        key = schema_key(request)
        if key is not None and key in self._validated_schemas:
            self._validated_schemas.move_to_end(key)
            return self._validate(request)
        parsed = await asyncio.to_thread(self._validate, request)
        if key is not None:
            self._validated_schemas[key] = None
            if len(self._validated_schemas) > SCHEMA_KEYS_KEPT:
                self._validated_schemas.popitem(last=False)
        return parsed

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
        if not self._known_model(parsed.model):
            known = ", ".join([DEFAULT_MODEL_ALIAS, *self.tiers, *(f"{t}:ADAPTER" for t in self.lora_tiers)])
            raise GatewayError(
                404, f"model {parsed.model!r} does not exist; known: {known}", param="model", code="model_not_found"
            )
        limit = self.config.gateway.max_tokens_limit
        requested = parsed.requested_max_tokens
        if requested is None:
            parsed = parsed.model_copy(update={"max_tokens": self.config.gateway.default_max_tokens})
        elif requested > limit:
            param = "max_completion_tokens" if parsed.max_completion_tokens else "max_tokens"
            raise GatewayError(400, f"{param} must be <= {limit}, got {requested}", param=param, code="invalid_value")
        tool_schemas = [tool.function.parameters for tool in parsed.tools or []]
        try:  # one budget for the whole request: a forced tool choice compiles every tool into one grammar
            check_request_limits([*tool_schemas, *([parsed.response_schema] if parsed.response_schema else [])])
        except InvalidSchemaError as error:
            raise GatewayError(400, str(error), param="tools" if tool_schemas else "response_format",
                               code="invalid_schema") from None
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
        stream_options = (parsed.model_extra or {}).get("stream_options")
        if stream_options is not None and not isinstance(stream_options, dict):
            raise GatewayError(400, "stream_options must be an object, e.g. {\"include_usage\": true}",
                               param="stream_options", code="invalid_value")
        if parsed.n > 1 and parsed.model == DEFAULT_MODEL_ALIAS:
            raise GatewayError(400, "n > 1 is not supported on model `cascade`: each answer would need its own "
                               "cascade; address a tier by name", param="n", code="invalid_value")
        return parsed

    def _runner(self, request: ChatRequest, route: str | None) -> CascadeRunner:
        if request.model != DEFAULT_MODEL_ALIAS:
            tier_name, _, adapter = request.model.partition(":")
            if adapter:  # built per request: adapter names are open-ended, the cost is a few small objects
                return CascadeRunner(self._one_tier_route(tier_name),
                                     [self._adapted(tier_name, adapter)], tracer=self.telemetry.tracer)
            return self.single_tier[request.model]
        name = route or request.route or DEFAULT_ROUTE
        self._sync_adapters()
        if name not in self.routes:
            raise GatewayError(
                400, f"route {name!r} does not exist; known: {', '.join(self.routes)}", param="route",
                code="route_not_found",
            )
        return self.routes[name]
