"""Renders what Kubernetes runs: the RayService serve config and the Helm chart's manifests.

`serve_config` (deployments/app.py) is the one source of the Serve config; the chart templates the same thing
from its `cascade:` values, and tests/helm checks the two agree. Charts are rendered by Helm itself (its Go
library, bundled by the `helm-python-sdk` wheel as `helm_python`), imported lazily: only rendering needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cluster.config import CascadeConfig, ConfigError, parse_config

CHART_DIR = Path(__file__).resolve().parent.parent / "helm" / "slm-cascade"
# The config model's deployment-option defaults, as Serve options, for the chart (see serve_defaults).
SERVE_DEFAULTS_FILE = CHART_DIR / "files" / "serve-defaults.json"
DEFAULT_RELEASE = "slm-cascade"
DEFAULT_NAMESPACE = "default"

__all__ = [
    "CHART_DIR",
    "RenderError",
    "lint_chart",
    "load_values",
    "manifests",
    "render_chart",
    "render_chart_text",
    "render_serve_config",
    "serve_config_text",
    "serve_defaults",
    "values_config",
    "write_serve_defaults",
]


class RenderError(ValueError):
    """The chart could not be rendered: bad values (the message names the field) or a template failure."""


def render_serve_config(config: CascadeConfig) -> dict[str, Any]:
    """The RayService `serveConfigV2` for a config, as a dict (the function local runs share)."""
    from deployments.app import serve_config

    return serve_config(config)


def serve_config_text(config: CascadeConfig) -> str:
    """`cascade render serve-config`: the serve config as YAML, ready for a RayService or `serve deploy`."""
    return yaml.safe_dump(render_serve_config(config), sort_keys=False)


def serve_defaults() -> dict[str, Any]:
    """Deployment options the config model fills in, as Serve options, for the chart's serveConfigV2.

    Serve replaces `ray_actor_options` and `autoscaling_config` whole, so the chart must list them complete,
    exactly as the app's defaults make them: `any` is a deployment given in part, `gateway` and `judge` are the
    defaults of a gateway or route judge given no `deployment` at all; `request_routers` maps a deployment's
    `request_router` to Serve's `request_router_config`. Generated from the model, never by hand.
    """
    from cluster import config as model

    def default(owner: str) -> dict[str, Any]:
        cls = getattr(model, owner, None)
        if cls is None or "deployment" not in cls.model_fields:
            return model.DeploymentOptions().to_serve()
        return cls.model_fields["deployment"].get_default(call_default_factory=True).to_serve()

    return {"any": model.DeploymentOptions().to_serve(), "gateway": default("GatewayConfig"),
            "judge": default("JudgeConfig"), "tier": default("TierConfig"), "request_routers": model.REQUEST_ROUTERS}


def write_serve_defaults(path: str | Path = SERVE_DEFAULTS_FILE) -> Path:
    """Regenerates the chart's files/serve-defaults.json after the config model's defaults change."""
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(serve_defaults(), indent=2, sort_keys=True) + "\n")
    return Path(path)


def load_values(path: str | Path | None) -> dict[str, Any]:
    """A Helm values file as a dict; no path gives {} (the chart's own defaults)."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise RenderError(f"cannot read values {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise RenderError(f"values {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RenderError(f"values {path}: the top level must be a mapping")
    return data


def values_config(values: dict[str, Any], source: str = "values") -> CascadeConfig:
    """The CascadeConfig a values file deploys: its `cascade:` key, or the chart default's when it has none."""
    cascade = values.get("cascade")
    if cascade is None:
        cascade = load_values(CHART_DIR / "values.yaml")["cascade"]
        source = f"{CHART_DIR / 'values.yaml'}"
    try:
        return parse_config(cascade, f"{source} (key `cascade`)")
    except ConfigError as error:
        raise RenderError(str(error)) from None


def _helm() -> Any:
    try:
        import helm_python
    except ImportError as error:  # pragma: no cover - the dev extra installs it
        raise RenderError(f"Helm is not installed: pip install helm-python-sdk ({error})") from None
    return helm_python


def _helm_error(helm: Any, error: Exception, source: str) -> RenderError:
    message = str(error).strip()
    if isinstance(error, helm.HelmValuesError):
        return RenderError(f"values {source} do not match values.schema.json:\n{message}")
    return RenderError(f"cannot render the chart with values {source}:\n{message}")


def render_chart(
    values: dict[str, Any] | None = None,
    *,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
    chart_dir: str | Path = CHART_DIR,
    source: str = "<dict>",
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` makes them (NOTES.txt included), schema checked first."""
    helm = _helm()
    try:
        with helm.Chart.load(str(chart_dir)) as chart:
            chart.validate_schema(chart.merge_values(values or {}))
            return chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    except helm.HelmError as error:
        raise _helm_error(helm, error, source) from None


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects of a render, in template order (NOTES.txt and empty documents dropped)."""
    objects: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(rendered[path]) if doc]
    return objects


def render_chart_text(values_path: str | Path | None = None, *, release: str = DEFAULT_RELEASE,
                      namespace: str = DEFAULT_NAMESPACE) -> str:
    """`cascade render chart [--values FILE]`: the manifests as multi-document YAML, like `helm template`."""
    values = load_values(values_path)
    rendered = render_chart(values, release=release, namespace=namespace, source=str(values_path or "(defaults)"))
    documents = []
    for path in sorted(rendered):
        text = rendered[path].strip()
        if path.endswith("NOTES.txt") or not text:
            continue
        documents.append(f"# Source: {path}\n{text.removeprefix('---').lstrip()}")
    return "---\n" + "\n---\n".join(documents) + "\n"


def lint_chart(values: dict[str, Any] | None = None, *, chart_dir: str | Path = CHART_DIR) -> list[str]:
    """`helm lint --strict`: its findings as "SEVERITY path: message" lines; empty when clean."""
    helm = _helm()
    report = helm.lint(str(chart_dir), values or {}, strict=True)
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    findings = [f"{names.get(m['severity'], m['severity'])} {m['path']}: {m['error']}" for m in report["messages"]]
    return findings + list(report.get("errors") or [])
