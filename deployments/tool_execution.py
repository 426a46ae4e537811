"""Validator-first server-side tool execution: a call runs only if it validates against its registered tool.

Used by routes with `tool_execution: server`, and only for answers the cascade verified. The registry
(pure: schemas and validation) lives in `policies.tool_registry`; running the function, under a deadline and
off the event loop, is this edge's job. A Python thread cannot be stopped, so tools run on a small pool of
their own: a tool that hangs past its deadline holds one of its threads, never the event loop's executor,
and when every thread is held the next call is refused as busy instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry import trace

from cluster.telemetry import semconv
from policies.tool_registry import ToolRegistry, ToolValidationError, ValidatedCall


class ToolExecutor:
    def __init__(self, registry: ToolRegistry, timeout_s: float, threads: int = 4) -> None:
        self.registry = registry
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cascade-tool")
        self._free = threading.BoundedSemaphore(threads)

    async def execute(self, message: dict[str, Any], tracer: trace.Tracer) -> list[dict[str, Any]]:
        """One result per tool call: executed (with its result or error), or refused with the reason."""
        results = []
        for call in message.get("tool_calls") or []:
            name, arguments = call["function"]["name"], call["function"].get("arguments") or ""
            with tracer.start_as_current_span(semconv.SPAN_TOOL, attributes={"cascade.tool.name": name}) as span:
                results.append(await self._execute_one(call["id"], name, arguments))
                span.set_attribute(semconv.CASCADE_TOOL_CALL_EXECUTABLE, results[-1]["executable"])
        return results

    async def _execute_one(self, call_id: str, name: str, arguments: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"tool_call_id": call_id, "name": name, "executable": False, "executed": False}
        if name not in self.registry:
            return {**entry, "error": f"{name!r} is not a registered tool; the client executes it"}
        try:
            validated = self.registry.validate(name, arguments)
        except ToolValidationError as error:
            return {**entry, "error": f"not executed: {'; '.join(error.problems)}"}
        entry["executable"] = True
        if not self._free.acquire(blocking=False):
            return {**entry, "error": "not executed: every tool thread is busy; retry later"}
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._run, validated)
        try:
            value = await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            # The thread may still finish the work: whether the tool took effect is unknown, and said so.
            return {**entry, "executed": None, "error": f"no result within {self.timeout_s:g} s"}
        except Exception as error:  # noqa: BLE001 - a tool's own failure is reported to the client, not raised
            return {**entry, "executed": True, "error": f"{type(error).__name__}: {error}"}
        return {**entry, "executed": True, "result": json.loads(json.dumps(value, default=str))}

    def _run(self, validated: ValidatedCall) -> Any:
        try:
            return validated.invoke()
        finally:
            self._free.release()
