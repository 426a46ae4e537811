"""Validator-first server-side tool execution: a call runs only if it validates against its registered tool.

Used by routes with `tool_execution: server`. The registry (pure: schemas and validation) lives in
`policies.tool_registry`; running the function, under a deadline and off the event loop, is this edge's job.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from opentelemetry import trace

from cluster.telemetry import semconv
from policies.tool_registry import ToolRegistry, ToolValidationError


async def execute_tool_calls(
    registry: ToolRegistry, message: dict[str, Any], timeout_s: float, tracer: trace.Tracer
) -> list[dict[str, Any]]:
    """One result per tool call: executed (with its result or error), or refused with the reason."""
    results = []
    for call in message.get("tool_calls") or []:
        name, arguments = call["function"]["name"], call["function"].get("arguments") or ""
        with tracer.start_as_current_span(semconv.SPAN_TOOL, attributes={"cascade.tool.name": name}) as span:
            results.append(await _execute_one(registry, call["id"], name, arguments, timeout_s))
            span.set_attribute(semconv.CASCADE_TOOL_CALL_EXECUTABLE, results[-1]["executable"])
    return results


async def _execute_one(
    registry: ToolRegistry, call_id: str, name: str, arguments: str, timeout_s: float
) -> dict[str, Any]:
    entry: dict[str, Any] = {"tool_call_id": call_id, "name": name, "executable": False, "executed": False}
    if name not in registry:
        return {**entry, "error": f"{name!r} is not a registered tool; the client executes it"}
    try:
        validated = registry.validate(name, arguments)
    except ToolValidationError as error:
        return {**entry, "error": f"not executed: {'; '.join(error.problems)}"}
    entry["executable"] = True
    try:
        value = await asyncio.wait_for(asyncio.to_thread(validated.invoke), timeout_s)
    except TimeoutError:
        return {**entry, "executed": True, "error": f"timed out after {timeout_s:g} s"}
    except Exception as error:  # noqa: BLE001 - a tool's own failure is reported to the client, not raised
        return {**entry, "executed": True, "error": f"{type(error).__name__}: {error}"}
    return {**entry, "executed": True, "result": json.loads(json.dumps(value, default=str))}
