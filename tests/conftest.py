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
import yaml

from otlp_receiver import OtlpReceiver

CASCADE = str(Path(sys.executable).with_name("cascade"))
BASE_URL = "http://127.0.0.1:8000"
REMOTE_KEY_ENV = "CASCADE_TEST_REMOTE_KEY"
REMOTE_KEY = "sk-test-remote-key-never-echoed"


def cluster_config_for_tests(otlp_endpoint: str) -> dict:
    """The embedded default plus what the cascade tests need; every tier and route of the default is kept.

    The remote tier is a real OpenAI-protocol server over HTTP: this cluster's own gateway, asked for its
    `fallback` tier, so the remote path crosses a real socket without a second cluster.
    """
    from cluster.config import load_config

    config = load_config().model_dump(mode="json")
    config["tiers"].append({
        "kind": "remote", "name": "remote-llm", "base_url": f"{BASE_URL}/v1", "remote_model": "fallback",
        "api_key_env": REMOTE_KEY_ENV, "price": {"input_per_1m_usd": 1.0, "output_per_1m_usd": 2.0},
    })
    config["routes"] += [
        {"name": "strict", "tiers": ["slm", "fallback"], "threshold": 1.0, "max_repairs": 0},
        {"name": "remote", "tiers": ["slm", "remote-llm"], "threshold": 1.0, "max_repairs": 0},
        {"name": "judged", "tiers": ["slm", "fallback"], "judge": {"method": "judge", "tier": "fallback",
                                                                  "pass_score": 0.0}},
        {"name": "tools", "tiers": ["slm", "fallback"], "tool_execution": "server"},
        {"name": "metered", "tiers": ["slm", "fallback"]},  # only the accounting test sends here
    ]
    config["gateway"]["telemetry"] = {"otlp_endpoint": otlp_endpoint, "otlp_protocol": "http",
                                      "schedule_delay_ms": 200}
    config["gateway"]["tools"] = ["deployments.builtin_tools:add", "deployments.builtin_tools:convert_temperature"]
    return config


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Where every deployment of the test cluster exports its spans (real OTLP/HTTP exporters)."""
    with OtlpReceiver(port=0) as receiver:
        yield receiver


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver) -> Iterator[str]:
    """Base URL of the running embedded-default cluster.

    With CASCADE_TEST_REUSE_CLUSTER=1 the tests use a cluster already started by `cascade up` and leave it
    running: quicker while developing, same code paths.
    """
    if os.environ.get("CASCADE_TEST_REUSE_CLUSTER") == "1":
        yield BASE_URL
        return
    config_path = tmp_path_factory.mktemp("cluster") / "cascade.yaml"
    config_path.write_text(yaml.safe_dump(cluster_config_for_tests(otlp_receiver.endpoint)))
    env = {**os.environ, REMOTE_KEY_ENV: REMOTE_KEY}
    started = subprocess.run(
        [CASCADE, "up", "--config", str(config_path), "--timeout-s", "900"], text=True, capture_output=True, env=env
    )
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


@pytest.fixture(scope="session")
def remote_key() -> str:
    """The API key the remote tier sends; it must never appear in a response."""
    return REMOTE_KEY
