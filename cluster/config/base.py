"""Names and building blocks every part of the config shares: reserved names, the strict base model, prices."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

TIER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,40}$"
DEFAULT_MODEL_ALIAS = "cascade"
DEFAULT_ROUTE = "default"
GATEWAY_DEPLOYMENT = "gateway"
ADAPTER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,40}$"


class ConfigError(ValueError):
    """A config file could not be read or does not validate; the message names the bad field."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(StrictModel):
    input_per_1m_usd: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    output_per_1m_usd: float = Field(0.0, ge=0, description="USD per million generated tokens.")


def no_duplicates(field: str, names: list[str]) -> None:
    """Refuse a list of names that repeats one: names are keys everywhere downstream."""
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{field}: duplicate names {duplicates}")
