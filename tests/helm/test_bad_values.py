"""Values that break values.schema.json or the chart's own checks fail at render time, naming the field."""

from __future__ import annotations

import pytest

from cluster.operations.render import RenderError, render_chart


def _fails(chart, mutate, *fragments: str) -> None:
    values = chart.example("gpu-multi-tier")
    mutate(values)
    with pytest.raises(RenderError) as caught:
        render_chart(values, source="bad.yaml")
    message = str(caught.value)
    assert "bad.yaml" in message
    for fragment in fragments:
        assert fragment in message, message


def test_negative_replicas_are_rejected(chart) -> None:
    _fails(chart, lambda v: v["workerGroups"][0].update(minReplicas=-1), "/workerGroups/0/minReplicas", "minimum")


def test_a_gpu_group_with_zero_gpus_is_rejected(chart) -> None:
    _fails(chart, lambda v: v["workerGroups"][1].update(gpus=0), "/workerGroups/1/gpus")


def test_a_gpu_group_without_gpus_is_rejected(chart) -> None:
    _fails(chart, lambda v: v["workerGroups"][1].pop("gpus"), "/workerGroups/1", "gpus")


def test_a_tier_without_a_model_is_rejected(chart) -> None:
    _fails(chart, lambda v: v["cascade"]["tiers"][0].pop("model"), "/cascade/tiers/0", "model")


def test_a_remote_tier_without_a_base_url_is_rejected(chart) -> None:
    _fails(chart, lambda v: v["cascade"]["tiers"][2].pop("base_url"), "/cascade/tiers/2", "base_url")


def test_an_inline_api_key_is_rejected(chart) -> None:
    _fails(chart, lambda v: v["apiKeys"][0].update(value="sk-not-here"), "/apiKeys/0", "value")


def test_a_remote_tiers_key_without_a_secret_reference_is_rejected(chart) -> None:
    _fails(chart, lambda v: v.update(apiKeys=[]), "cascade.tiers[2].api_key_env", "OPENAI_API_KEY")


def test_inverted_replica_bounds_are_rejected(chart) -> None:
    _fails(chart, lambda v: v["workerGroups"][0].update(maxReplicas=0), "workerGroups[0].minReplicas")


def test_a_tier_resource_no_group_advertises_is_rejected(chart) -> None:
    _fails(chart, lambda v: v["workerGroups"][0].pop("customResources"),
           "cascade.tiers[0].deployment.ray_actor_options.resources.pool_slm")


def test_a_misspelt_top_level_key_is_rejected(chart) -> None:
    _fails(chart, lambda v: v.update(workerGroup=[]), "workerGroup")


def test_a_cascade_the_app_rejects_is_reported_by_values_config(chart) -> None:
    from cluster.operations.render import values_config

    values = chart.example("gpu-single")
    values["cascade"]["tiers"][1]["name"] = "slm"
    with pytest.raises(RenderError, match="duplicate"):
        values_config(values)


def test_a_judge_resource_no_group_advertises_is_rejected(chart) -> None:
    def judge_on_a_missing_pool(values: dict) -> None:
        values["cascade"]["routes"][1]["judge"]["deployment"] = {"ray_actor_options": {"resources": {"pool_x": 1}}}

    _fails(chart, judge_on_a_missing_pool, "cascade.routes[1].judge.deployment.ray_actor_options.resources.pool_x")


def test_a_gateway_resource_no_group_advertises_is_rejected(chart) -> None:
    _fails(chart, lambda v: v["cascade"]["gateway"]["deployment"]["ray_actor_options"].update(resources={"pool_x": 1}),
           "cascade.gateway.deployment.ray_actor_options.resources.pool_x")


def test_a_misspelt_key_deep_in_cascade_is_rejected(chart) -> None:
    """The generated schema is as strict as the model (extra keys forbidden), at every depth."""
    _fails(chart, lambda v: v["cascade"]["tiers"][0]["deployment"]["autoscaling"].update(max_replica=8),
           "/cascade/tiers/0/deployment/autoscaling", "max_replica")


def test_a_deployment_on_a_remote_tier_is_rejected(chart) -> None:
    _fails(chart, lambda v: v["cascade"]["tiers"][2].update(deployment={}), "/cascade/tiers/2", "deployment")


def test_an_unknown_request_router_is_rejected(chart) -> None:
    _fails(chart, lambda v: v["cascade"]["tiers"][0]["deployment"].update(request_router="random"),
           "/cascade/tiers/0/deployment/request_router", "prefix_affinity")
