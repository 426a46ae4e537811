"""One source of truth: the chart's serveConfigV2 is what `cascade render serve-config` prints, and it carries the
config only as the application's `args`: build_app computes every deployment's options from it at start-up."""

from __future__ import annotations

import pytest
import yaml

from cluster.config import load_config
from cluster.config.node_types import helm_worker_groups
from cluster.operations.render import (
    CHART_DIR,
    RenderError,
    load_values,
    render_serve_config,
    serve_config_text,
    values_config,
)


def _normalized(values: dict) -> tuple[dict, object]:
    """The values with `cascade:` as the app sees it (every default filled in), and that config."""
    config = values_config(values)
    return {**values, "cascade": config.model_dump(mode="json")}, config


def test_serve_config_equals_render_serve_config(chart, values_file: tuple[str, dict]) -> None:
    values, config = _normalized(values_file[1])
    assert chart.serve_config(values) == render_serve_config(config)


def test_serve_config_equals_it_for_the_embedded_default_config(chart) -> None:
    """With the worker groups `cascade render worker-groups` derives: its pools are what the chart advertises."""
    config = load_config()
    values = {"cascade": config.model_dump(mode="json"), "workerGroups": helm_worker_groups(config)}
    assert chart.serve_config(values) == render_serve_config(config)


def test_the_embedded_default_is_refused_without_groups_for_its_pools(chart) -> None:
    with pytest.raises(RenderError, match="pool_slm: no worker group advertises it"):
        chart.serve_config({"cascade": load_config().model_dump(mode="json")})


def test_args_are_the_cascade_values_verbatim(chart, values_file: tuple[str, dict]) -> None:
    _, values = values_file
    (app,) = chart.serve_config(values)["applications"]
    expected = values.get("cascade") or load_values(CHART_DIR / "values.yaml")["cascade"]
    assert app["args"] == expected


def test_the_serve_config_lists_no_deployments_and_serve_accepts_it(chart, values_file: tuple[str, dict]) -> None:
    """Options in a serve config override build_app's, and Serve replaces ray_actor_options/autoscaling_config
    whole: the chart lists none, so build_app's apply and no defaults are copied into the chart."""
    from ray.serve.schema import ServeDeploySchema

    config = chart.serve_config(values_file[1])
    (app,) = config["applications"]
    assert "deployments" not in app
    assert ServeDeploySchema.model_validate(config).applications[0].deployments == []


def test_build_app_sets_every_deployments_options_from_args(chart, values_file: tuple[str, dict]) -> None:
    """What Serve deploys for the chart's app: the options build_app computes from `args`, compact values too."""
    (app,) = chart.serve_config(values_file[1])["applications"]
    _assert_build_app_options(app["args"], app["name"])


def test_build_app_sets_the_request_router_of_the_embedded_default() -> None:
    config = load_config()
    assert "prefix_affinity" in {options.request_router for options in config.deployment_options.values()}
    _assert_build_app_options(config.model_dump(mode="json"), config.app_name)


def _assert_build_app_options(args: dict, app_name: str) -> None:
    from ray.serve._private.build_app import build_app as build  # Serve's own step from Application to deployments

    from deployments.app import build_app

    config = values_config({"cascade": args})
    built = {d.name: d for d in build(build_app(args), name=app_name).deployments}
    assert set(built) == set(config.deployment_options)
    for name, options in config.deployment_options.items():
        expected, deployment = options.to_serve(), built[name]._deployment_config
        assert built[name].ray_actor_options == expected["ray_actor_options"], name
        autoscaling = {key: getattr(deployment.autoscaling_config, key) for key in expected["autoscaling_config"]}
        assert autoscaling == expected["autoscaling_config"], name
        assert (deployment.max_ongoing_requests, deployment.max_queued_requests) == (
            expected["max_ongoing_requests"], expected["max_queued_requests"]), name
        router = deployment.request_router_config
        if "request_router_config" in expected:
            assert router.request_router_class == expected["request_router_config"]["request_router_class"], name
        else:
            assert router.is_default_request_router(), name


def test_the_chart_serves_on_the_gateway_port(chart) -> None:
    values = chart.example("gpu-single")
    values["cascade"]["gateway"] = {"port": 9000}
    config = chart.serve_config(values)
    assert config["http_options"] == {"host": "0.0.0.0", "port": 9000}
    ports = chart.pod_specs(values)[0]["containers"][0]["ports"]
    assert {"name": "serve", "containerPort": 9000} in ports


def test_render_serve_config_text_is_the_same_yaml(chart) -> None:
    config = values_config(chart.example("gpu-multi-tier"))
    assert yaml.safe_load(serve_config_text(config)) == render_serve_config(config)


def test_a_partial_cascade_deploys_what_render_serve_config_prints(chart) -> None:
    """Helm merges `cascade:` over the chart default's (here the default's gateway.auth): so does values_config."""
    values = {"cascade": {"tiers": [{"name": "slm", "model": "m"}], "gateway": {"port": 9000}}}
    assert values_config(values).gateway.auth.required is True
    (app,) = chart.serve_config(values)["applications"]
    assert values_config({"cascade": app["args"]}) == values_config(values)
    without_auth = {"cascade": {"tiers": [{"name": "slm", "model": "m"}], "gateway": {"auth": None}}}
    (app,) = chart.serve_config(without_auth)["applications"]
    assert "auth" not in app["args"]["gateway"]  # a null removes the default's key
    with pytest.raises(RenderError, match="auth is required"):  # the model's own default then: no keys, refused
        values_config(without_auth)
