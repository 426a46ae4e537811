"""The fault-injection harness: a fixed load on a local cluster while a replica or an engine is killed.

Every request ends ok, as an explicit error, or lost (bench/closed_loop.py), and the report counts them: a
serving cluster may shed or fail requests visibly; it must never lose one. Bounded like `bench load`: a
fixed concurrency, one deadline for the run, loopback targets only.

Recovery is measured twice, because they differ: when Serve reports a replacement replica RUNNING, and when
requests are answered by the faulted tier again (later, if the gateway's circuit breaker holds it in
cooldown meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.closed_loop import ClosedLoop, RequestRecord, p95_ms
from cluster.operations.fault_injection import Replica, replacement, replica_processes, running_replicas

# The fixed load: one forced tool call the SLM answers right, grounded and above the default route's threshold
# in about a second on a CPU ("What is 2 plus 3?" it answers add(1, 2), which the grounding veto escalates).
# Its deadline is below the client's timeout, so a request the cluster cannot serve in time gets a 504, never
# silence.
LOAD_BODY: dict[str, Any] = {
    "model": "cascade",
    "messages": [{"role": "user", "content": "Add 2 and 3."}],
    "tools": [{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"], "additionalProperties": False}}}],
    "tool_choice": "required",
    "max_tokens": 40,
    "temperature": 0,
    "deadline_s": 90,
}

FaultInjector = Callable[[], Replica]  # injects the fault, returns the replica it hit


@dataclass
class FaultRun:
    fault: str
    tier: str
    concurrency: int
    fault_at_s: float | None = None
    victim: dict[str, Any] | None = None
    replica_running_at_s: float | None = None  # a replacement replica reported RUNNING
    replacement: dict[str, Any] | None = None
    tier_serving_at_s: float | None = None  # first request started after the fault answered by the faulted tier
    records: list[RequestRecord] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The harness's table: load, outcomes, p95 before / during / after, recovery times."""
        counts = {outcome: sum(r.outcome == outcome for r in self.records) for outcome in ("ok", "error", "lost")}
        fault = self.fault_at_s if self.fault_at_s is not None else float("inf")
        recovered = self.tier_serving_at_s if self.tier_serving_at_s is not None else float("inf")
        phases = {
            "before": [r for r in self.records if r.ended_s < fault],
            "during": [r for r in self.records if r.ended_s >= fault and r.started_s < recovered],
            "after": [r for r in self.records if r.started_s >= recovered],
        }
        duration = max((r.ended_s for r in self.records), default=0.0)
        return {
            "fault": self.fault, "tier": self.tier, "concurrency": self.concurrency,
            "duration_s": round(duration, 1), "sent": len(self.records), **counts,
            "errors_by_status": dict(Counter(str(r.status) for r in self.records if r.outcome == "error")),
            "answered_by_tier": dict(Counter(r.final_tier or "-" for r in self.records if r.outcome == "ok")),
            **{f"p95_{name}_ms": p95_ms(records) for name, records in phases.items()},
            **{f"requests_{name}": len(records) for name, records in phases.items()},
            "replica_replaced_after_s": _since(self.replica_running_at_s, self.fault_at_s),
            "tier_serving_again_after_s": _since(self.tier_serving_at_s, self.fault_at_s),
            "victim": self.victim, "replacement": self.replacement,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "fault_at_s": self.fault_at_s, "records": [asdict(r) for r in self.records]}


def _since(moment: float | None, origin: float | None) -> float | None:
    return None if moment is None or origin is None else round(moment - origin, 1)


async def run_fault(
    base_url: str,
    body: dict[str, Any],
    inject: FaultInjector,
    *,
    fault: str,
    app: str,
    deployment: str,
    tier: str,
    concurrency: int = 4,
    before_s: float = 15.0,
    after_s: float = 15.0,
    max_duration_s: float = 300.0,
    request_timeout_s: float = 180.0,
    headers: Mapping[str, str] | None = None,
    on_progress: Callable[[str], None] = lambda _: None,
) -> FaultRun:
    """Load, fault at `before_s` (or once the tier has answered, if later), keep loading until the tier serves
    again and its replica is replaced, plus `after_s`, or the deadline."""
    run = FaultRun(fault=fault, tier=tier, concurrency=concurrency)

    def on_record(record: RequestRecord) -> None:
        if (run.fault_at_s is not None and run.tier_serving_at_s is None and record.final_tier == tier
                and record.started_s > run.fault_at_s):
            run.tier_serving_at_s = record.ended_s
            on_progress(f"{tier} serving again {run.tier_serving_at_s - run.fault_at_s:.1f} s after the fault")

    load = ClosedLoop(base_url, body, concurrency, request_timeout_s, headers, on_record)
    run.records = load.records
    deadline = load.started + max_duration_s
    stop = asyncio.Event()
    now = load.now

    async def conductor() -> None:
        await asyncio.sleep(before_s)
        while not any(r.final_tier == tier for r in load.records) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)  # a cold cluster answers its first requests late: fault a tier that serves
        replicas_before = await asyncio.to_thread(replica_processes, app, deployment)
        running_before = await asyncio.to_thread(running_replicas, app, deployment)
        victim = await asyncio.to_thread(inject)
        run.fault_at_s, run.victim = now(), asdict(victim)
        on_progress(f"{fault}: killed pid {victim.pid} at {run.fault_at_s:.1f} s")
        while time.monotonic() < deadline:
            await asyncio.sleep(2.0)
            if run.replica_running_at_s is None:
                successor = await asyncio.to_thread(_replacement, app, deployment, replicas_before, running_before)
                if successor is not None:
                    run.replica_running_at_s, run.replacement = now(), asdict(successor)
                    on_progress(f"replacement pid {successor.pid} RUNNING at {run.replica_running_at_s:.1f} s")
            recovered = (run.tier_serving_at_s, run.replica_running_at_s)
            if None not in recovered and now() >= max(recovered) + after_s:  # both kinds of recovery, then more load
                break
        stop.set()

    await asyncio.gather(conductor(), load.run(stop, deadline))
    return run


def _replacement(app: str, deployment: str, before: list[Replica], running_before: int) -> Replica | None:
    try:
        return replacement(app, deployment, before, running_before)
    except Exception:  # noqa: BLE001 - Serve may be briefly unreadable while it replaces the replica; ask again
        return None


def format_summary(summary: Mapping[str, Any]) -> str:
    rows = [
        ("fault", summary["fault"]), ("load", f"{summary['concurrency']} concurrent, {summary['duration_s']} s"),
        ("requests sent", summary["sent"]), ("answered 2xx", summary["ok"]),
        ("explicit errors", f"{summary['error']} {summary['errors_by_status'] or ''}".strip()),
        ("lost", summary["lost"]), ("answered by tier", summary["answered_by_tier"]),
        ("p95 before / during / after (ms)",
         " / ".join(str(summary[f"p95_{phase}_ms"]) for phase in ("before", "during", "after"))),
        ("replica replaced after (s)", summary["replica_replaced_after_s"]),
        (f"{summary['tier']} serving again after (s)", summary["tier_serving_again_after_s"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
