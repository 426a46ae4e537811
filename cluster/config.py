"""The one configuration model: local runs, the Serve application and the Helm values all read it.

A config names the tiers (cheapest first), how each is priced and placed, and the gateway's options. Engine
arguments are passed to vLLM's own argument parser (`vllm serve` flags), so vLLM stays the single authority
on what they mean; this model only checks what slm-cascade itself relies on.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from cluster.telemetry.tracing import TracingSettings
from policies.confidence import CONFIDENCE_POLICIES, build_confidence_policy
from policies.routing import DIFFICULTY_PREDICTORS

TIER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,40}$"
DEFAULT_MODEL_ALIAS = "cascade"
DEFAULT_ROUTE = "default"
GATEWAY_DEPLOYMENT = "gateway"


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


ADAPTER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,40}$"


class LoraSettings(StrictModel):
    """LoRA adapters a vLLM tier serves over its model; requests name one, Serve routes them to replicas holding it."""

    max_loras: int = Field(
        4, ge=1, description="Adapters one replica holds at once (the least recently used is unloaded): Serve's "
        "max_num_models_per_replica and vLLM's max_loras, the adapters one batch may mix.",
    )
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256] = Field(
        8, description="Largest adapter rank accepted; vLLM sizes its LoRA buffers by it, and takes only these values.",
    )
    adapters: dict[Annotated[str, Field(pattern=ADAPTER_NAME_PATTERN)], Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description="Adapter name (what a request asks for) -> a PEFT LoRA adapter folder: a "
        "local path, or a URI (file://, s3://, gs://) downloaded once; a URI's content must not change.",
    )
    cache_dir: str | None = Field(
        None, description="Where adapters given by URI are downloaded; default: adapters/ in the slm-cascade cache.",
    )
    adapter_dir: str | None = Field(
        None, description="A local folder whose sub-folders are adapters too, by folder name: `cascade adapt` "
        "writes there, so a new adapter serves without restarting the engines.",
    )


class TierConfig(StrictModel):
    """A tier served by vLLM engines in this cluster, one Ray Serve deployment."""

    kind: Literal["vllm"] = "vllm"
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
    energy_model_watts: float = Field(
        25.0, gt=0, description="Modelled power while a replica works on a request: energy = watts x engine time, "
        "reported with source `model` (no NVML/RAPL counter is read for it).",
    )
    lora: LoraSettings | None = Field(None, description="LoRA adapters served over the model; None: none.")
    warm_up: bool = Field(
        True, description="Each replica answers one guided request before it takes traffic (engine, chat template, "
        "xgrammar's tokenizer data), so no client pays for a cold replica.",
    )

    @model_validator(mode="after")
    def _engine_args_owned_elsewhere(self) -> TierConfig:
        reserved = {"model", "served_model_name"} & set(self.engine_args)
        if reserved:
            raise ValueError(f"engine_args may not set {sorted(reserved)}: use the tier's `model` and `name`")
        return self


class RemoteTierConfig(StrictModel):
    """A tier behind any OpenAI-compatible endpoint outside the cluster (a hosted LLM, another cluster)."""

    kind: Literal["remote"]
    name: str = Field(pattern=TIER_NAME_PATTERN)
    base_url: str = Field(pattern=r"^https?://", description="Endpoint root, e.g. https://api.example.com/v1.")
    remote_model: str = Field(min_length=1, description="The `model` sent to the endpoint.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (a Kubernetes Secret); never the key itself."
    )
    price: Price = Field(default_factory=Price)
    timeout_s: float = Field(60.0, gt=0)


def _tier_kind(value: Any) -> str:
    return value.get("kind", "vllm") if isinstance(value, dict) else getattr(value, "kind", "vllm")


AnyTier = Annotated[
    Annotated[TierConfig, Tag("vllm")] | Annotated[RemoteTierConfig, Tag("remote")], Discriminator(_tier_kind)
]


class JudgeConfig(StrictModel):
    """A model-based verifier: its own Serve deployment, asking a tier to judge or re-sample the answer."""

    method: Literal["judge", "self_consistency"] = "judge"
    tier: str = Field(description="The vLLM tier that judges (or draws the extra samples).")
    samples: int = Field(3, ge=2, le=8, description="Self-consistency: answers drawn to compare with.")
    pass_score: float = Field(0.5, ge=0, le=1, description="A score below this fails the answer.")
    timeout_s: float = Field(30.0, gt=0, description="Past this the answer counts as unverified.")
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(ray_actor_options=RayActorOptions(num_cpus=0.05))
    )


class DifficultyConfig(StrictModel):
    predictor: str = Field("constant", description="Pre-routing predictor, one of policies.routing's registry.")
    hard_threshold: float = Field(0.8, ge=0, le=1, description="At or above this, start on the second tier.")


class ConfidenceModel(StrictModel):
    """A fitted confidence model (`cascade calibrate --fit` writes it): a logistic regression over named
    answer features, standardised by the training means and scales."""

    features: list[str] = Field(min_length=1)
    weights: list[float]
    means: list[float]
    scales: list[float]
    bias: float
    fitted_on: dict[str, Any] = Field(default_factory=dict, description="What it was fitted on, and how it scored.")

    def parameters(self) -> dict[str, Any]:
        """What ``policies.confidence.FittedPolicy`` takes."""
        return self.model_dump(exclude={"fitted_on"})


class ThresholdCertificate(StrictModel):
    """Why the threshold may be trusted (`cascade calibrate --target-error`): of ``n_accepted`` held-out answers
    at or above it, ``errors`` were wrong; with confidence 1 - delta the accepted error rate is <= upper_bound."""

    target_error: float = Field(gt=0, lt=1)
    delta: float = Field(gt=0, lt=1)
    n_accepted: int = Field(ge=1)
    errors: int = Field(ge=0)
    upper_bound: float = Field(ge=0, le=1)
    n_total: int = Field(ge=1)
    data: str = Field("", description="The labelled answers it was computed on.")


class AdaptationPolicy(StrictModel):
    """When a route adapts its SLM by itself, what a candidate must not forget, and when a promoted adapter
    is rolled back (`cascade adapt`; the rounds run as Ray work on the cluster)."""

    after_new_examples: int | None = Field(
        None, ge=1, description="Start a round once this many verified escalations were recorded since the last "
        "round; None: rounds start only by command (`cascade adapt run`).",
    )
    min_interval_s: float = Field(3600.0, ge=0, description="At most one round per this many seconds.")
    regression_routes: list[str] | None = Field(
        None, description="Routes whose recorded requests form the regression set a candidate is also replayed "
        "on; None: every other route whose first tier is this route's.",
    )
    regression_cases: int = Field(32, ge=0, description="At most this many regression requests per round.")
    regression_margin: float = Field(
        0.05, ge=0, lt=1, description="Success on the regression set a candidate may lose and still be promoted.",
    )
    rollback_min_requests: int = Field(
        20, ge=1, description="Live requests needed before and after a promotion to judge it.",
    )
    rollback_max_drop: float = Field(
        0.1, ge=0, lt=1, description="A promoted adapter whose live success falls by more than this below the "
        "route's success before it is rolled back automatically.",
    )
    train_resources: RayActorOptions = Field(
        default_factory=RayActorOptions, description="What the training task asks of Ray: a GPU (num_gpus: 1) "
        "where the SLM's pool has one, which also trains with QLoRA; a pool marker to train on its nodes.",
    )
    train_timeout_s: float = Field(3600.0, gt=0, description="A round whose training has not ended by then fails.")


class RouteConfig(StrictModel):
    """A named task type: which tiers it may use and how sure an answer must be to stop."""

    name: str = Field(pattern=TIER_NAME_PATTERN)
    tiers: list[str] = Field(default_factory=list, description="Tier names, cheapest first; empty: all tiers.")
    threshold: float = Field(0.0, ge=0, le=1, description="Confidence below this escalates (calibrate it).")
    threshold_certificate: ThresholdCertificate | None = None
    confidence_policy: str = Field("verifier_gated", description="One of policies.confidence's registry.")
    confidence_model: ConfidenceModel | None = Field(
        None, description="The fitted model's parameters; required by (and only by) confidence_policy 'fitted'."
    )
    grounding: Literal["off", "feature", "veto"] = Field(
        "feature", description="Grounding verifier: off; a feature of the confidence; or a verifier whose failure "
        "repairs or escalates (veto)."
    )
    max_repairs: int = Field(1, ge=0, le=3, description="Same-tier retries with the verifier's reasons.")
    budget_usd: float | None = Field(None, ge=0, description="Spend cap per request; None: no cap.")
    judge: JudgeConfig | None = None
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig)
    tool_execution: Literal["client", "server"] = Field(
        "client", description="server: validated calls to registered tools run in the gateway."
    )
    adapter: str | None = Field(
        None, pattern=ADAPTER_NAME_PATTERN, description="LoRA adapter the route's first tier runs with (its `lora`)."
    )
    record: bool = Field(
        True, description="With gateway.recording on: store this route's escalated, verified answers.",
    )
    adaptation: AdaptationPolicy = Field(default_factory=AdaptationPolicy)

    @model_validator(mode="after")
    def _known_policies(self) -> RouteConfig:
        if self.confidence_policy not in CONFIDENCE_POLICIES:
            raise ValueError(f"confidence_policy {self.confidence_policy!r} not in {sorted(CONFIDENCE_POLICIES)}")
        if (self.confidence_policy == "fitted") != (self.confidence_model is not None):
            raise ValueError("confidence_policy 'fitted' needs a confidence_model and only it takes one: run "
                             "`cascade calibrate --fit` to write both")
        if self.confidence_model is not None:
            build_confidence_policy(self.confidence_policy, self.confidence_model.parameters())
        if self.difficulty.predictor not in DIFFICULTY_PREDICTORS:
            raise ValueError(f"difficulty.predictor {self.difficulty.predictor!r} not in {sorted(DIFFICULTY_PREDICTORS)}")
        return self


class ApiKeyConfig(StrictModel):
    """One client's key: only its SHA-256 digest is configured (`cascade keys create` prints both)."""

    name: str = Field(pattern=TIER_NAME_PATTERN, description="Who holds the key; shown in errors and metrics.")
    sha256: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="Digest of the bearer token, never the token.")
    routes: list[str] = Field(default_factory=list, description="Routes the key may use; empty: every route.")
    direct_tiers: bool = Field(False, description="May address a tier by name, bypassing the cascade.")
    requests_per_minute: float | None = Field(None, gt=0, allow_inf_nan=False,
                                              description="Per gateway replica; None: unlimited.")
    burst: int = Field(10, ge=1, description="Requests allowed at once before the per-minute rate applies.")


class AuthConfig(StrictModel):
    """Bearer-token access to the HTTP API. On unless a config turns it off (the embedded local default does)."""

    required: bool = Field(True, description="Refuse HTTP requests without a valid key (401).")
    keys: list[ApiKeyConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keys_when_required(self) -> AuthConfig:
        if self.required and not self.keys:
            raise ValueError("auth is required (the default) but no keys are configured: add one under "
                             "gateway.auth.keys (`cascade keys create` makes one), or set gateway.auth.required: "
                             "false for a local, loopback-only run")
        _no_duplicates("auth.keys", [key.name for key in self.keys])
        _no_duplicates("auth.keys digests", [key.sha256 for key in self.keys])
        return self


class RecordingConfig(StrictModel):
    """Stores escalated requests whose fallback answer passed verification: training data for adapters."""

    enabled: bool = False
    path: str | None = Field(None, description="SQLite file; default: recordings.sqlite in the slm-cascade cache.")
    extra_fields: list[str] = Field(
        default_factory=list, description="Request fields stored beyond the contract (messages, tools, formats)."
    )


class GatewayConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Address the HTTP proxy binds.")
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Larger request bodies get 413.")
    max_tokens_limit: int = Field(4096, ge=1, description="Upper bound a client may ask for in max_tokens.")
    default_max_tokens: int = Field(1024, ge=1, description="max_tokens for a request that sets none: without it "
                                    "an engine generates to the end of its context window.")
    request_timeout_s: float = Field(120.0, gt=0, description="Deadline for one tier call.")
    default_deadline_s: float = Field(300.0, gt=0, description="Deadline for a whole request unless the client "
                                      "sets one (header x-cascade-deadline-s or body `deadline_s`).")
    max_deadline_s: float = Field(600.0, gt=0, description="Largest deadline a client may set.")
    auth: AuthConfig = Field(default_factory=dict, validate_default=True)  # required, no keys: fails, by design
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    tools: list[str] = Field(
        default_factory=list, description="`module:function` paths of tools the gateway may execute (server mode)."
    )
    tool_timeout_s: float = Field(5.0, gt=0, description="Deadline for one server-side tool execution.")
    telemetry: TracingSettings = Field(default_factory=TracingSettings)
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(
            ray_actor_options=RayActorOptions(num_cpus=0.1), max_ongoing_requests=64, max_queued_requests=256
        )
    )


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
        _no_duplicates("tiers", names)
        if DEFAULT_MODEL_ALIAS in names:
            raise ValueError(f"tiers: {DEFAULT_MODEL_ALIAS!r} is reserved for the cascade itself")
        _no_duplicates("routes", [route.name for route in self.routes])
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


def _no_duplicates(field: str, names: list[str]) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{field}: duplicate names {duplicates}")


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
