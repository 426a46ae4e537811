"""The load generator: loopback only, bounded by count and time, percentiles and errors per level."""

import asyncio

import pytest

from bench.load import LoadError, require_loopback, run_load
from bench.runner import parse_policies, request_body
from cluster.evaluation.bfcl import load_cases


@pytest.mark.parametrize("url", ["http://192.0.2.1:8000/v1", "http://[2001:db8::1]:8000/v1", "https://10.0.0.5/v1"])
def test_non_loopback_hosts_are_refused(url):
    with pytest.raises(LoadError, match="only loopback"):
        require_loopback(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8100/v1", "http://[::1]:8100/v1", "http://localhost:8100/v1"])
def test_loopback_hosts_are_allowed(url):
    require_loopback(url)


def test_levels_replicas_and_errors(sim_url):
    policy = parse_policies(["llm-only"])[0]
    bodies = [request_body(case, policy, guided=True) for case in load_cases("simple_python", 5)]
    bodies.append({"model": "x", "messages": "not a list"})  # the server answers 400: counted, not raised
    samples = iter(range(1000))
    report = asyncio.run(run_load(sim_url, bodies, [1, 4], 12, 60, lambda: {"slm": next(samples)},
                                  sample_every_s=0.01))
    assert [level.concurrency for level in report.levels] == [1, 4]
    for level in report.levels:
        assert level.requests == 12 and level.ok == 10 and level.errors_by_status == {"400": 2}
        assert level.latency_p50_ms <= level.latency_p95_ms <= level.latency_p99_ms
        assert level.throughput_rps > 0 and not level.stopped_by_deadline
    assert report.replicas and report.replicas[0]["counts"] == {"slm": 0}
    assert set(report.to_dict()) == {"levels", "replicas"}


def test_deadline_bounds_the_run(sim_url):
    body = request_body(load_cases("simple_python", 1)[0], parse_policies(["slm-only"])[0], guided=True)
    report = asyncio.run(run_load(sim_url, [body], [1, 2, 4], 100_000, 0.5))
    assert sum(level.requests for level in report.levels) < 100_000
    assert any(level.stopped_by_deadline for level in report.levels)
