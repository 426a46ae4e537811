"""The one configuration model: local runs, the Serve application and the Helm values all read it.

A config names the tiers (cheapest first), how each is priced and placed, and the gateway's options. Engine
arguments are passed to vLLM's own argument parser (`vllm serve` flags), so vLLM stays the single authority
on what they mean; this model only checks what slm-cascade itself relies on.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TIER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,40}$"
DEFAULT_MODEL_ALIAS = "cascade"


class ConfigError(ValueError):
    """A config file could not be read or does not validate; the message names the bad field."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(StrictModel):
    input_per_1m_usd: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    output_per_1m_usd: float = Field(0.0, ge=0, description="USD per million generated tokens.")


class RayActorOptions(StrictModel):
    num_cpus: float = Field(1.0, ge=0, description="Logical CPUs one replica reserves in Ray.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs one replica reserves (vLLM on GPU needs 1).")
    memory: int | None = Field(None, ge=0, description="Bytes of memory one replica reserves in Ray.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources, e.g. a node pool marker {pool_slm: 1}."
    )

    def to_ray(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude_defaults=False)


class Autoscaling(StrictModel):
    """Ray Serve `autoscaling_config` for one deployment."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class DeploymentOptions(StrictModel):
    """What Ray Serve needs to place and scale one deployment."""

    ray_actor_options: RayActorOptions = Field(default_factory=RayActorOptions)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    max_ongoing_requests: int = Field(8, ge=1, description="Requests one replica works on at once.")
    max_queued_requests: int = Field(64, ge=-1, description="Requests a caller may queue; -1 is unbounded.")

    def to_serve(self) -> dict[str, Any]:
        """Keyword arguments for `serve.deployment(...).options(...)` and the RayService serve config."""
        return {
            "ray_actor_options": self.ray_actor_options.to_ray(),
            "autoscaling_config": self.autoscaling.model_dump(exclude_none=True),
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }


class TierConfig(StrictModel):
    name: str = Field(pattern=TIER_NAME_PATTERN, description="Tier name; clients may pass it as `model`.")
    model: str = Field(min_length=1, description="`embedded:NAME`, a local path or a model id vLLM loads.")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments, as `vllm serve` flags with underscores."
    )
    price: Price = Field(default_factory=Price)
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)
    describe_tools_in_prompt: bool = Field(
        False, description="Add a system message listing the tools, for chat templates that ignore `tools`."
    )

    @model_validator(mode="after")
    def _engine_args_owned_elsewhere(self) -> TierConfig:
        reserved = {"model", "served_model_name"} & set(self.engine_args)
        if reserved:
            raise ValueError(f"engine_args may not set {sorted(reserved)}: use the tier's `model` and `name`")
        return self


class GatewayConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Address the HTTP proxy binds.")
    port: int = Field(8000, ge=1, le=65535)
    default_tier: str | None = Field(None, description="Tier that serves model `cascade`; first tier if unset.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Larger request bodies get 413.")
    max_tokens_limit: int = Field(4096, ge=1, description="Upper bound a client may ask for in max_tokens.")
    request_timeout_s: float = Field(120.0, gt=0, description="Deadline for one tier call.")
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(
            ray_actor_options=RayActorOptions(num_cpus=0.1), max_ongoing_requests=64, max_queued_requests=256
        )
    )


class CascadeConfig(StrictModel):
    app_name: str = Field("slm-cascade", pattern=r"^[a-z0-9][a-z0-9-]*$")
    tiers: list[TierConfig] = Field(min_length=1, description="Model tiers, cheapest first.")
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> CascadeConfig:
        names = [tier.name for tier in self.tiers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tiers: duplicate tier names {duplicates}")
        if DEFAULT_MODEL_ALIAS in names:
            raise ValueError(f"tiers: {DEFAULT_MODEL_ALIAS!r} is reserved for the default route")
        if self.gateway.default_tier is not None and self.gateway.default_tier not in names:
            raise ValueError(f"gateway.default_tier: {self.gateway.default_tier!r} is not one of {names}")
        return self

    @property
    def default_tier(self) -> TierConfig:
        name = self.gateway.default_tier or self.tiers[0].name
        return self.tier(name)

    def tier(self, name: str) -> TierConfig:
        return next(tier for tier in self.tiers if tier.name == name)


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {location}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> CascadeConfig:
    try:
        return CascadeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None


def load_config(path: str | Path | None = None) -> CascadeConfig:
    """Read a YAML config; with no path, the embedded default shipped in this package."""
    if path is None:
        text, source = files("cluster").joinpath("default_config.yaml").read_text(), "(embedded default)"
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
