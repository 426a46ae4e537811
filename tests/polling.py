"""Waiting for an event in a test: bounded by a cap far above the slow case, ended by the event itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 1.0) -> Any:
    """`condition()`'s first truthy value, asked every `every_s`; the test fails naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"not within {timeout_s:g} s: {what}")
