"""How a Serve deployment is placed and scaled: Ray actor options, autoscaling, the request router."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from cluster.config.base import StrictModel


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


# Request routers beyond Serve's default, by config name: Serve's `request_router_config` for each. A path, not an
# import: cluster/ does not import deployments/.
REQUEST_ROUTERS: dict[str, dict[str, str]] = {
    "prefix_affinity": {"request_router_class": "deployments.prefix_router.PrefixAffinityRouter"},
}


class DeploymentOptions(StrictModel):
    """What Ray Serve needs to place and scale one deployment."""

    ray_actor_options: RayActorOptions = Field(default_factory=RayActorOptions)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    max_ongoing_requests: int = Field(8, ge=1, description="Requests one replica works on at once.")
    max_queued_requests: int = Field(64, ge=-1, description="Requests a caller may queue; -1 is unbounded.")
    request_router: Literal["power_of_two", "prefix_affinity"] = Field(
        "power_of_two", description="How callers pick a replica: Serve's default (the less loaded of two random "
        "ones), or `prefix_affinity` for model tiers: requests with the same tools and system prompt go to the "
        "replica whose prefix cache holds them (deployments.prefix_router).",
    )

    def to_serve(self) -> dict[str, Any]:
        """Keyword arguments for `serve.deployment(...).options(...)` and the RayService serve config."""
        options: dict[str, Any] = {
            "ray_actor_options": self.ray_actor_options.to_ray(),
            "autoscaling_config": self.autoscaling.model_dump(exclude_none=True),
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }
        if self.request_router in REQUEST_ROUTERS:
            options["request_router_config"] = dict(REQUEST_ROUTERS[self.request_router])
        return options
