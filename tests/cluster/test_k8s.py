"""`cascade k8s status/wait`: real kubernetes client against a real HTTP server on 127.0.0.1 posing as the API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cluster.operations.k8s import K8sError, format_status, get_status, parse_status, wait_ready

PATH = "/apis/ray.io/v1/namespaces/serving/rayservices/prod"


def _rayservice(app_status: str = "RUNNING", ready: str = "True") -> dict:
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": "prod", "namespace": "serving"},
        "status": {
            "serviceStatus": "Running" if ready == "True" else "",
            "numServeEndpoints": 3,
            "conditions": [{"type": "Ready", "status": ready, "message": "Number of serve endpoints is 3"}],
            "activeServiceStatus": {
                "rayClusterName": "prod-abcde",
                "applicationStatuses": {"slm-cascade": {"status": app_status, "serveDeploymentStatuses": {
                    "gateway": {"status": "HEALTHY"}, "tier-slm": {"status": "HEALTHY"}}}},
            },
        },
    }


class FakeApi:
    """Answers GETs with queued (status, body) replies; the last one repeats."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict]] = []
        self.paths: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                api.paths.append(self.path)
                code, body = api.replies.pop(0) if len(api.replies) > 1 else api.replies[0]
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kubeconfig(self, directory: Path) -> str:
        path = directory / "kubeconfig"
        host, port = self.server.server_address
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://{host}:{port}"}}],
            "users": [{"name": "fake", "user": {"token": "test-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return str(path)


def _status_body(code: int, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code,
            "reason": {403: "Forbidden", 404: "NotFound"}.get(code, "InternalError")}
    return body | ({"details": details} if details else {})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    yield fake, fake.kubeconfig(tmp_path)
    fake.server.shutdown()
    fake.server.server_close()


def test_status_reads_the_rayservice_and_its_serve_application(api) -> None:
    fake, kubeconfig = api
    fake.replies = [(200, _rayservice())]
    status = get_status("prod", "serving", kubeconfig=kubeconfig)
    assert fake.paths == [PATH]
    assert status.ready and status.running and status.ray_cluster == "prod-abcde"
    text = format_status(status)
    assert "RayService serving/prod: ready" in text and "application slm-cascade: RUNNING" in text
    assert "tier-slm" in text


def test_a_missing_crd_says_to_install_kuberay(api) -> None:
    fake, kubeconfig = api
    fake.replies = [(404, _status_body(404, "the server could not find the requested resource"))]
    with pytest.raises(K8sError, match="install the KubeRay operator"):
        get_status("prod", "serving", kubeconfig=kubeconfig)


def test_a_missing_rayservice_is_named(api) -> None:
    fake, kubeconfig = api
    fake.replies = [(404, _status_body(404, 'rayservices.ray.io "prod" not found',
                                       {"name": "prod", "group": "ray.io", "kind": "rayservices"}))]
    with pytest.raises(K8sError, match="RayService serving/prod not found"):
        get_status("prod", "serving", kubeconfig=kubeconfig)


def test_rbac_denial_names_the_missing_permission(api) -> None:
    fake, kubeconfig = api
    fake.replies = [(403, _status_body(403, 'rayservices.ray.io "prod" is forbidden: User "dev" cannot get'))]
    with pytest.raises(K8sError, match=r"forbidden: cannot get rayservices.ray.io in namespace serving .*RBAC"):
        get_status("prod", "serving", kubeconfig=kubeconfig)


def test_an_unreachable_api_server_is_reported(api) -> None:
    fake, kubeconfig = api
    fake.server.shutdown()
    fake.server.server_close()
    with pytest.raises(K8sError, match="cannot reach the Kubernetes API server"):
        get_status("prod", "serving", kubeconfig=kubeconfig, request_timeout_s=2)


def test_no_kubeconfig_and_no_service_account_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(K8sError, match="no Kubernetes cluster configured"):
        get_status()


def test_an_explicit_missing_kubeconfig_is_named(tmp_path: Path) -> None:
    with pytest.raises(K8sError, match="cannot load kubeconfig"):
        get_status(kubeconfig=str(tmp_path / "nope"))


def test_wait_returns_once_the_application_is_running(api) -> None:
    fake, kubeconfig = api
    fake.replies = [(200, _rayservice("DEPLOYING", "False")), (200, _rayservice())]
    seen = []
    status = wait_ready("prod", "serving", kubeconfig=kubeconfig, timeout_s=10, poll_s=0.05, on_poll=seen.append)
    assert status.running and len(seen) == 2


def test_wait_times_out_with_the_last_status(api) -> None:
    fake, kubeconfig = api
    fake.replies = [(200, _rayservice("DEPLOY_FAILED", "False"))]
    with pytest.raises(K8sError, match=r"not running after 0.2s:(.|\n)*DEPLOY_FAILED"):
        wait_ready("prod", "serving", kubeconfig=kubeconfig, timeout_s=0.2, poll_s=0.05)


def test_a_fresh_rayservice_without_status_is_not_ready() -> None:
    status = parse_status({"metadata": {"name": "prod", "namespace": "serving"}})
    assert not status.ready and not status.running
    assert "no Serve application reported yet" in format_status(status)
