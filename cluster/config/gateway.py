"""The gateway's options: API keys and limits, recording, telemetry, tools, its own deployment."""

from __future__ import annotations

from pydantic import Field, model_validator

from cluster.config.base import TIER_NAME_PATTERN, StrictModel, no_duplicates
from cluster.config.deployment import DeploymentOptions, RayActorOptions
from cluster.telemetry.tracing import TracingSettings


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
        no_duplicates("auth.keys", [key.name for key in self.keys])
        no_duplicates("auth.keys digests", [key.sha256 for key in self.keys])
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
