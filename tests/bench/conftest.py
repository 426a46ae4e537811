"""A simulated LLM over real HTTP on a free loopback port (never 8000: a cluster may be serving there)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from bench.simulated_llm import SimulatedLLM, build_app
from cluster.evaluation.bfcl import load_cases


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(sim: SimulatedLLM) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(sim), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("simulated LLM did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def unused_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="module")
def sim_cases():
    return load_cases("simple_python", 60) + load_cases("parallel", 20) + load_cases("irrelevance", 20)


@pytest.fixture(scope="module")
def sim_url(sim_cases) -> Iterator[str]:
    """Base URL of a simulated LLM, 70% accurate, ~5 ms median latency."""
    server, thread, url = start_server(SimulatedLLM(sim_cases, accuracy=0.7, seed=1, latency_median_ms=5))
    yield url
    server.should_exit = True
    thread.join(timeout=10)
