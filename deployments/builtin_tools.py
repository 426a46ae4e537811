"""Small deterministic tools shipped for server-side execution demos and tests.

Register them with `gateway.tools: ["deployments.builtin_tools:add", ...]`; any importable function with
type hints works the same way.
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
