"""The session's real cluster: `cascade up` on the embedded default (real vLLM engines on the bundled models).

Started once, on first use, by the same command the README gives, and stopped at the end. Tests that only
need pure logic never touch it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from auth_keys import ADMIN_KEY, PEER_KEY, auth_config
from cluster_state import CLUSTER_CONFIG_NAME, cluster_state_dir
from hypothesis import settings
from lora_adapters import make_random_adapter
from otlp_receiver import OtlpReceiver

from cluster.operations.client_auth import API_KEY_ENV

# Property tests draw the same examples on every run and every machine (no example database carried between
# runs): a test that passes once passes in CI, and one that fails, fails for everyone. No per-example deadline:
# a loaded CI machine can pause a fast example past Hypothesis's 200 ms; speed is the benchmarks' job.
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None)
settings.load_profile("deterministic")

CASCADE = str(Path(sys.executable).with_name("cascade"))
BASE_URL = "http://127.0.0.1:8000"
REMOTE_KEY_ENV = "CASCADE_TEST_REMOTE_KEY"
REMOTE_KEY = PEER_KEY
TEST_ADAPTERS = ("alpha", "beta")
SERVED_TOOLS_DIR = Path(__file__).resolve().parent / "served_tools"  # tools the test gateway executes


def cluster_config_for_tests(otlp_endpoint: str, state_dir: Path) -> dict:
    """The embedded default plus what the cascade tests need; every tier and route of the default is kept.

    The remote tier is a real OpenAI-protocol server over HTTP: this cluster's own gateway, asked for its
    `fallback` tier, so the remote path crosses a real socket without a second cluster. The SLM runs two
    replicas with LoRA (adapter affinity needs a choice of replica; a killed replica leaves one serving), and so
    does the gateway.
    """
    from cluster.config import load_config

    config = load_config().model_dump(mode="json")
    slm = config["tiers"][0]
    slm["lora"] = {"max_loras": 2, "max_lora_rank": 8, "adapter_dir": str(state_dir / "adapters")}
    slm["engine_args"]["kv_cache_memory_bytes"] = 512 * 1024 * 1024  # two replicas and the fallback in 24 GB
    slm["deployment"]["ray_actor_options"]["num_cpus"] = 0.4  # Ray schedules 2 logical CPUs on 2 cores
    slm["deployment"]["autoscaling"] = {"min_replicas": 2, "max_replicas": 2}
    config["tiers"][1]["deployment"]["ray_actor_options"]["num_cpus"] = 0.4
    # Two gateway replicas, as a platform team runs: every test goes through one set of cluster-wide books.
    config["gateway"]["deployment"]["autoscaling"] = {"min_replicas": 2, "max_replicas": 2}
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
        # pre-routed past the SLM, every request: its verified answers are recorded (`cascade adapt` data)
        {"name": "recorded", "tiers": ["slm", "fallback"], "difficulty": {"predictor": "constant",
                                                                          "hard_threshold": 0.0}},
        {"name": "adapted", "tiers": ["slm", "fallback"], "adapter": "alpha"},
        # `cascade adapt` rounds promote and roll back adapters here, replaying `kept` as the regression set;
        # training asks Ray for a sliver of a CPU, which is what this 2-core cluster has left
        {"name": "distilled", "tiers": ["slm", "fallback"], "adaptation": {
            "regression_routes": ["kept"], "regression_margin": 0.25, "rollback_min_requests": 4,
            "rollback_max_drop": 0.25, "train_resources": {"num_cpus": 0.05}, "train_timeout_s": 900}},
        {"name": "kept", "tiers": ["slm", "fallback"], "record": False},
        # only the two-replica books test sends here: pre-routed to the fallback, so its answers are recorded
        {"name": "shared", "tiers": ["slm", "fallback"], "difficulty": {"predictor": "constant",
                                                                        "hard_threshold": 0.0}},
    ]
    config["gateway"]["recording"] = {"enabled": True, "path": str(state_dir / "recordings.sqlite")}
    config["gateway"]["telemetry"] = {"otlp_endpoint": otlp_endpoint, "otlp_protocol": "http",
                                      "schedule_delay_ms": 200}
    config["gateway"]["tools"] = ["demo_tools:add", "demo_tools:convert_temperature"]  # on PYTHONPATH below
    config["gateway"]["auth"] = auth_config()  # what a deployment beyond loopback runs with
    return config


def pytest_configure(config: pytest.Config) -> None:
    """No Ray call in this process may start a Ray instance of its own (Ray's default when none is connected).

    After the handle fixture's driver disconnects, Serve's router thread would, and a stray local instance
    would be taken for the cluster the multi-node tests start next. Ray reads this when first imported,
    which is after this hook (test modules are collected later).
    """
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the marker below must already be there
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a live cluster (the session's, directly or through another fixture, or a multi-node
    one of its own) carries the `cluster` marker, so `-m "not cluster"` never starts (or stops) one.
    Fault-injection tests take parts of the shared cluster down: they go last, whatever the file order; the
    multi-node tests replace it with a cluster of their own, after them."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()) or item.get_closest_marker("multinode") is not None:
            item.add_marker(pytest.mark.cluster)
    items.sort(key=lambda item: (item.get_closest_marker("multinode") is not None,
                                 item.get_closest_marker("faults") is not None))


@pytest.fixture(scope="session")
def prepared_slm() -> Path:
    """The embedded SmolLM2 as a local HF folder, converted first if needed (what `cascade up` would do)."""
    from cluster.store.models import prepare_model

    return prepare_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Where every deployment of the test cluster exports its spans (real OTLP/HTTP exporters)."""
    with OtlpReceiver(port=0) as receiver:
        yield receiver


@pytest.fixture(scope="session")
def cluster(otlp_receiver: OtlpReceiver, prepared_slm: Path) -> Iterator[str]:
    """Base URL of the running embedded-default cluster.

    With CASCADE_TEST_REUSE_CLUSTER=1 the tests use a cluster already started by `cascade up` and leave it
    running: quicker while developing, same code paths.
    """
    os.environ[API_KEY_ENV] = ADMIN_KEY  # what `cascade report` and the bench clients send
    os.environ[REMOTE_KEY_ENV] = REMOTE_KEY  # `cascade up` (and `cascade adapt`, which redeploys) require it set
    if os.environ.get("CASCADE_TEST_REUSE_CLUSTER") == "1":
        yield BASE_URL
        return
    state = cluster_state_dir()
    shutil.rmtree(state, ignore_errors=True)
    for seed, name in enumerate(TEST_ADAPTERS):
        make_random_adapter(state / "adapters" / name, seed)
    config_path = state / CLUSTER_CONFIG_NAME  # `cascade adapt` rewrites it, as it would an operator's file
    config_path.write_text(yaml.safe_dump(cluster_config_for_tests(otlp_receiver.endpoint, state)))
    # Ray's workers inherit this environment: the gateway replicas import the test's tools from there.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SERVED_TOOLS_DIR),
                                                                              os.environ.get("PYTHONPATH")]))}
    started = subprocess.run([CASCADE, "up", "--config", str(config_path), "--timeout-s", "900"], check=False,
                             text=True, capture_output=True, env=environment)
    if started.returncode != 0:
        subprocess.run([CASCADE, "down"], check=False)
        pytest.fail(f"`cascade up` failed:\n{started.stdout}\n{started.stderr[-4000:]}")
    yield BASE_URL
    subprocess.run([CASCADE, "down"], check=False, capture_output=True)


@pytest.fixture(scope="session")
def openai_client(cluster: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{cluster}/v1", api_key=ADMIN_KEY, timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def gateway_handle(cluster: str):
    """The application's DeploymentHandle, as a Python caller inside the Ray cluster gets it.

    Per module, and its router stopped before the driver disconnects: a router left running keeps pushing
    metrics from its own thread, against a cluster this process is no longer connected to.
    """
    import ray
    from ray import serve

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    handle = serve.get_app_handle("slm-cascade")
    yield handle
    handle.shutdown()
    ray.shutdown()


@pytest.fixture
def deployment_handle(gateway_handle) -> Iterator[Callable[[str], Any]]:
    """Opens handles to single deployments of the app (inside the module's Ray connection); each one's router is
    stopped after the test, for the reason given in `gateway_handle`."""
    from ray import serve

    opened = []

    def open_handle(deployment: str) -> Any:
        opened.append(serve.get_deployment_handle(deployment, app_name="slm-cascade"))
        return opened[-1]

    yield open_handle
    for handle in opened:
        handle.shutdown()


@pytest.fixture(scope="session")
def remote_key() -> str:
    """The API key the remote tier sends; it must never appear in a response."""
    return REMOTE_KEY
