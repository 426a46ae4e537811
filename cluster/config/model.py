"""The whole config (tiers, routes, gateway, multi-node pools), its cross-field rules, and loading it from YAML.

Engine arguments are passed to vLLM's own argument parser (`vllm serve` flags), so vLLM stays the single authority
on what they mean; this model only checks what slm-cascade itself relies on.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, model_validator

from cluster.config.base import (
    DEFAULT_MODEL_ALIAS,
    DEFAULT_ROUTE,
    GATEWAY_DEPLOYMENT,
    ConfigError,
    StrictModel,
    no_duplicates,
)
from cluster.config.deployment import DeploymentOptions
from cluster.config.gateway import GatewayConfig
from cluster.config.routes import RouteConfig
from cluster.config.tiers import AnyTier, RemoteTierConfig, TierConfig

POOL_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,40}$"


class PoolConfig(StrictModel):
    """One worker node type of `cascade up --multinode`: nodes that advertise the pool's resource.

    On Kubernetes the chart's `workerGroups` play this part (same resource in `customResources`).
    """

    num_cpus: float = Field(1.0, gt=0, description="Logical CPUs each node of the pool advertises.")
    per_node: float = Field(1.0, gt=0, description="Units of the pool resource each node advertises: with "
                            "replicas asking for 1 each, the replicas one node holds.")
    min_nodes: int = Field(0, ge=0)
    max_nodes: int = Field(2, ge=1, description="Each node is a real raylet on this machine: mind memory.")

    @model_validator(mode="after")
    def _bounds(self) -> PoolConfig:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes ({self.min_nodes}) > max_nodes ({self.max_nodes})")
        return self


class MultinodeConfig(StrictModel):
    """The local multi-node cluster: a head plus one autoscaled worker node type per pool.

    A pool is a custom Ray resource that deployments ask for in `ray_actor_options.resources` (e.g.
    `pool_slm: 1`). Every such resource is a pool; `pools` only overrides a pool's node size and bounds.
    """

    head_num_cpus: float = Field(1.0, gt=0, description="Logical CPUs of the head: gateway, judges and "
                                 "deployments that ask for no pool.")
    idle_timeout_s: float = Field(30.0, gt=0, description="A worker node idle this long is removed.")
    pools: dict[Annotated[str, Field(pattern=POOL_NAME_PATTERN)], PoolConfig] = Field(default_factory=dict)


class CascadeConfig(StrictModel):
    app_name: str = Field("slm-cascade", pattern=r"^[a-z0-9][a-z0-9-]*$")
    tiers: list[AnyTier] = Field(min_length=1, description="Model tiers, cheapest first.")
    routes: list[RouteConfig] = Field(
        default_factory=lambda: [RouteConfig(name=DEFAULT_ROUTE)], description="Task types; `default` must exist."
    )
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    multinode: MultinodeConfig = Field(default_factory=MultinodeConfig, description="`cascade up --multinode`.")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> CascadeConfig:
        names = [tier.name for tier in self.tiers]
        no_duplicates("tiers", names)
        if DEFAULT_MODEL_ALIAS in names:
            raise ValueError(f"tiers: {DEFAULT_MODEL_ALIAS!r} is reserved for the cascade itself")
        no_duplicates("routes", [route.name for route in self.routes])
        if DEFAULT_ROUTE not in {route.name for route in self.routes}:
            raise ValueError(f"routes: a route named {DEFAULT_ROUTE!r} is required")
        vllm_names = {tier.name for tier in self.vllm_tiers}
        for route in self.routes:
            unknown = [name for name in route.tiers if name not in names]
            if unknown:
                raise ValueError(f"routes.{route.name}.tiers: unknown tiers {unknown}; known: {names}")
            if route.judge is not None and route.judge.tier not in vllm_names:
                raise ValueError(f"routes.{route.name}.judge.tier: {route.judge.tier!r} is not a vLLM tier")
            if route.adapter is not None:
                first = self.tier(self.route_tiers(route)[0])
                if not isinstance(first, TierConfig) or first.lora is None:
                    raise ValueError(f"routes.{route.name}.adapter: its first tier {first.name!r} has no `lora` "
                                     "settings, so it cannot serve adapters")
        unused_pools = sorted(set(self.multinode.pools) - set(self.pool_demand()))
        if unused_pools:
            raise ValueError(f"multinode.pools: {unused_pools} are asked for by no deployment's "
                             "ray_actor_options.resources, so no replica would ever land there")
        route_names = {route.name for route in self.routes}
        for route in self.routes:
            unknown = sorted(set(route.adaptation.regression_routes or ()) - route_names)
            if unknown:
                raise ValueError(f"routes.{route.name}.adaptation.regression_routes: unknown routes {unknown}")
        for key in self.gateway.auth.keys:
            unknown = sorted(set(key.routes) - route_names)
            if unknown:
                raise ValueError(f"gateway.auth.keys.{key.name}.routes: unknown routes {unknown}")
        return self

    @property
    def vllm_tiers(self) -> list[TierConfig]:
        return [tier for tier in self.tiers if isinstance(tier, TierConfig)]

    @property
    def remote_tiers(self) -> list[RemoteTierConfig]:
        return [tier for tier in self.tiers if isinstance(tier, RemoteTierConfig)]

    @property
    def deployment_options(self) -> dict[str, DeploymentOptions]:
        """Placement and scaling of every Serve deployment the config makes, by deployment name."""
        options = {GATEWAY_DEPLOYMENT: self.gateway.deployment}
        options |= {tier_deployment_name(tier.name): tier.deployment for tier in self.vllm_tiers}
        options |= {judge_deployment_name(route.name): route.judge.deployment for route in self.routes if route.judge}
        return options

    def pool_demand(self) -> dict[str, float]:
        """Each pool (custom Ray resource) -> the most of it the deployments asking for it may hold at once."""
        demand: dict[str, float] = {}
        for options in self.deployment_options.values():
            for resource, amount in options.ray_actor_options.resources.items():
                demand[resource] = demand.get(resource, 0.0) + amount * options.autoscaling.max_replicas
        return demand

    def tier(self, name: str) -> TierConfig | RemoteTierConfig:
        return next(tier for tier in self.tiers if tier.name == name)

    def route(self, name: str) -> RouteConfig:
        return next(route for route in self.routes if route.name == name)

    def route_tiers(self, route: RouteConfig) -> list[str]:
        return route.tiers or [tier.name for tier in self.tiers]


def tier_deployment_name(tier_name: str) -> str:
    return f"tier-{tier_name}"


def judge_deployment_name(route_name: str) -> str:
    return f"judge-{route_name}"


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        # Tagged unions add the tag ("vllm", "remote") to the location; users think in list positions.
        parts = [str(part) for part in item["loc"] if part not in ("vllm", "remote")]
        lines.append(f"  {'.'.join(parts) or '(config)'}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> CascadeConfig:
    try:
        return CascadeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None


def load_config(path: str | Path | None = None) -> CascadeConfig:
    """Read a YAML config; with no path, the embedded default shipped in this package."""
    if path is None:
        text, source = files("cluster.config").joinpath("default_config.yaml").read_text(), "(embedded default)"
    else:
        try:
            text, source = Path(path).read_text(), str(path)
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config {source} is not valid YAML: {error}") from None
    return parse_config(data, source)
