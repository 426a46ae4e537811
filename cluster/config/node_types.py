"""Node types from the config: which Ray nodes exist and what they advertise, locally and on Kubernetes alike.

A pool is a custom Ray resource a deployment asks for (`ray_actor_options.resources: {pool_slm: 1}`). Its
replicas can only land on nodes that advertise it, so the resource *is* the placement rule:
  - `cascade up` (one node): the head advertises every pool, sized for every replica the config allows;
  - `cascade up --multinode`: the head advertises no pool; each pool is a worker node type that Ray's own
    autoscaler (v1, with its local "fake multinode" provider) adds and removes as Serve's replicas need it;
  - Kubernetes: each pool is a chart `workerGroup` advertising it in `customResources` (the chart refuses a
    tier whose pool no group advertises).
Pure: it builds data (the autoscaler's cluster config is validated against Ray's own schema in the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cluster.config import CascadeConfig, PoolConfig

POOL_LABEL = "slm-cascade/pool"  # Ray node label: the pool a node serves, or HEAD_TYPE
HEAD_TYPE = "head"
AUTOSCALER_HEAD_TYPE = "ray.head.default"  # the head's node type in the fake provider (fixed by Ray)
LOCAL_OBJECT_STORE_BYTES = 100 * 1024 * 1024  # per worker node: replicas pass small messages, not tensors


@dataclass(frozen=True)
class NodeType:
    """One autoscaled worker node type: a pool."""

    pool: str
    num_cpus: float
    num_gpus: int  # enough for the replicas one node holds
    resources: dict[str, float]  # custom resources, the pool's included
    min_nodes: int
    max_nodes: int


def worker_node_types(config: CascadeConfig) -> dict[str, NodeType]:
    """Every pool the deployments ask for, sized by `multinode.pools` where given, by defaults otherwise."""
    node_types = {}
    for pool in sorted(config.pool_demand()):
        settings = config.multinode.pools.get(pool, PoolConfig())
        gpus = max((math.ceil(options.ray_actor_options.num_gpus * settings.per_node
                              / options.ray_actor_options.resources[pool])
                    for options in config.deployment_options.values() if pool in options.ray_actor_options.resources),
                   default=0)
        node_types[pool] = NodeType(pool, settings.num_cpus, gpus, {pool: settings.per_node},
                                    settings.min_nodes, settings.max_nodes)
    return node_types


def helm_worker_groups(config: CascadeConfig) -> list[dict]:
    """The chart's `workerGroups` for the same pools: one group per node type, advertising the same resource.

    Pod sizes (CPU, memory requests) and GPU node selectors are the platform's to add; the chart asks for
    them, this only fixes what placement depends on.
    """
    return [
        {"name": node_type.pool.replace("_", "-"),
         **({"gpus": node_type.num_gpus} if node_type.num_gpus else {"cpuOnly": True}),
         "minReplicas": node_type.min_nodes, "maxReplicas": node_type.max_nodes,
         "idleTimeoutSeconds": math.ceil(config.multinode.idle_timeout_s),
         "customResources": dict(node_type.resources)}
        for node_type in worker_node_types(config).values()
    ]


def single_node_resources(config: CascadeConfig) -> dict[str, float]:
    """What the head of a one-node cluster advertises beyond CPUs: each pool, enough for all its replicas."""
    return {pool: float(math.ceil(amount)) for pool, amount in sorted(config.pool_demand().items())}


def _cpus(amount: float) -> int | float:
    """Ray's `--num-cpus` and node-type CPU counts: whole numbers where they are whole."""
    return int(amount) if float(amount).is_integer() else amount


def autoscaler_config(config: CascadeConfig, cluster_name: str = "slm-cascade-local") -> dict:
    """The cluster config `ray start --head --autoscaling-config` reads, for the local node provider.

    Worker nodes are real raylets on this machine, started and stopped by the autoscaler; the provider
    assumes the head's GCS at this machine's address on Ray's default port.
    """
    node_types = worker_node_types(config)
    available = {
        AUTOSCALER_HEAD_TYPE: {
            "resources": {"CPU": _cpus(config.multinode.head_num_cpus)}, "node_config": {}, "max_workers": 0,
            "labels": {POOL_LABEL: HEAD_TYPE},
        }
    }
    for node_type in node_types.values():
        available[node_type.pool] = {
            "resources": {"CPU": _cpus(node_type.num_cpus),
                          **({"GPU": node_type.num_gpus} if node_type.num_gpus else {}),
                          **node_type.resources, "object_store_memory": LOCAL_OBJECT_STORE_BYTES},
            "node_config": {},
            "min_workers": node_type.min_nodes,
            "max_workers": node_type.max_nodes,
            "labels": {POOL_LABEL: node_type.pool},
        }
    return {
        "cluster_name": cluster_name,
        "max_workers": sum(node_type.max_nodes for node_type in node_types.values()),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "available_node_types": available,
        "head_node_type": AUTOSCALER_HEAD_TYPE,
        "idle_timeout_minutes": config.multinode.idle_timeout_s / 60,
        "upscaling_speed": 1.0,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
