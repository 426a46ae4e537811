"""Routes (task types): their tiers, confidence policy, judge, thresholds and adaptation policy."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from cluster.config.base import ADAPTER_NAME_PATTERN, TIER_NAME_PATTERN, StrictModel
from cluster.config.deployment import DeploymentOptions, RayActorOptions
from policies.confidence import CONFIDENCE_POLICIES, build_confidence_policy
from policies.routing import DIFFICULTY_PREDICTORS


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
            raise ValueError(f"difficulty.predictor {self.difficulty.predictor!r} "
                             f"not in {sorted(DIFFICULTY_PREDICTORS)}")
        return self
