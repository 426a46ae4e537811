"""Builds the Serve application from a config: the import path local runs and KubeRay's RayService share."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from cluster.config import CascadeConfig, parse_config
from deployments.gateway import Gateway
from deployments.model_server import ModelServer

IMPORT_PATH = "deployments.app:build_app"


def tier_deployment_name(tier_name: str) -> str:
    return f"tier-{tier_name}"


def build_app(args: dict[str, Any]) -> Application:
    """`args` is a CascadeConfig as a dict (what a RayService's serveConfigV2 passes)."""
    config: CascadeConfig = parse_config(args, "serve application args")
    tiers = {
        tier.name: ModelServer.options(name=tier_deployment_name(tier.name), **tier.deployment.to_serve()).bind(
            tier.model_dump(mode="json")
        )
        for tier in config.tiers
    }
    gateway = Gateway.options(name="gateway", **config.gateway.deployment.to_serve())
    return gateway.bind(config.model_dump(mode="json"), tiers)
