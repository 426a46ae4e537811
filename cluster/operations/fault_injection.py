"""Faults a local cluster can be given on purpose: kill a replica's process, the vLLM engine inside it, or a
whole worker node of a local multi-node cluster.

Ray titles each replica's process `ray::ServeReplica:<app>:<deployment>` (names hold no dots) and vLLM
titles its engine core `VLLM::EngineCore`, so both are found by process title on this machine, with no
driver connection to Ray. A node is its raylet (`raylet --node_id=<id>`) and every process under it.
Whether a replacement is serving is what Serve itself reports (`cascade status`).
Only this machine's processes are touched: the harness is for a local cluster, never a shared one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

ENGINE_PROCESS_PREFIX = "VLLM::EngineCore"


class FaultInjectionError(RuntimeError):
    """The fault could not be injected (no such replica process, no engine process)."""


@dataclass(frozen=True)
class Replica:
    deployment: str
    pid: int


def replica_title(app: str, deployment: str) -> str:
    return f"ray::ServeReplica:{app}:{deployment}"


def replica_processes(app: str, deployment: str) -> list[Replica]:
    """The deployment's replica processes alive on this machine, oldest first."""
    title = replica_title(app, deployment)
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "create_time", "status"]):
        cmdline = process.info["cmdline"] or []
        # While a replica runs a method Ray appends it to the title (`...:tier-slm.handle_request_streaming`).
        if cmdline and cmdline[0].partition(".")[0] == title and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append((process.info["create_time"], Replica(deployment, process.info["pid"])))
    return [replica for _, replica in sorted(found, key=lambda item: item[0])]


def running_replicas(app: str, deployment: str) -> int:
    """RUNNING replicas of the deployment as Serve reports them (a separate process: `cascade status --json`)."""
    cascade = str(Path(sys.executable).with_name("cascade"))
    result = subprocess.run([cascade, "status", "--json"], check=False, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise FaultInjectionError(f"`cascade status` failed: {result.stderr.strip()[-300:]}")
    deployments = json.loads(result.stdout)["applications"][app]["deployments"]
    return int(deployments[deployment]["replicas"].get("RUNNING", 0))


def kill_replica(app: str, deployment: str) -> Replica:
    """SIGKILL one replica's process, as an OOM kill or a lost machine would; returns the victim."""
    victims = replica_processes(app, deployment)
    if not victims:
        raise FaultInjectionError(f"no process titled {replica_title(app, deployment)!r} on this machine")
    _kill(victims[0].pid)
    return victims[0]


def kill_engine(app: str, deployment: str, *, wait_s: float = 60.0) -> Replica:
    """SIGKILL the vLLM engine-core process of one replica, leaving the replica process alive.

    The replica's next health check finds the engine dead, and Serve replaces the replica. The oldest replica
    that has an engine is chosen; a replica can be briefly without one (its engine still spawning, or the
    process of one just replaced still exiting), so the choice is retried for up to `wait_s` before giving up.
    """
    deadline = time.monotonic() + wait_s
    while True:
        hosts = replica_processes(app, deployment)
        if not hosts:
            raise FaultInjectionError(f"no process titled {replica_title(app, deployment)!r} on this machine")
        for host in hosts:
            if engines := _engine_processes(host.pid):
                for engine in engines:
                    _kill(engine.pid)
                return host
        if time.monotonic() >= deadline:
            found = "; ".join(f"pid {host.pid}: {_child_titles(host.pid)}" for host in hosts)
            raise FaultInjectionError(f"no replica of {deployment} has a {ENGINE_PROCESS_PREFIX} process ({found})")
        time.sleep(1.0)


def _engine_processes(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return [child for child in children if _title(child).startswith(ENGINE_PROCESS_PREFIX)]


def _child_titles(pid: int) -> list[str]:
    try:
        return [_title(child) for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error as error:
        return [f"unreadable: {error}"]


def replacement(app: str, deployment: str, before: Sequence[Replica], running_before: int) -> Replica | None:
    """A replica process started after the fault, once Serve reports as many RUNNING replicas as before it.

    Survivors do not count: with several replicas one keeps serving, but the lost one is replaced only when a
    new process runs and the RUNNING count is back.
    """
    known = {replica.pid for replica in before}
    new = [r for r in replica_processes(app, deployment) if r.pid not in known]
    if not new or running_replicas(app, deployment) < running_before:
        return None
    return new[-1]


def kill_node(node_id: str) -> list[int]:
    """SIGKILL a worker node's raylet and every process under it (its workers, replicas and engines) at once,
    as a lost machine would go; returns the pids killed.

    The GCS then marks the node dead when its health checks fail, Serve replaces the replicas that ran there,
    and the autoscaler, finding the node gone, starts another if the replacements need one.
    """
    raylets = [process for process in psutil.process_iter(["cmdline"])
               if f"--node_id={node_id}" in (process.info["cmdline"] or [])
               and Path((process.info["cmdline"] or [""])[0]).name == "raylet"]
    if not raylets:
        raise FaultInjectionError(f"no raylet of node {node_id} on this machine")
    raylet = raylets[0]
    try:
        if "--head" in raylet.cmdline():
            raise FaultInjectionError(f"node {node_id} is the head: only worker nodes are killed")
        victims = [raylet, *raylet.children(recursive=True)]
    except psutil.Error as error:
        raise FaultInjectionError(f"cannot read node {node_id}'s processes: {error}") from None
    for process in victims:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:  # exited meanwhile: gone is what we wanted
            continue
    return [process.pid for process in victims]


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()) or process.name()
    except psutil.Error:
        return ""


def _kill(pid: int) -> None:
    try:
        psutil.Process(pid).send_signal(signal.SIGKILL)
    except psutil.Error as error:
        raise FaultInjectionError(f"cannot kill pid {pid}: {error}") from None
