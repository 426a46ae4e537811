"""Where things run: the cluster's nodes (pool, resources, alive) and each Serve replica's node.

Read from a connected Ray driver: nodes from the GCS (`ray.nodes()`), replicas from the Serve controller's
instance details (the same `ServeInstanceDetails` the dashboard's Serve REST API returns, read here without a
dashboard, which the local cluster does not run).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from cluster.config.node_types import HEAD_TYPE, POOL_LABEL

UNLABELLED = "unlabelled"  # a node started by something other than slm-cascade


@dataclass(frozen=True)
class NodeState:
    node_id: str
    type: str  # its pool, HEAD_TYPE, or UNLABELLED
    alive: bool
    resources: dict[str, float]  # what it advertises; Ray reports none for a dead node


@dataclass(frozen=True)
class ReplicaPlacement:
    app: str
    deployment: str
    replica_id: str
    state: str
    node_id: str | None
    pid: int | None


def read_nodes() -> list[NodeState]:
    """Every node the GCS knows, dead ones included (they show a node loss), head first."""
    import ray

    nodes = []
    for node in ray.nodes():
        resources = {name: amount for name, amount in node["Resources"].items() if not name.startswith("node:")}
        node_type = (node.get("Labels") or {}).get(POOL_LABEL)
        if node_type is None:
            node_type = HEAD_TYPE if "node:__internal_head__" in node["Resources"] else UNLABELLED
        nodes.append(NodeState(node["NodeID"], node_type, bool(node["Alive"]), resources))
    return sorted(nodes, key=lambda node: (node.type != HEAD_TYPE, node.node_id))


def read_replicas() -> list[ReplicaPlacement]:
    """Each replica of every application: its state and the node it runs on."""
    from ray.serve.context import _get_global_client

    details: dict[str, Any] = _get_global_client().get_serve_details()
    return [
        ReplicaPlacement(app_name, name, replica["replica_id"], getattr(replica["state"], "value", replica["state"]),
                         replica.get("node_id"), replica.get("pid"))
        for app_name, app in details.get("applications", {}).items()
        for name, deployment in app.get("deployments", {}).items()
        for replica in deployment.get("replicas", [])
    ]


def nodes_report(nodes: list[NodeState], replicas: list[ReplicaPlacement]) -> list[dict[str, Any]]:
    """`cascade status --json`'s `nodes`: each node with its RUNNING replicas per deployment."""
    running = [r for r in replicas if r.state == "RUNNING"]
    return [
        {"node_id": node.node_id, "type": node.type, "alive": node.alive, "resources": node.resources,
         "replicas": dict(Counter(r.deployment for r in running if r.node_id == node.node_id))}
        for node in nodes
    ]


def alive_nodes_by_type(nodes: list[NodeState]) -> dict[str, int]:
    return dict(Counter(node.type for node in nodes if node.alive))
