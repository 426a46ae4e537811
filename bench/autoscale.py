"""The autoscaling harness: a load burst on a local multi-node cluster, and what Serve and Ray's autoscaler did.

Phases, each with its own deadline:
  idle      - a baseline, no load;
  scale-out - a closed-loop load until the tier has its most replicas and its pool the nodes they need;
  node loss - (optional) under the same load, SIGKILL a pool node holding one of those replicas, and wait
              until the GCS has marked it dead and the replicas and nodes are back;
  scale-in  - no load, until the replicas and then the nodes have fallen back to their minimum.
A sampler records, every `sample_every_s`: requests in flight, RUNNING replicas per deployment, alive nodes
per type, and the p95 latency of the requests that ended in the last window. Every request ends ok, as an
explicit error, or lost (bench/closed_loop.py); a run passes only with none lost. Loopback targets only.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.closed_loop import ClosedLoop, RequestRecord, p95_ms
from cluster.config import CascadeConfig, TierConfig
from cluster.config.node_types import worker_node_types
from cluster.operations.fault_injection import FaultInjectionError, kill_node
from cluster.operations.topology import NodeState, ReplicaPlacement, alive_nodes_by_type, read_nodes, read_replicas


@dataclass(frozen=True)
class Sample:
    t_s: float
    in_flight: int
    replicas: dict[str, int]  # RUNNING replicas per deployment
    nodes: dict[str, int]  # alive nodes per type
    p95_ms: float | None  # of the requests that ended in the last window


@dataclass(frozen=True)
class Targets:
    """What the phases wait for, from the config: the tier's replica bounds and the pool nodes they need."""

    max_replicas: int
    min_replicas: int
    max_nodes: int
    min_nodes: int


class ScalingTargetError(ValueError):
    """The tier cannot show autoscaling across nodes: not a vLLM tier, no pool, or no room to scale."""


def scaling_targets(config: CascadeConfig, tier_name: str) -> tuple[str, Targets]:
    """The tier's pool and the replica and node counts its Serve and node-type bounds imply."""
    tier = next((t for t in config.vllm_tiers if t.name == tier_name), None)
    if not isinstance(tier, TierConfig):
        raise ScalingTargetError(f"{tier_name!r} is not a vLLM tier of this config")
    asked = tier.deployment.ray_actor_options.resources
    node_types = worker_node_types(config)
    pools = [name for name in asked if name in node_types]
    if len(pools) != 1:
        raise ScalingTargetError(f"tier {tier_name!r} asks for {len(pools)} pools ({sorted(asked)}); one is needed")
    node_type, scaling = node_types[pools[0]], tier.deployment.autoscaling
    if scaling.max_replicas <= scaling.min_replicas:
        raise ScalingTargetError(f"tier {tier_name!r} has min_replicas == max_replicas: nothing to scale")

    def nodes_for(replicas: int) -> int:
        needed = math.ceil(replicas * asked[node_type.pool] / node_type.resources[node_type.pool])
        return min(node_type.max_nodes, max(node_type.min_nodes, needed))

    return node_type.pool, Targets(scaling.max_replicas, scaling.min_replicas,
                                   nodes_for(scaling.max_replicas), nodes_for(scaling.min_replicas))


@dataclass
class AutoscaleRun:
    app: str
    deployment: str
    pool: str
    concurrency: int
    targets: Targets
    samples: list[Sample] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)  # phase marks, seconds since the run started
    killed_node: dict[str, Any] | None = None
    records: list[RequestRecord] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        replicas = [sample.replicas.get(self.deployment, 0) for sample in self.samples]
        nodes = [sample.nodes.get(self.pool, 0) for sample in self.samples]
        marks = self.events
        return {
            "deployment": self.deployment, "pool": self.pool, "concurrency": self.concurrency,
            "targets": asdict(self.targets), "sent": len(self.records),
            **{outcome: sum(r.outcome == outcome for r in self.records) for outcome in ("ok", "error", "lost")},
            "errors_by_status": dict(Counter(str(r.status) for r in self.records if r.outcome == "error")),
            "answered_by_tier": dict(Counter(r.final_tier or "-" for r in self.records if r.outcome == "ok")),
            "replicas": {"start": replicas[0] if replicas else None, "peak": max(replicas, default=None),
                         "end": replicas[-1] if replicas else None},
            "pool_nodes": {"start": nodes[0] if nodes else None, "peak": max(nodes, default=None),
                           "end": nodes[-1] if nodes else None},
            "p95_ms": p95_ms(self.records),
            "scaled_out_after_s": _between(marks, "load_started", "scaled_out"),
            "node_dead_after_s": _between(marks, "node_killed", "node_dead"),
            "recovered_after_s": _between(marks, "node_killed", "recovered"),
            "scaled_in_after_s": _between(marks, "load_stopped", "scaled_in"),
            "events": marks, "killed_node": self.killed_node,
            "reached": {phase: phase in marks for phase in ("scaled_out", "recovered", "scaled_in")
                        if phase != "recovered" or "node_killed" in marks},
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "samples": [asdict(s) for s in self.samples],
                "records": [asdict(r) for r in self.records]}


def _between(marks: dict[str, float], start: str, end: str) -> float | None:
    return round(marks[end] - marks[start], 1) if start in marks and end in marks else None


def _victim(nodes: list[NodeState], replicas: list[ReplicaPlacement], deployment: str, pool: str) -> NodeState:
    """An alive pool node holding a RUNNING replica of the deployment: the last by node id, which on the local
    provider (ids count up) is the newest, the one scale-out added."""
    holding = {r.node_id for r in replicas if r.deployment == deployment and r.state == "RUNNING"}
    candidates = [node for node in nodes if node.alive and node.type == pool and node.node_id in holding]
    if not candidates:
        raise FaultInjectionError(f"no alive {pool} node holds a RUNNING {deployment} replica")
    return candidates[-1]


async def run_autoscale(
    base_url: str,
    body: dict[str, Any],
    *,
    app: str,
    deployment: str,
    pool: str,
    targets: Targets,
    concurrency: int = 6,
    kill_a_node: bool = True,
    idle_s: float = 6.0,
    hold_s: float = 10.0,
    phase_timeout_s: float = 300.0,
    sample_every_s: float = 2.0,
    window_s: float = 20.0,
    on_progress: Callable[[str], None] = lambda _: None,
) -> AutoscaleRun:
    """Run the phases on a running multi-node cluster; needs a Ray driver connection (`ray.init`)."""
    load = ClosedLoop(base_url, body, concurrency)
    run = AutoscaleRun(app, deployment, pool, concurrency, targets, records=load.records)
    latest: dict[str, Any] = {}  # the last topology read: nodes and replicas

    def mark(event: str) -> None:
        run.events[event] = round(load.now(), 1)
        on_progress(f"{event} at {run.events[event]:.1f} s")

    async def sample_forever() -> None:
        while True:
            try:
                nodes, replicas = await asyncio.to_thread(lambda: (read_nodes(), read_replicas()))
            except Exception as error:  # noqa: BLE001 - e.g. the controller busy with a lost node: next sample
                on_progress(f"sample skipped: {type(error).__name__}: {error}")
                await asyncio.sleep(sample_every_s)
                continue
            latest.update(nodes=nodes, replicas=replicas)
            now = load.now()
            recent = [r for r in load.records if r.ended_s >= now - window_s]
            running = Counter(r.deployment for r in replicas if r.app == app and r.state == "RUNNING")
            run.samples.append(Sample(round(now, 1), load.in_flight, dict(running), alive_nodes_by_type(nodes),
                                      p95_ms(recent)))
            await asyncio.sleep(sample_every_s)

    async def until(condition: Callable[[Sample], bool], event: str) -> bool:
        deadline = time.monotonic() + phase_timeout_s
        while time.monotonic() < deadline:
            if run.samples and condition(run.samples[-1]):
                mark(event)
                return True
            await asyncio.sleep(0.5)
        on_progress(f"{event}: not reached within {phase_timeout_s:g} s")
        return False

    def scaled_out(sample: Sample) -> bool:
        return (sample.replicas.get(deployment, 0) >= targets.max_replicas
                and sample.nodes.get(pool, 0) >= targets.max_nodes)

    def killed_node_dead(_: Sample) -> bool:
        victim_id = run.killed_node["node_id"] if run.killed_node else None
        return any(node.node_id == victim_id and not node.alive for node in latest.get("nodes", []))

    async def conductor(stop: asyncio.Event) -> None:
        try:
            mark("load_started")
            if await until(scaled_out, "scaled_out"):
                await asyncio.sleep(hold_s)
                if kill_a_node:
                    victim = _victim(latest["nodes"], latest["replicas"], deployment, pool)
                    pids = await asyncio.to_thread(kill_node, victim.node_id)
                    run.killed_node = {"node_id": victim.node_id, "type": victim.type, "pids": pids}
                    mark("node_killed")
                    if await until(killed_node_dead, "node_dead") and await until(scaled_out, "recovered"):
                        await asyncio.sleep(hold_s)
        finally:
            stop.set()
            mark("load_stopped")

    sampler = asyncio.create_task(sample_forever())
    try:
        await asyncio.sleep(idle_s)
        stop = asyncio.Event()
        await asyncio.gather(conductor(stop), load.run(stop, time.monotonic() + 4 * phase_timeout_s))
        await until(lambda s: s.replicas.get(deployment, 0) <= targets.min_replicas
                    and s.nodes.get(pool, 0) <= targets.min_nodes, "scaled_in")
        await asyncio.sleep(sample_every_s)  # one more sample after the end
    finally:
        sampler.cancel()
    return run


def format_summary(summary: dict[str, Any]) -> str:
    rows = [
        ("load", f"{summary['concurrency']} concurrent clients on {summary['deployment']}"),
        ("requests sent / 2xx / explicit errors / lost",
         f"{summary['sent']} / {summary['ok']} / {summary['error']} {summary['errors_by_status'] or ''} "
         f"/ {summary['lost']}"),
        ("answered by tier", summary["answered_by_tier"]),
        ("replicas start / peak / end", " / ".join(str(v) for v in summary["replicas"].values())),
        (f"{summary['pool']} nodes start / peak / end", " / ".join(str(v) for v in summary["pool_nodes"].values())),
        ("scaled out after (s)", summary["scaled_out_after_s"]),
        ("killed node dead after (s)", summary["node_dead_after_s"]),
        ("replicas and nodes back after (s)", summary["recovered_after_s"]),
        ("scaled in after load stopped (s)", summary["scaled_in_after_s"]),
        ("p95 latency, whole run (ms)", summary["p95_ms"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
