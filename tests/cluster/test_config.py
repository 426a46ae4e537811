"""Config validation names the bad field, and the CLI refuses a bad config before starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.config import ConfigError, load_config, parse_config

CASCADE = str(Path(sys.executable).with_name("cascade"))


def _default() -> dict:
    return load_config().model_dump(mode="json")


def test_embedded_default_has_slm_first_and_a_fallback() -> None:
    config = load_config()
    assert [tier.name for tier in config.tiers] == ["slm", "fallback"]
    assert config.route_tiers(config.route("default")) == ["slm", "fallback"]
    assert config.tiers[0].price.output_per_1m_usd < config.tiers[1].price.output_per_1m_usd


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c["tiers"][0].update(name="Bad Name"), "tiers.0.name"),
        (lambda c: c["tiers"][0]["price"].update(input_per_1m_usd=-1), "tiers.0.price.input_per_1m_usd"),
        (lambda c: c["tiers"][0]["deployment"]["autoscaling"].update(min_replicas=3, max_replicas=2),
         "tiers.0.deployment.autoscaling"),
        (lambda c: c["tiers"][1].update(name="slm"), "tiers"),
        (lambda c: c["routes"][0].update(tiers=["slm", "gpt-9"]), "routes.default.tiers"),
        (lambda c: c["routes"][0].update(name="other"), "a route named 'default' is required"),
        (lambda c: c["routes"][0].update(threshold=1.5), "routes.0.threshold"),
        (lambda c: c["routes"][0].update(confidence_policy="vibes"), "confidence_policy 'vibes'"),
        (lambda c: c["routes"].append(dict(c["routes"][0])), "routes: duplicate names"),
        (lambda c: c["tiers"].append({"kind": "remote", "name": "llm", "base_url": "ftp://x", "remote_model": "m"}),
         "tiers.2.base_url"),
        (lambda c: c["tiers"].append({"kind": "remote", "name": "llm", "base_url": "https://x/v1",
                                      "remote_model": "m", "api_key": "sk-secret"}), "tiers.2.api_key"),
        (lambda c: c["routes"][0].update(judge={"tier": "nope"}), "routes.default.judge.tier"),
        (lambda c: c["gateway"].update(port=70000), "gateway.port"),
        (lambda c: c["tiers"][0]["engine_args"].update(model="other"), "tiers.0"),
        (lambda c: c["tiers"][0].update(unknown_field=1), "tiers.0.unknown_field"),
        (lambda c: c.update(tiers=[]), "tiers"),
        (lambda c: c["gateway"].pop("auth"), "auth is required (the default) but no keys are configured"),
        (lambda c: c["gateway"]["auth"].update(required=True), "gateway.auth.required: false"),
        (lambda c: c["gateway"]["auth"].update(keys=[{"name": "a", "sha256": "sha256:" + "0" * 64,
                                                       "routes": ["nope"]}]), "gateway.auth.keys.a.routes"),
        (lambda c: c["gateway"]["auth"].update(keys=[{"name": "a", "sha256": "secret-token"}]),
         "gateway.auth.keys.0.sha256"),
        (lambda c: c["gateway"]["auth"].update(keys=[{"name": n, "sha256": "sha256:" + "1" * 64} for n in "ab"]),
         "digests"),
        (lambda c: c["gateway"]["auth"].update(keys=[{"name": "a", "sha256": "sha256:" + "0" * 64,
                                                       "requests_per_minute": float("inf")}]),
         "requests_per_minute"),
        (lambda c: c["multinode"]["pools"].update(pool_gpu={}), "multinode.pools: ['pool_gpu'] are asked for by no"),
        (lambda c: c["multinode"]["pools"]["pool_slm"].update(min_nodes=3, max_nodes=2), "multinode.pools.pool_slm"),
        (lambda c: c["multinode"]["pools"].update({"Pool SLM": {}}), "multinode.pools.Pool SLM"),
        (lambda c: c["multinode"].update(idle_timeout_s=0), "multinode.idle_timeout_s"),
    ],
)
def test_invalid_config_names_the_bad_field(mutate, field: str) -> None:
    data = _default()
    mutate(data)
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    assert field in str(raised.value)


def test_cli_up_rejects_invalid_config_before_starting(tmp_path: Path) -> None:
    data = _default()
    data["tiers"][0]["price"]["output_per_1m_usd"] = "cheap"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    result = subprocess.run([CASCADE, "up", "--config", str(path)], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "tiers.0.price.output_per_1m_usd" in result.stderr
    assert "starting Ray" not in result.stderr


def test_cli_up_refuses_a_remote_tier_whose_key_variable_is_unset_by_its_name(tmp_path: Path) -> None:
    data = _default()
    data["tiers"].append({"kind": "remote", "name": "hosted", "base_url": "https://api.example.com/v1",
                          "remote_model": "big", "api_key_env": "CASCADE_TEST_NEVER_SET_KEY"})
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "CASCADE_TEST_NEVER_SET_KEY"}
    result = subprocess.run([CASCADE, "up", "--config", str(path)], check=False, capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode != 0
    assert "tier 'hosted' reads its API key from CASCADE_TEST_NEVER_SET_KEY" in result.stderr
    assert "starting Ray" not in result.stderr


def test_cli_reports_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    missing = subprocess.run([CASCADE, "up", "--config", str(tmp_path / "nope.yaml")], check=False,
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot read config" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("tiers: [unclosed")
    result = subprocess.run([CASCADE, "up", "--config", str(broken)], check=False, capture_output=True, text=True)
    assert result.returncode == 2 and "not valid YAML" in result.stderr


def test_keys_create_prints_the_token_once_and_an_entry_that_matches_it() -> None:
    from policies.access import hash_api_key

    result = subprocess.run([CASCADE, "keys", "create", "--name", "ci", "--routes", "default",
                             "--requests-per-minute", "30"], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    token = result.stdout.strip()
    assert token.startswith("sk-cascade-") and token not in result.stderr
    entry = yaml.safe_load(result.stderr.split("gateway.auth.keys:", 1)[1])[0]
    assert entry == {"name": "ci", "sha256": hash_api_key(token), "routes": ["default"],
                     "requests_per_minute": 30.0, "burst": 10}
    data = _default()
    data["gateway"]["auth"] = {"required": True, "keys": [entry]}
    assert parse_config(data).gateway.auth.keys[0].sha256 == hash_api_key(token)


def test_a_named_request_router_becomes_serves_request_router_config() -> None:
    from ray._common.utils import import_attr

    from cluster.config import DeploymentOptions
    from deployments.prefix_router import PrefixAffinityRouter

    routed = DeploymentOptions(request_router="prefix_affinity").to_serve()["request_router_config"]
    assert import_attr(routed["request_router_class"]) is PrefixAffinityRouter
    assert "request_router_config" not in DeploymentOptions().to_serve()  # Serve's own default, untouched
    assert load_config().tiers[0].deployment.request_router == "prefix_affinity"  # the SLM, which autoscales
