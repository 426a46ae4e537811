"""Server-side tool execution: validated calls only, bounded in time and in threads."""

from __future__ import annotations

import asyncio
import threading
import time

from opentelemetry import trace
from polling import wait_for

from deployments.tool_execution import ToolExecutor
from policies.tool_registry import ToolRegistry

release = threading.Event()


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def hang() -> str:
    """Wait until the test releases it."""
    release.wait(10)
    return "late"


def message(*calls: tuple[str, str]) -> dict:
    return {"tool_calls": [{"id": f"c{i}", "function": {"name": n, "arguments": a}} for i, (n, a) in enumerate(calls)]}


def executor(threads: int = 1, timeout_s: float = 5.0) -> ToolExecutor:
    """Tools given a wide timeout unless a test is about the timeout: a loaded machine can delay a thread."""
    registry = ToolRegistry()
    registry.register(add)
    registry.register(hang)
    return ToolExecutor(registry, timeout_s, threads=threads)


def run(tools: ToolExecutor, msg: dict) -> list[dict]:
    return asyncio.run(tools.execute(msg, trace.get_tracer(__name__)))


def test_valid_calls_run_invalid_and_unregistered_ones_never_do() -> None:
    results = run(executor(), message(("add", '{"a": 2, "b": 3}'), ("add", '{"a": "2", "b": 3}'), ("ls", "{}")))
    assert results[0] == {"tool_call_id": "c0", "name": "add", "executable": True, "executed": True, "result": 5}
    assert results[1]["executable"] is False and results[1]["executed"] is False
    assert results[2]["executed"] is False and "not a registered tool" in results[2]["error"]


def test_a_hanging_tool_times_out_as_unknown_and_a_full_pool_refuses_instead_of_queueing() -> None:
    release.clear()
    tools = executor(threads=1, timeout_s=0.2)
    started = time.monotonic()
    first, second = run(tools, message(("hang", "{}"), ("add", '{"a": 1, "b": 1}')))
    assert time.monotonic() - started < 10  # the hanging tool never returns by itself: a wide margin for load
    assert first["executed"] is None and "no result within" in first["error"]
    assert second["executed"] is False and "busy" in second["error"]
    release.set()  # the hung thread returns and goes back to the pool: then a call runs again
    wait_for(lambda: run(tools, message(("add", '{"a": 1, "b": 1}')))[0].get("result") == 2, 10,
             "the thread came back to the pool", every_s=0.05)
