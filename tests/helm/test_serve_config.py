"""One source of truth: the chart's serveConfigV2 is what `cascade render serve-config` prints."""

from __future__ import annotations

import json

import pytest
import yaml

from cluster.config import load_config
from cluster.config.node_types import helm_worker_groups
from cluster.operations.render import (
    CHART_DIR,
    SERVE_DEFAULTS_FILE,
    RenderError,
    load_values,
    render_serve_config,
    serve_config_text,
    serve_defaults,
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


def test_deployments_equal_the_apps_even_for_a_compact_cascade(chart, values_file: tuple[str, dict]) -> None:
    """Serve replaces ray_actor_options/autoscaling_config whole: the chart completes them with the app's defaults."""
    _, values = values_file
    (chart_app,) = chart.serve_config(values)["applications"]
    (python_app,) = render_serve_config(values_config(values))["applications"]
    assert chart_app["deployments"] == python_app["deployments"]


def test_the_charts_defaults_file_is_generated_from_the_config_model() -> None:
    fix = 'regenerate: python -c "from cluster.operations.render import write_serve_defaults; write_serve_defaults()"'
    assert json.loads(SERVE_DEFAULTS_FILE.read_text()) == json.loads(json.dumps(serve_defaults())), fix


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


def test_remote_tiers_get_no_deployment_and_route_judges_do(chart) -> None:
    (app,) = chart.serve_config(chart.example("gpu-multi-tier"))["applications"]
    names = [d["name"] for d in app["deployments"]]
    assert names == ["gateway", "tier-slm", "tier-mid", "judge-extraction"]
