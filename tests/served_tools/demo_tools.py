"""Small deterministic tools the test cluster's gateway executes server-side (`tool_execution: server`).

The test config registers them as `gateway.tools: ["demo_tools:add", ...]`; the cluster is started with this
folder (nothing else of tests/, whose `cluster/` would shadow the package) on PYTHONPATH, so that its replicas
import them. Any importable function with type hints works the same way.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def convert_temperature(
    value: Annotated[float, Field(ge=-273.15, le=1e6)], to_unit: Literal["celsius", "fahrenheit"]
) -> float:
    """Convert a temperature to the given unit from the other one."""
    return value * 9 / 5 + 32 if to_unit == "fahrenheit" else (value - 32) * 5 / 9
