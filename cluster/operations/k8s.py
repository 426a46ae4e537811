"""Reads a deployed slm-cascade: the KubeRay RayService and its Serve application status.

Every failure (no kubeconfig, API server unreachable, KubeRay not installed, RBAC denial, no such
RayService, timeout) is a `K8sError` whose message says what to do; the CLI prints it and exits non-zero.
The `kubernetes` client is imported lazily: local runs never need it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"
DEFAULT_NAME = "slm-cascade"
SERVE_RUNNING = "RUNNING"

__all__ = ["AppStatus", "K8sError", "RayServiceStatus", "format_status", "get_status", "wait_ready"]


class K8sError(RuntimeError):
    """The RayService could not be read or did not become ready; the message says why and what to check."""


@dataclass(frozen=True)
class AppStatus:
    name: str
    status: str
    message: str = ""
    deployments: dict[str, str] = field(default_factory=dict)  # deployment name -> Serve status


@dataclass(frozen=True)
class RayServiceStatus:
    name: str
    namespace: str
    ready: bool
    service_status: str
    ray_cluster: str
    serve_endpoints: int
    applications: tuple[AppStatus, ...]
    conditions: tuple[tuple[str, str, str], ...]  # (type, status, message)

    @property
    def running(self) -> bool:
        """Ready, and every Serve application and deployment RUNNING / HEALTHY."""
        return (
            self.ready
            and bool(self.applications)
            and all(app.status == SERVE_RUNNING for app in self.applications)
            and all(state == "HEALTHY" for app in self.applications for state in app.deployments.values())
        )


def parse_status(obj: dict[str, Any]) -> RayServiceStatus:
    """A RayService object (as the API returns it) -> its status; pure, so tests need no cluster."""
    metadata, status = obj.get("metadata") or {}, obj.get("status") or {}
    active = status.get("activeServiceStatus") or {}
    conditions = tuple(
        (str(c.get("type", "")), str(c.get("status", "")), str(c.get("message", "")))
        for c in status.get("conditions") or []
    )
    ready_condition = next((c for c in conditions if c[0] == "Ready"), None)
    service_status = str(status.get("serviceStatus") or "")
    ready = ready_condition[1] == "True" if ready_condition else service_status == "Running"
    applications = tuple(
        AppStatus(
            name=app_name,
            status=str(app.get("status", "")),
            message=str(app.get("message", "")),
            deployments={
                name: str(dep.get("status", "")) for name, dep in (app.get("serveDeploymentStatuses") or {}).items()
            },
        )
        for app_name, app in sorted((active.get("applicationStatuses") or {}).items())
    )
    return RayServiceStatus(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        ready=ready,
        service_status=service_status,
        ray_cluster=str(active.get("rayClusterName", "")),
        serve_endpoints=int(status.get("numServeEndpoints") or 0),
        applications=applications,
        conditions=conditions,
    )


def format_status(status: RayServiceStatus) -> str:
    """Plain text for `cascade k8s status`."""
    lines = [
        f"RayService {status.namespace}/{status.name}: {'ready' if status.ready else 'not ready'}"
        + (f" ({status.service_status})" if status.service_status else ""),
        f"  ray cluster: {status.ray_cluster or '(none yet)'}   serve endpoints: {status.serve_endpoints}",
    ]
    for kind, state, message in status.conditions:
        lines.append(f"  condition {kind}={state}" + (f": {message}" if message else ""))
    if not status.applications:
        lines.append("  no Serve application reported yet")
    for app in status.applications:
        lines.append(f"  application {app.name}: {app.status}" + (f" ({app.message})" if app.message else ""))
        for name, state in sorted(app.deployments.items()):
            lines.append(f"    {name:<24} {state}")
    return "\n".join(lines)


def _api(kubeconfig: str | None, context: str | None) -> Any:
    """A CustomObjectsApi from the kubeconfig (or $KUBECONFIG, ~/.kube/config), else the in-cluster account."""
    from kubernetes import client, config

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
    except config.ConfigException as kube_error:
        if kubeconfig is not None or context is not None:
            raise K8sError(f"cannot load kubeconfig: {kube_error}") from None
        try:
            config.load_incluster_config()
        except config.ConfigException:
            reason = str(kube_error).rstrip(".")
            raise K8sError(
                f"no Kubernetes cluster configured: {reason}. Point KUBECONFIG (or --kubeconfig) at a "
                "kubeconfig, or run inside a pod with a service account"
            ) from None
        api_client = client.ApiClient()
    return client.CustomObjectsApi(api_client)


def _api_error(error: Any, name: str, namespace: str) -> K8sError:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") or error.reason or "no message"
    if error.status == 404:
        if (body.get("details") or {}).get("name") == name:
            return K8sError(f"RayService {namespace}/{name} not found: install the chart (helm install) or check "
                            "--name/--namespace")
        return K8sError(f"the RayService resource ({PLURAL}.{GROUP}/{VERSION}) is not served by this cluster: "
                        f"install the KubeRay operator and its CRDs ({message})")
    if error.status in (401, 403):
        verb = "unauthorized" if error.status == 401 else "forbidden"
        return K8sError(f"{verb}: cannot get {PLURAL}.{GROUP} in namespace {namespace} ({message}); grant "
                        f"'get' on {PLURAL} in API group {GROUP} (RBAC) or use other credentials")
    return K8sError(f"Kubernetes API error {error.status} reading RayService {namespace}/{name}: {message}")


def get_status(
    name: str = DEFAULT_NAME,
    namespace: str = "default",
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    request_timeout_s: float = 10.0,
) -> RayServiceStatus:
    """The RayService's status, read through the Kubernetes API."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = _api(kubeconfig, context)
    host = api.api_client.configuration.host
    try:
        obj = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=request_timeout_s
        )
    except ApiException as error:
        raise _api_error(error, name, namespace) from None
    except HTTPError as error:
        raise K8sError(f"cannot reach the Kubernetes API server at {host}: {error}") from None
    finally:
        api.api_client.close()
    return parse_status(obj)


def wait_ready(
    name: str = DEFAULT_NAME,
    namespace: str = "default",
    *,
    timeout_s: float = 1800.0,
    poll_s: float = 5.0,
    kubeconfig: str | None = None,
    context: str | None = None,
    on_poll: Callable[[RayServiceStatus], None] | None = None,
) -> RayServiceStatus:
    """Polls until the RayService is ready and its Serve application RUNNING; K8sError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = get_status(name, namespace, kubeconfig=kubeconfig, context=context)
        if on_poll is not None:
            on_poll(status)
        if status.running:
            return status
        if time.monotonic() + poll_s > deadline:
            raise K8sError(f"RayService {namespace}/{name} not running after {timeout_s:g}s:\n{format_status(status)}")
        time.sleep(poll_s)
