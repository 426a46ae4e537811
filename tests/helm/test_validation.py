"""Every shipped values file renders, passes `helm lint --strict`, and every object validates offline:
core kinds against the Kubernetes OpenAPI schemas (kubernetes-validate), the RayService against KubeRay's CRD."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cluster.operations.render import lint_chart

KUBERAY_CRDS = Path(__file__).with_name("kuberay")  # shipped with the tests: source and licence in its README

KUBERNETES_VERSION = "1.33.0"
PROMETHEUS_OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor"}  # CRDs: no bundled schema, checked by shape below


@cache
def crd_schema(plural: str) -> dict[str, Any]:
    path = KUBERAY_CRDS / f"ray.io_{plural}.yaml"
    if not path.exists():
        pytest.fail(f"KubeRay CRD {path} is missing from the repository")
    crd = yaml.safe_load(path.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def test_the_examples_cover_cpu_single_gpu_and_multi_tier(chart) -> None:
    assert {path.stem for path in chart.examples} >= {"cpu-dev", "gpu-single", "gpu-multi-tier"}


def test_lint_is_clean(values_file: tuple[str, dict]) -> None:
    _, values = values_file
    findings = [line for line in lint_chart(values) if not line.startswith("INFO")]
    assert findings == []


def test_core_objects_match_the_kubernetes_openapi_schemas(chart, values_file: tuple[str, dict]) -> None:
    _, values = values_file
    for obj in chart.render(values):
        if obj["apiVersion"] == "ray.io/v1" or obj["kind"] in PROMETHEUS_OPERATOR_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_rayservice_matches_the_kuberay_crd(chart, values_file: tuple[str, dict]) -> None:
    _, values = values_file
    rayservice = chart.rayservice(values)
    jsonschema.validate(rayservice, crd_schema("rayservices"))
    # The embedded cluster spec is a RayCluster spec: check it against that CRD too.
    raycluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "x"},
                  "spec": rayservice["spec"]["rayClusterConfig"]}
    jsonschema.validate(raycluster, crd_schema("rayclusters"))


def test_the_kuberay_schema_check_would_catch_a_bad_field(chart) -> None:
    rayservice = chart.rayservice()
    rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rayservice, crd_schema("rayservices"))


def test_prometheus_operator_objects_have_the_expected_shape(chart) -> None:
    monitor = chart.only(chart.render(chart.example("gpu-multi-tier")), "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "interval": "30s"}]
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "test-release"


def test_every_values_file_renders_the_core_objects(chart, values_file: tuple[str, dict]) -> None:
    _, values = values_file
    objects = chart.render(values)
    assert {"RayService", "Service"} <= chart.kinds(objects)
    json.dumps(objects)  # plain data all the way down


def test_render_chart_text_is_multi_document_yaml_like_helm_template(chart) -> None:
    from cluster.operations.render import render_chart_text

    documents = [doc for doc in yaml.safe_load_all(render_chart_text(chart.examples[0])) if doc]
    assert {"RayService", "Service"} <= {doc["kind"] for doc in documents}
