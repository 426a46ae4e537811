"""The model tiers: vLLM engines in this cluster (with LoRA adapters) or a remote OpenAI-compatible API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from cluster.config.base import ADAPTER_NAME_PATTERN, TIER_NAME_PATTERN, Price, StrictModel
from cluster.config.deployment import DeploymentOptions


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
