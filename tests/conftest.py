"""The session's real cluster: `cascade up` on the embedded default (real vLLM engines on the bundled models).

Started once, on first use, by the same command the README gives, and stopped at the end. Tests that only
need pure logic never touch it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CASCADE = str(Path(sys.executable).with_name("cascade"))
BASE_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    """Base URL of the running embedded-default cluster.

    With CASCADE_TEST_REUSE_CLUSTER=1 the tests use a cluster already started by `cascade up` and leave it
    running: quicker while developing, same code paths.
    """
    if os.environ.get("CASCADE_TEST_REUSE_CLUSTER") == "1":
        yield BASE_URL
        return
    started = subprocess.run([CASCADE, "up", "--timeout-s", "900"], text=True, capture_output=True)
    if started.returncode != 0:
        subprocess.run([CASCADE, "down"], check=False)
        pytest.fail(f"`cascade up` failed:\n{started.stdout}\n{started.stderr[-4000:]}")
    yield BASE_URL
    subprocess.run([CASCADE, "down"], check=False, capture_output=True)


@pytest.fixture(scope="session")
def openai_client(cluster: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{cluster}/v1", api_key="not-needed-locally", timeout=120, max_retries=0)


@pytest.fixture(scope="session")
def gateway_handle(cluster: str):
    """The application's DeploymentHandle, as a Python caller inside the Ray cluster gets it."""
    import ray
    from ray import serve

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    yield serve.get_app_handle("slm-cascade")
    ray.shutdown()
