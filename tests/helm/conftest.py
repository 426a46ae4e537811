"""Chart tests: the real Helm (its Go library, from the helm-python-sdk wheel) renders the chart offline.

Helpers come as the `chart` fixture (the suite runs with --import-mode=importlib, so test modules don't
import this file).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from cluster.operations.render import CHART_DIR, load_values, manifests, render_chart

RELEASE = "test-release"  # a fixed release name, as helm-unittest suites use
NAMESPACE = "serving"
# Every values file the chart ships: the defaults plus each example.
VALUES_FILES = {"defaults": None} | {path.stem: path for path in sorted((CHART_DIR / "examples").glob("*.yaml"))}


class Chart:
    release = RELEASE
    namespace = NAMESPACE
    examples = sorted((CHART_DIR / "examples").glob("*.yaml"))

    @staticmethod
    def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return manifests(render_chart(copy.deepcopy(values or {}), release=RELEASE, namespace=NAMESPACE))

    @staticmethod
    def example(name: str) -> dict[str, Any]:
        return load_values(CHART_DIR / "examples" / f"{name}.yaml")

    @staticmethod
    def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        found = [obj for obj in objects if obj["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, got {sorted(o['kind'] for o in objects)}"
        return found[0]

    @staticmethod
    def kinds(objects: list[dict[str, Any]]) -> set[str]:
        return {obj["kind"] for obj in objects}

    @classmethod
    def rayservice(cls, values: dict[str, Any] | None = None) -> dict[str, Any]:
        return cls.only(cls.render(values), "RayService")

    @classmethod
    def serve_config(cls, values: dict[str, Any] | None = None) -> dict[str, Any]:
        return yaml.safe_load(cls.rayservice(values)["spec"]["serveConfigV2"])

    @classmethod
    def worker_groups(cls, values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        spec = cls.rayservice(values)["spec"]["rayClusterConfig"]
        return {group["groupName"]: group for group in spec.get("workerGroupSpecs", [])}

    @classmethod
    def pod_specs(cls, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Pod specs of the head and every worker group."""
        spec = cls.rayservice(values)["spec"]["rayClusterConfig"]
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        return [group["template"]["spec"] for group in groups]


@pytest.fixture(scope="session")
def chart() -> type[Chart]:
    return Chart


@pytest.fixture(params=sorted(VALUES_FILES), ids=sorted(VALUES_FILES))
def values_file(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(name, values) for the chart defaults and each file in helm/slm-cascade/examples/."""
    path = VALUES_FILES[request.param]
    return request.param, load_values(path)
