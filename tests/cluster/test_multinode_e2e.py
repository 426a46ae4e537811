"""`cascade up --multinode` for real: a head plus autoscaled worker nodes (real raylets started by Ray's own
autoscaler with its local node provider), real vLLM engines on them, Serve autoscaling under a load burst,
and a worker node killed under load.

It replaces the session's one-node cluster, so it runs last (the `multinode` marker). Budget on a 2-core,
24 GB machine: the head, one LLM-pool node and at most two SLM-pool nodes, each SLM node one engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cluster.config import load_config
from cluster.config.node_types import HEAD_TYPE

CASCADE = str(Path(sys.executable).with_name("cascade"))
pytestmark = pytest.mark.multinode


def multinode_config() -> dict:
    """The embedded default with the waits cut short: scaling shows within a test's time, same mechanisms."""
    config = load_config().model_dump(mode="json")
    config["tiers"][0]["deployment"]["autoscaling"] |= {"upscale_delay_s": 2.0, "downscale_delay_s": 8.0}
    config["multinode"]["idle_timeout_s"] = 8.0
    return config


def _cascade(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CASCADE, *args], text=True, capture_output=True, timeout=timeout, check=False)


def _status() -> dict:
    result = _cascade("status", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def multinode_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The config file of a running multi-node cluster; the session's cluster is stopped first."""
    import ray

    if ray.is_initialized():  # this process's driver must not outlive the cluster it is connected to
        ray.shutdown()
    _cascade("down", timeout=300)
    config_path = tmp_path_factory.mktemp("multinode") / "cascade.yaml"
    config_path.write_text(yaml.safe_dump(multinode_config()))
    started = _cascade("up", "--multinode", "--config", str(config_path), "--timeout-s", "900")
    if started.returncode != 0:
        _cascade("down", timeout=300)
        pytest.fail(f"`cascade up --multinode` failed:\n{started.stdout}\n{started.stderr[-4000:]}")
    yield config_path
    _cascade("down", timeout=300)


def _replica_nodes(status: dict, deployment: str) -> list[dict]:
    return [node for node in status["nodes"] if node["alive"] and node["replicas"].get(deployment)]


def test_each_tier_lands_only_on_its_pool_and_the_gateway_on_the_head(multinode_cluster: Path) -> None:
    status = _status()
    by_type = {node["type"] for node in status["nodes"] if node["alive"]}
    assert {HEAD_TYPE, "pool_slm", "pool_llm"} <= by_type
    (head,) = [node for node in status["nodes"] if node["type"] == HEAD_TYPE]
    assert not {"pool_slm", "pool_llm"} & set(head["resources"])  # the head advertises no pool
    placements = {"tier-slm": "pool_slm", "tier-fallback": "pool_llm", "gateway": HEAD_TYPE}
    for deployment, pool in placements.items():
        nodes = _replica_nodes(status, deployment)
        assert nodes and {node["type"] for node in nodes} == {pool}, (deployment, nodes)


def test_a_one_node_cluster_is_not_started_over_a_multinode_one(multinode_cluster: Path) -> None:
    result = _cascade("up", "--config", str(multinode_cluster), "--timeout-s", "60", timeout=300)
    assert result.returncode == 2
    assert "a multi-node Ray cluster is already running; `cascade down` first" in result.stderr


def test_a_config_with_a_pool_the_running_cluster_has_no_node_type_for_is_refused(
    multinode_cluster: Path, tmp_path: Path
) -> None:
    config = multinode_config()
    config["tiers"][0]["deployment"]["ray_actor_options"]["resources"] = {"pool_new": 1}
    config["multinode"]["pools"].pop("pool_slm")
    path = tmp_path / "new-pool.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _cascade("up", "--multinode", "--config", str(path), "--timeout-s", "60", timeout=300)
    assert result.returncode == 2
    assert "the running cluster has no node type for ['pool_new']; `cascade down` first" in result.stderr


def test_load_scales_replicas_and_nodes_out_and_in_and_a_node_loss_loses_nothing(
    multinode_cluster: Path, tmp_path: Path
) -> None:
    """The issue's done-when: SLM replicas and SLM-pool nodes rise under load, a node killed under load is
    replaced with zero lost requests, and replicas then nodes fall after the load."""
    # The timeouts are caps for a slow machine: each phase ends on its event (scaled out, recovered, scaled in).
    result = _cascade("bench", "autoscale", "--config", str(multinode_cluster), "--kill-node", "--concurrency", "6",
                      "--phase-timeout-s", "600", "--out", str(tmp_path), timeout=3600)
    run = json.loads((tmp_path / "autoscale.json").read_text())
    summary = run["summary"]
    print(result.stdout)
    assert summary["lost"] == 0, summary
    assert summary["reached"] == {"scaled_out": True, "recovered": True, "scaled_in": True}, result.stderr[-3000:]
    assert result.returncode == 0
    assert summary["replicas"] == {"start": 1, "peak": 2, "end": 1}
    assert summary["pool_nodes"] == {"start": 1, "peak": 2, "end": 1}
    assert summary["ok"] > 0 and summary["sent"] == summary["ok"] + summary["error"]

    killed = summary["killed_node"]["node_id"]
    status = _status()
    nodes = {node["node_id"]: node for node in status["nodes"]}
    assert nodes[killed]["alive"] is False  # the GCS remembers the lost node as dead
    assert all(node["type"] == "pool_slm" for node in _replica_nodes(status, "tier-slm"))
    new_slm_nodes = [n for n in status["nodes"] if n["type"] == "pool_slm" and n["node_id"] > killed]
    assert new_slm_nodes, "the autoscaler started no node after the loss"  # fake-provider ids only grow
    assert (tmp_path / "autoscale_timeline.png").stat().st_size > 10_000
