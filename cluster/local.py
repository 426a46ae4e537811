"""The local cluster: a Ray head started in the background, with the Serve application deployed on it.

`up` returns once the application is RUNNING and its HTTP endpoint answers, leaving Ray running detached (as
`ray start` + `serve deploy` do), so `cascade up` behaves the same from a shell, a Makefile or a test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.config import CascadeConfig
from cluster.models import EMBEDDED_PREFIX, is_prepared, prepare_model

APP_STATUS_RUNNING = "RUNNING"
APP_STATUS_FAILED = ("DEPLOY_FAILED", "UNHEALTHY")


class ClusterError(RuntimeError):
    """The local cluster could not be started, reached or stopped."""


def _ray_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The `ray` CLI of this interpreter's environment, found without relying on PATH (venv not activated)."""
    beside = Path(sys.executable).with_name("ray")
    ray = str(beside) if beside.exists() else shutil.which("ray") or "ray"
    return subprocess.run([ray, *args], capture_output=True, text=True, check=False)


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


def start_ray_head(num_cpus: int | None = None) -> None:
    """Start a detached Ray head unless one is already running on this machine."""
    if ray_is_running():
        return
    cpus = num_cpus or os.cpu_count() or 1
    result = _ray_cli("start", "--head", f"--num-cpus={cpus}", "--disable-usage-stats", "--include-dashboard=false")
    if result.returncode != 0:
        raise ClusterError(f"`ray start --head` failed:\n{result.stderr[-2000:]}")


def ensure_models(config: CascadeConfig, progress: Callable[[str], None]) -> None:
    """Prepare any embedded model the config names that is not in the cache yet."""
    for tier in config.vllm_tiers:
        if tier.model.startswith(EMBEDDED_PREFIX):
            name = tier.model.removeprefix(EMBEDDED_PREFIX)
            if not is_prepared(name):
                prepare_model(name, lambda step, name=name: progress(f"{name}: {step}"))


def _http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def up(config: CascadeConfig, timeout_s: float, progress: Callable[[str], None]) -> str:
    """Deploy the application on a (possibly new) local Ray cluster; returns the base URL once healthy."""
    import ray
    from ray import serve

    from deployments.app import build_app

    ensure_models(config, progress)
    progress("starting Ray head")
    start_ray_head()
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        serve.start(http_options={"host": config.gateway.host, "port": config.gateway.port})
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
    """Applications, deployments and replica counts of the running cluster."""
    import ray
    from ray import serve

    if not ray_is_running():
        raise ClusterError("no local Ray cluster is running; start one with `cascade up`")
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        serve_status = serve.status()
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
            }
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
