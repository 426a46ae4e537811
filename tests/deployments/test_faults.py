"""The fault-injection harness on the real cluster: kill the SLM's replica, then its engine, under load.

Each run must lose nothing (every request answered 2xx or with an explicit error), and the tier must come
back: Serve replaces the replica and the SLM answers again. These tests run last (see conftest): they take the
SLM away for about a minute each, and wait until it serves again before they return.
"""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from bench.fault_recovery import LOAD_BODY, format_summary, run_fault
from cluster.operations.fault_injection import kill_engine, kill_replica

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

APP, DEPLOYMENT = "slm-cascade", "tier-slm"


@pytest.mark.parametrize("fault", [kill_replica, kill_engine], ids=["replica", "engine"])
def test_a_killed_slm_loses_no_request_and_recovers(cluster: str, fault) -> None:
    # max_duration_s is a cap for a slow machine: the run ends once the tier serves again
    run = asyncio.run(run_fault(f"{cluster}/v1", LOAD_BODY, partial(fault, APP, DEPLOYMENT),
                                fault=f"{fault.__name__} {DEPLOYMENT}", app=APP, deployment=DEPLOYMENT, tier="slm",
                                concurrency=3, before_s=10, after_s=5, max_duration_s=900, on_progress=print))
    summary = run.summary()
    print(format_summary(summary))
    assert summary["lost"] == 0, summary
    assert summary["requests_before"] > 0 and summary["requests_during"] > 0, summary
    assert summary["replica_replaced_after_s"] is not None, "Serve replaced the replica"
    assert summary["replacement"]["pid"] != summary["victim"]["pid"]
    assert summary["tier_serving_again_after_s"] is not None, "the SLM answers again"
    assert summary["ok"] > summary["error"], "the fallback kept serving while the SLM was down"
