"""Node types from the config: the same pools locally (one node or the autoscaled multi-node cluster) and in
the chart; the autoscaler's cluster config is checked against Ray's own schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from bench.autoscale import ScalingTargetError, Targets, scaling_targets
from cluster.config import load_config, parse_config
from cluster.config.node_types import (
    AUTOSCALER_HEAD_TYPE,
    HEAD_TYPE,
    POOL_LABEL,
    autoscaler_config,
    helm_worker_groups,
    single_node_resources,
    worker_node_types,
)
from cluster.operations.topology import NodeState, ReplicaPlacement, alive_nodes_by_type, nodes_report

RAY_CLUSTER_SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def _default() -> dict:
    return load_config().model_dump(mode="json")


def _gpu_config() -> dict:
    """Two GPU tiers on their own pools, two replicas per SLM node."""
    data = _default()
    data["tiers"][0]["deployment"]["ray_actor_options"] = {"num_cpus": 2, "num_gpus": 1, "resources": {"pool_slm": 1}}
    data["tiers"][0]["deployment"]["autoscaling"] = {"min_replicas": 0, "max_replicas": 4}
    data["tiers"][1]["deployment"]["ray_actor_options"] = {"num_cpus": 4, "num_gpus": 1, "resources": {"pool_llm": 1}}
    data["multinode"]["pools"]["pool_slm"] = {"num_cpus": 4, "per_node": 2, "max_nodes": 2}
    return data


def test_the_default_has_one_node_type_per_tier_pool() -> None:
    types = worker_node_types(load_config())
    assert sorted(types) == ["pool_llm", "pool_slm"]
    assert types["pool_slm"].resources == {"pool_slm": 1.0} and types["pool_slm"].max_nodes == 2
    assert types["pool_llm"].max_nodes == 1 and types["pool_slm"].num_gpus == 0


@pytest.mark.parametrize("data", [_default(), _gpu_config()], ids=["default", "gpu"])
def test_the_autoscaler_config_passes_rays_cluster_schema(data: dict) -> None:
    jsonschema.validate(autoscaler_config(parse_config(data)), RAY_CLUSTER_SCHEMA)


def test_the_multinode_head_advertises_no_pool_and_workers_only_theirs() -> None:
    node_types = autoscaler_config(load_config())["available_node_types"]
    head = node_types.pop(AUTOSCALER_HEAD_TYPE)
    assert set(head["resources"]) == {"CPU"} and head["max_workers"] == 0
    assert head["labels"] == {POOL_LABEL: HEAD_TYPE}
    for pool, node_type in node_types.items():
        assert set(node_type["resources"]) - {"CPU", "object_store_memory"} == {pool}
        assert node_type["labels"] == {POOL_LABEL: pool}


def test_gpu_pools_size_nodes_for_the_replicas_they_hold() -> None:
    config = parse_config(_gpu_config())
    types = worker_node_types(config)
    assert types["pool_slm"].num_gpus == 2  # per_node 2, one GPU per replica
    assert types["pool_llm"].num_gpus == 1
    assert autoscaler_config(config)["available_node_types"]["pool_slm"]["resources"]["GPU"] == 2
    groups = {group["name"]: group for group in helm_worker_groups(config)}
    assert groups["pool-slm"]["gpus"] == 2 and "cpuOnly" not in groups["pool-slm"]
    assert groups["pool-slm"]["customResources"] == {"pool_slm": 2.0}


def test_one_node_advertises_every_pool_for_all_its_replicas() -> None:
    assert single_node_resources(load_config()) == {"pool_llm": 1.0, "pool_slm": 2.0}
    data = _default()
    data["tiers"][0]["deployment"]["ray_actor_options"]["resources"] = {"pool_slm": 0.3}
    assert single_node_resources(parse_config(data))["pool_slm"] == 1.0  # 0.6 rounded up to a whole unit


def test_a_config_without_pools_has_no_node_types() -> None:
    data = _default()
    for tier in data["tiers"]:
        tier["deployment"]["ray_actor_options"]["resources"] = {}
    data["multinode"]["pools"] = {}
    config = parse_config(data)
    assert worker_node_types(config) == {} and single_node_resources(config) == {}
    assert autoscaler_config(config)["max_workers"] == 0


def test_scaling_targets_follow_the_tier_and_pool_bounds() -> None:
    assert scaling_targets(load_config(), "slm") == ("pool_slm", Targets(2, 1, 2, 1))
    assert scaling_targets(parse_config(_gpu_config()), "slm") == ("pool_slm", Targets(4, 0, 2, 0))


def _slm_without_pool(data: dict) -> None:
    data["tiers"][0]["deployment"]["ray_actor_options"]["resources"] = {}
    data["multinode"]["pools"].pop("pool_slm")


@pytest.mark.parametrize(("tier", "mutate", "message"), [
    ("nope", lambda c: None, "not a vLLM tier"),
    ("fallback", lambda c: None, "nothing to scale"),
    ("slm", _slm_without_pool, "asks for 0 pools"),
])
def test_scaling_targets_refuse_a_tier_that_cannot_show_scaling(tier, mutate, message) -> None:
    data = _default()
    mutate(data)
    with pytest.raises(ScalingTargetError, match=message):
        scaling_targets(parse_config(data), tier)


def test_nodes_report_counts_running_replicas_per_node() -> None:
    nodes = [NodeState("h", HEAD_TYPE, True, {"CPU": 1.0}), NodeState("a", "pool_slm", True, {"pool_slm": 1.0}),
             NodeState("b", "pool_slm", False, {})]
    replicas = [ReplicaPlacement("app", "gateway", "g1", "RUNNING", "h", 1),
                ReplicaPlacement("app", "tier-slm", "s1", "RUNNING", "a", 2),
                ReplicaPlacement("app", "tier-slm", "s2", "STARTING", "a", 3),
                ReplicaPlacement("app", "tier-slm", "s3", "RUNNING", "b", None)]
    report = {node["node_id"]: node for node in nodes_report(nodes, replicas)}
    assert report["h"]["replicas"] == {"gateway": 1}
    assert report["a"]["replicas"] == {"tier-slm": 1} and report["a"]["type"] == "pool_slm"
    assert report["b"]["alive"] is False
    assert alive_nodes_by_type(nodes) == {HEAD_TYPE: 1, "pool_slm": 1}


def test_render_worker_groups_prints_the_charts_groups_for_the_config() -> None:
    cascade = str(Path(sys.executable).with_name("cascade"))
    result = subprocess.run([cascade, "render", "worker-groups"], capture_output=True, text=True, check=True)
    assert yaml.safe_load(result.stdout) == {"workerGroups": helm_worker_groups(load_config())}
