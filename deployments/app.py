"""Builds the Serve application from a config: the import path local runs and KubeRay's RayService share."""

from __future__ import annotations

from typing import Any

from ray.serve import Application, Deployment

from cluster.config import GATEWAY_DEPLOYMENT, CascadeConfig, judge_deployment_name, parse_config, tier_deployment_name
from deployments.gateway import Gateway
from deployments.judge import JudgeVerifier
from deployments.model_server import ModelServer

IMPORT_PATH = "deployments.app:build_app"


def _deployment(decorated: object) -> Deployment:
    """A `@serve.deployment` class as the `Deployment` the decorator made it: mypy does not apply class
    decorators, so it still sees the class."""
    if not isinstance(decorated, Deployment):
        raise TypeError(f"{decorated!r} is not a Serve deployment (missing @serve.deployment?)")
    return decorated


def build_app(args: dict[str, Any]) -> Application:
    """`args` is a CascadeConfig as a dict (what a RayService's serveConfigV2 passes)."""
    config: CascadeConfig = parse_config(args, "serve application args")
    model_server, judge_verifier = _deployment(ModelServer), _deployment(JudgeVerifier)
    tiers = {
        tier.name: model_server.options(name=tier_deployment_name(tier.name), **tier.deployment.to_serve()).bind(
            tier.model_dump(mode="json"), config.gateway.telemetry.model_dump(mode="json")
        )
        for tier in config.vllm_tiers
    }
    judges = {
        route.name: judge_verifier.options(name=judge_deployment_name(route.name), **route.judge.deployment.to_serve())
        .bind(route.judge.model_dump(mode="json"), tiers[route.judge.tier])
        for route in config.routes
        if route.judge is not None
    }
    gateway = _deployment(Gateway).options(name=GATEWAY_DEPLOYMENT, **config.gateway.deployment.to_serve())
    return gateway.bind(config.model_dump(mode="json"), tiers, judges)


def serve_config(config: CascadeConfig, http_host: str = "0.0.0.0") -> dict[str, Any]:
    """The Serve config (RayService `serveConfigV2`) for a config: one application, built by `build_app`.

    No `deployments` list: `build_app` computes every deployment's options from `args` at start-up, so the
    options have one source (a list here would override them, and the chart would have to repeat them).
    """
    return {
        "http_options": {"host": http_host, "port": config.gateway.port},
        "applications": [
            {
                "name": config.app_name,
                "import_path": IMPORT_PATH,
                "route_prefix": "/",
                "args": config.model_dump(mode="json"),
            }
        ],
    }
