"""A small real bench run against the session's cluster (real engines): 3 simple_python cases."""

import json

import pytest

from bench.report import REPORT_KEYS
from bench.runner import run_bench


@pytest.mark.cluster
def test_small_real_bench_against_cluster(cluster, tmp_path):
    report = run_bench(f"{cluster}/v1", "simple_python", 3, ["slm-only", "cascade"], 1, tmp_path, guided=True)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert set(on_disk["policies"]) == {"slm-only", "cascade"} == set(report["policies"])
    for figures in on_disk["policies"].values():
        assert set(REPORT_KEYS) <= set(figures)
        assert figures["n"] == 3 and figures["errors"] == {}
        assert 0.0 <= figures["schema_validity_rate"] <= 1.0 and 0.0 <= figures["success_rate"] <= 1.0
        assert figures["cost_total"] > 0 and not figures["simulated"]
    assert (tmp_path / "report.md").exists() and (tmp_path / "success_vs_cost.png").exists()
