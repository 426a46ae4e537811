"""The local cluster: a Ray head started in the background, with the Serve application deployed on it.

`up` returns once the application is RUNNING and its HTTP endpoint answers, leaving Ray running detached (as
`ray start` + `serve deploy` do), so `cascade up` behaves the same from a shell, a Makefile or a test.

Two shapes (see cluster/config/node_types.py): one node that advertises every pool, or (`multinode=True`) a head
plus worker nodes that Ray's autoscaler starts and stops on this machine, one node type per pool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from cluster.config import CascadeConfig
from cluster.config.node_types import HEAD_TYPE, POOL_LABEL, autoscaler_config, single_node_resources
from cluster.store.models import EMBEDDED_PREFIX, cache_root, is_prepared, prepare_model

APP_STATUS_RUNNING = "RUNNING"
APP_STATUS_FAILED = ("DEPLOY_FAILED", "UNHEALTHY")


class ClusterError(RuntimeError):
    """The local cluster could not be started, reached or stopped."""


def _ray_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `ray` CLI of this interpreter's environment, found without relying on PATH (venv not activated)."""
    beside = Path(sys.executable).with_name("ray")
    ray = str(beside) if beside.exists() else shutil.which("ray") or "ray"
    return subprocess.run([ray, *args], capture_output=True, text=True, check=False, env=env)


def ray_is_running() -> bool:
    """Whether this user runs a local Ray head: its GCS server process exists.

    `ray status` is not a reliable test: it exits non-zero on an authentication mismatch (Ray 2.60 writes
    ~/.ray/auth_token on first `ray.init`) while the cluster is very much alive.
    """
    import getpass

    import psutil

    me = getpass.getuser()
    return any(
        process.info["name"] == "gcs_server"
        and process.info["username"] == me
        and process.info["status"] != psutil.STATUS_ZOMBIE
        for process in psutil.process_iter(["name", "username", "status"])
    )


def start_ray_head(config: CascadeConfig, multinode: bool) -> None:
    """Start a detached Ray head unless one is already running on this machine.

    Multi-node: the head runs Ray's autoscaler with the local node provider (`RAY_FAKE_CLUSTER`), which
    starts each worker node as a raylet on this machine; the update interval is cut from 5 s to 1 s so
    scaling shows within seconds.
    """
    if ray_is_running():
        return
    head_args = ["start", "--head", "--disable-usage-stats", "--include-dashboard=false",
                 f"--labels={POOL_LABEL}={HEAD_TYPE}"]
    env = None
    if multinode:
        autoscaling_file = _autoscaler_config_file()
        autoscaling_file.parent.mkdir(parents=True, exist_ok=True)
        autoscaling_file.write_text(json.dumps(autoscaler_config(config), indent=2))
        head_args += [f"--num-cpus={config.multinode.head_num_cpus:g}", f"--autoscaling-config={autoscaling_file}"]
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    else:
        head_args += [f"--num-cpus={os.cpu_count() or 1}", f"--resources={json.dumps(single_node_resources(config))}"]
    result = _ray_cli(*head_args, env=env)
    if result.returncode != 0:
        raise ClusterError(f"`ray start --head` failed:\n{result.stderr[-2000:]}")


def check_remote_keys(config: CascadeConfig, environ: Mapping[str, str]) -> None:
    """Refuse a config whose remote tier names an API-key variable this environment lacks, by the variable's
    name, before anything starts: the gateway replicas inherit this environment through the Ray head."""
    missing = [(tier.name, tier.api_key_env) for tier in config.remote_tiers
               if tier.api_key_env is not None and not environ.get(tier.api_key_env)]
    if missing:
        names = "; ".join(f"tier {tier!r} reads its API key from {variable}" for tier, variable in missing)
        raise ClusterError(f"{names}, which is not set here: export it, then `cascade up`")


def _check_fits(config: CascadeConfig, multinode: bool) -> None:
    """Refuse to deploy onto a running cluster that could never place the config's replicas: one of the
    other shape, a one-node head advertising less of a pool than the config may use, or a multi-node
    cluster started without a node type for one of its pools. Pools are fixed when the head starts."""
    from cluster.operations.topology import read_nodes

    demand = single_node_resources(config)
    head = next((node for node in read_nodes() if node.alive and node.type == HEAD_TYPE), None)
    if not demand or head is None:
        return
    advertised = {pool: head.resources.get(pool, 0.0) for pool in demand}
    head_is_one_node = any(advertised.values())
    if head_is_one_node == multinode:
        running, asked = ("one-node", "--multinode") if multinode else ("multi-node", "one-node")
        raise ClusterError(f"a {running} Ray cluster is already running; `cascade down` first to start a {asked} one")
    if head_is_one_node:
        short = {pool: amount for pool, amount in demand.items() if advertised[pool] < amount}
        missing = f"the running head advertises {advertised}, this config may use {short}" if short else ""
    else:
        try:
            known = json.loads(_autoscaler_config_file().read_text())["available_node_types"]
        except (OSError, ValueError, KeyError):  # started with another cache folder: its node types are unknown
            return
        unknown = sorted(set(demand) - set(known))
        missing = f"the running cluster has no node type for {unknown}" if unknown else ""
    if missing:
        raise ClusterError(f"{missing}; `cascade down` first, then start it with this config")


def _autoscaler_config_file() -> Path:
    return cache_root() / "multinode-autoscaler.json"


def running_multinode() -> bool:
    """Whether the running local cluster is multi-node: Ray's autoscaler runs with a cluster config."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "autoscaler/_private/monitor.py" in cmdline and "--autoscaling-config" in cmdline:
            return True
    return False


def ensure_models(config: CascadeConfig, progress: Callable[[str], None]) -> None:
    """Prepare any embedded model the config names that is not in the cache yet."""
    for tier in config.vllm_tiers:
        if tier.model.startswith(EMBEDDED_PREFIX):
            name = tier.model.removeprefix(EMBEDDED_PREFIX)
            if not is_prepared(name):
                prepare_model(name, lambda step, name=name: progress(f"{name}: {step}"))


def _http_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, follow_redirects=True).status_code == 200
    except httpx.HTTPError:
        return False


def up(config: CascadeConfig, timeout_s: float, progress: Callable[[str], None], multinode: bool = False) -> str:
    """Deploy the application on a (possibly new) local Ray cluster; returns the base URL once healthy."""
    import ray
    from ray import serve

    from deployments.app import build_app

    check_remote_keys(config, os.environ)
    ensure_models(config, progress)
    progress("starting Ray head" + (" with the autoscaler (multi-node)" if multinode else ""))
    start_ray_head(config, multinode)
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        _check_fits(config, multinode)
        # One HTTP proxy, on the head: worker nodes of a local multi-node cluster share this machine's ports.
        serve.start(http_options={"host": config.gateway.host, "port": config.gateway.port},
                    proxy_location="HeadOnly")
        progress(f"deploying application {config.app_name!r} (vLLM engines take a minute on CPU)")
        # serve.run blocks without a deadline; the private non-blocking variant lets us bound the wait and
        # report a failed deployment instead of hanging.
        serve._run(build_app(config.model_dump(mode="json")), name=config.app_name, route_prefix="/", _blocking=False)
        base_url = f"http://{config.gateway.host}:{config.gateway.port}"
        _wait_running(config.app_name, base_url, timeout_s, progress)
        return base_url
    finally:
        ray.shutdown()


def _wait_running(app_name: str, base_url: str, timeout_s: float, progress: Callable[[str], None]) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        status = str(app.status.value) if app is not None else "NOT_STARTED"
        if status != last:
            progress(f"application status: {status}")
            last = status
        if status in APP_STATUS_FAILED:
            raise ClusterError(f"application {app_name!r} is {status}: {app.message}")
        if status == APP_STATUS_RUNNING and _http_ready(f"{base_url}/healthz"):
            return
        time.sleep(1.0)
    raise ClusterError(f"application {app_name!r} not running after {timeout_s:g} s (last status {last})")


def status() -> dict[str, Any]:
    """Applications, deployments and replica counts of the running cluster, its nodes, and each replica (its
    id, node and process: what tells a replica restarted from one that kept serving)."""
    import ray
    from ray import serve

    from cluster.operations.topology import nodes_report, read_nodes, read_replicas

    if not ray_is_running():
        raise ClusterError("no local Ray cluster is running; start one with `cascade up`")
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        serve_status = serve.status()
        replicas = read_replicas()
        return {
            "applications": {
                name: {
                    "status": app.status,
                    "message": app.message,
                    "deployments": {
                        deployment_name: {
                            "status": deployment.status,
                            "replicas": dict(deployment.replica_states),
                            "message": deployment.message,
                        }
                        for deployment_name, deployment in app.deployments.items()
                    },
                }
                for name, app in serve_status.applications.items()
            },
            "nodes": nodes_report(read_nodes(), replicas),
            "replicas": [{"app": r.app, "deployment": r.deployment, "replica_id": r.replica_id, "state": r.state,
                          "node_id": r.node_id, "pid": r.pid} for r in replicas],
        }
    finally:
        ray.shutdown()


def _shutdown_serve() -> None:
    """Delete the Serve applications so each replica shuts its vLLM engine down cleanly."""
    import ray
    from ray import serve

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def reap_orphaned_engines() -> int:
    """Kill vLLM engine processes whose replica is gone; returns how many.

    vLLM runs its engine core and workers as child processes (named `VLLM::...`). When a replica is killed
    rather than shut down (`ray stop --force`, an OOM kill), they are re-parented to init and keep their memory,
    which starves the next cluster. Only such orphans are touched.
    """
    import getpass

    import psutil

    reaped, me = 0, getpass.getuser()
    for process in psutil.process_iter(["name", "cmdline", "ppid", "username"]):
        title = " ".join(process.info["cmdline"] or [process.info["name"] or ""])
        if process.info["ppid"] == 1 and title.startswith("VLLM::") and process.info["username"] == me:
            try:
                process.kill()
                reaped += 1
            except psutil.Error:  # gone meanwhile, or not ours to kill after all
                continue
    return reaped


def down() -> bool:
    """Stop Serve and the local Ray cluster; False when nothing was running."""
    if not ray_is_running():
        return reap_orphaned_engines() > 0
    try:
        _shutdown_serve()
    except Exception as error:  # noqa: BLE001 - a cluster we cannot talk to is still stopped below
        print(f"cascade: could not shut Serve down cleanly ({type(error).__name__}); stopping Ray", file=sys.stderr)
    result = _ray_cli("stop", "--force")
    reap_orphaned_engines()
    if result.returncode != 0:
        raise ClusterError(f"`ray stop` failed:\n{result.stderr[-2000:]}")
    # `ray stop` returns while the head's processes are still exiting; a `cascade up` in that window would
    # find a dying head and fail to connect. Return only once it is gone.
    deadline = time.monotonic() + 30
    while ray_is_running() and time.monotonic() < deadline:
        time.sleep(0.5)
    return True
