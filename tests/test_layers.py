"""The tree keeps its layers: no import goes up a layer or closes a cycle; and the checker itself can fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from import_layers import LAYERS, import_cycles, import_graph, layer_of, module_files, upward_imports

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_files(ROOT))


def test_every_module_has_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_no_import_goes_up_a_layer(graph):
    assert [str(violation) for violation in upward_imports(graph)] == []


def test_no_import_cycle(graph):
    assert import_cycles(graph) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(module_files(tmp_path, ("policies", "cluster", "deployments", "bench")))


def test_the_checker_finds_a_deliberate_upward_import(tmp_path):
    graph = _tree(tmp_path, {
        "policies/__init__.py": "",
        "policies/rule.py": "def decide():\n    from deployments.gateway import Gateway\n",  # a lazy one counts too
        "deployments/__init__.py": "",
        "deployments/gateway.py": "from policies.rule import decide\nclass Gateway: ...\n",
        "cluster/__init__.py": "",
        "cluster/config/__init__.py": "from cluster.operations import local\n",
        "cluster/operations/__init__.py": "",
        "cluster/operations/local.py": "from .. import config\n",
    })
    found = {(v.importer, v.imported) for v in upward_imports(graph, LAYERS)}
    assert found == {("policies.rule", "deployments.gateway"), ("cluster.config", "cluster.operations"),
                     ("cluster.config", "cluster.operations.local")}


def test_the_checker_finds_a_cycle_within_a_layer(tmp_path):
    graph = _tree(tmp_path, {
        "deployments/__init__.py": "",
        "deployments/a.py": "import deployments.b\n",
        "deployments/b.py": "from deployments import c\n",
        "deployments/c.py": "from deployments.a import thing\n",
        "deployments/d.py": "import deployments.a\n",
    })
    assert upward_imports(graph) == []
    assert import_cycles(graph) == [["deployments.a", "deployments.b", "deployments.c"]]


@pytest.mark.parametrize("module", ["elsewhere", "cluster.newcomer", "cluster.newcomer.part"])
def test_a_module_outside_every_layer_is_named(module):
    """`cluster` itself has a layer, but a module put straight into it (or a new sub-package) does not."""
    with pytest.raises(ValueError, match=f"{module} is in no layer"):
        layer_of(module, LAYERS)
    assert layer_of("cluster", LAYERS) == layer_of("cluster.config.model", LAYERS) == 1
