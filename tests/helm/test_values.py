"""Chart unit tests, one behaviour each: "should ... when `x` is set", setting only the values checked."""

from __future__ import annotations

import json

import yaml


def _env(pod_spec: dict) -> dict[str, dict]:
    return {item["name"]: item for item in pod_spec["containers"][0]["env"]}


def test_should_request_the_groups_gpus_when_gpus_is_set(chart) -> None:
    groups = chart.worker_groups(chart.example("gpu-multi-tier"))
    for name in ("slm", "mid"):
        resources = groups[name]["template"]["spec"]["containers"][0]["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == 1 and resources["limits"]["nvidia.com/gpu"] == 1
    values = chart.example("gpu-single")
    values["workerGroups"][0]["gpus"] = 4
    (group,) = chart.worker_groups(values).values()
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_should_request_no_gpu_when_cpu_only_is_set(chart) -> None:
    (group,) = chart.worker_groups(chart.example("cpu-dev")).values()
    assert "nvidia.com/gpu" not in json.dumps(group)


def test_should_set_autoscaling_bounds_when_min_and_max_replicas_are_set(chart) -> None:
    groups = chart.worker_groups(chart.example("gpu-multi-tier"))
    assert (groups["slm"]["minReplicas"], groups["slm"]["maxReplicas"], groups["slm"]["replicas"]) == (1, 4, 1)
    mid = groups["mid"]
    assert (mid["minReplicas"], mid["maxReplicas"], mid["idleTimeoutSeconds"]) == (0, 2, 600)
    cluster = chart.rayservice(chart.example("gpu-multi-tier"))["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == 300


def test_should_turn_the_autoscaler_off_when_autoscaling_enabled_is_false(chart) -> None:
    cluster = chart.rayservice({"autoscaling": {"enabled": False}})["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in cluster


def test_should_advertise_each_tiers_custom_resource_when_a_group_sets_custom_resources(chart) -> None:
    values = chart.example("gpu-multi-tier")
    groups = chart.worker_groups(values)
    advertised = {}
    for group in groups.values():
        advertised |= json.loads(json.loads(group["rayStartParams"]["resources"]))  # KubeRay's '"{...}"' form
    for tier in values["cascade"]["tiers"]:
        for key in tier.get("deployment", {}).get("ray_actor_options", {}).get("resources", {}):
            assert key in advertised, tier["name"]
    assert json.loads(json.loads(groups["slm"]["rayStartParams"]["resources"])) == {"pool_slm": 1}


def test_should_reference_api_keys_from_secrets_when_api_keys_are_set(chart) -> None:
    objects = chart.render(chart.example("gpu-multi-tier"))
    assert "Secret" not in chart.kinds(objects)
    for pod in chart.pod_specs(chart.example("gpu-multi-tier")):
        ref = _env(pod)["OPENAI_API_KEY"]
        assert ref == {"name": "OPENAI_API_KEY",
                       "valueFrom": {"secretKeyRef": {"name": "slm-cascade-llm-keys", "key": "openai-api-key"}}}


def test_should_reference_the_redis_password_when_gcs_fault_tolerance_is_enabled(chart) -> None:
    cluster = chart.rayservice(chart.example("gpu-multi-tier"))["spec"]["rayClusterConfig"]
    options = cluster["gcsFaultToleranceOptions"]
    assert options["redisAddress"] == "redis-master.redis.svc.cluster.local:6379"
    secret = {"name": "slm-cascade-redis", "key": "redis-password"}
    assert options["redisPassword"] == {"valueFrom": {"secretKeyRef": secret}}
    assert "gcsFaultToleranceOptions" not in chart.rayservice()["spec"]["rayClusterConfig"]


def test_should_set_the_otlp_endpoint_when_otel_endpoint_is_set(chart) -> None:
    for pod in chart.pod_specs({"otel": {"endpoint": "http://collector:4317"}}):
        assert _env(pod)["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://collector:4317"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in _env(chart.pod_specs()[0])


def test_should_run_non_root_with_a_read_only_root_and_a_tmp_empty_dir(chart, values_file) -> None:
    for pod in chart.pod_specs(values_file[1]):
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = pod["containers"][0]
        assert container["securityContext"] == {
            "runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])
        assert container["resources"]["requests"]


def test_should_use_one_pod_template_for_head_and_workers(chart) -> None:
    head, *workers = chart.pod_specs(chart.example("gpu-multi-tier"))
    for worker in workers:
        assert worker["volumes"] == head["volumes"]
        assert worker["containers"][0]["env"] == head["containers"][0]["env"]


def test_should_label_every_object_with_the_standard_labels(chart, values_file) -> None:
    for obj in chart.render(values_file[1]):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "slm-cascade"
        assert labels["app.kubernetes.io/instance"] == chart.release
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "slm-cascade-0.1.0"


def test_should_cut_names_to_63_characters_when_fullname_override_is_long(chart) -> None:
    name = chart.rayservice({"fullnameOverride": "x" * 80})["metadata"]["name"]
    assert name == "x" * 63


def test_should_render_ingress_network_policy_and_pod_monitor_only_when_enabled(chart) -> None:
    optional = {"Ingress", "NetworkPolicy", "PodMonitor"}
    assert not optional & chart.kinds(chart.render())
    assert optional <= chart.kinds(chart.render(chart.example("gpu-multi-tier")))


def test_should_point_the_service_at_serve_ready_pods(chart) -> None:
    service = chart.only(chart.render({"service": {"port": 80}}), "Service")
    assert service["spec"]["selector"]["ray.io/serve"] == "true"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "serve", "protocol": "TCP"}]


def test_should_put_the_pod_disruption_budget_on_the_release_when_enabled(chart) -> None:
    values = {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}}
    pdb = chart.only(chart.render(values), "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == chart.release


def test_should_never_inline_anything_that_looks_like_a_key(chart) -> None:
    text = yaml.safe_dump_all(chart.render(chart.example("gpu-multi-tier")))
    assert "sk-" not in text and "password:" not in text.lower().replace("redispassword:", "")
