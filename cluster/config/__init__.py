"""The one configuration model: local runs, the Serve application and the Helm values all read it.

A config names the tiers (cheapest first), how each is priced and placed, the routes, and the gateway's
options. Its parts live in one module each (`base`, `deployment`, `tiers`, `routes`, `gateway`, and `model`
for the whole and its loading); `edit` writes a route's settings back into an operator's file, and
`node_types` derives the Ray node types from it. Import the model's names from here.
"""

from cluster.config.base import (
    ADAPTER_NAME_PATTERN,
    DEFAULT_MODEL_ALIAS,
    DEFAULT_ROUTE,
    GATEWAY_DEPLOYMENT,
    ConfigError,
    Price,
)
from cluster.config.deployment import Autoscaling, DeploymentOptions, RayActorOptions
from cluster.config.gateway import ApiKeyConfig, AuthConfig, GatewayConfig, RecordingConfig
from cluster.config.model import (
    CascadeConfig,
    MultinodeConfig,
    PoolConfig,
    judge_deployment_name,
    load_config,
    parse_config,
    tier_deployment_name,
)
from cluster.config.routes import AdaptationPolicy, JudgeConfig, RouteConfig
from cluster.config.tiers import LoraSettings, RemoteTierConfig, TierConfig

__all__ = [
    "ADAPTER_NAME_PATTERN", "DEFAULT_MODEL_ALIAS", "DEFAULT_ROUTE", "GATEWAY_DEPLOYMENT",
    "AdaptationPolicy",
    "ApiKeyConfig", "AuthConfig", "Autoscaling", "CascadeConfig", "ConfigError", "DeploymentOptions",
    "GatewayConfig", "JudgeConfig", "LoraSettings", "MultinodeConfig", "PoolConfig", "Price", "RayActorOptions",
    "RecordingConfig", "RemoteTierConfig", "RouteConfig", "TierConfig", "judge_deployment_name", "load_config",
    "parse_config", "tier_deployment_name",
]
