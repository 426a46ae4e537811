"""The report from synthetic records: every key per policy, CPS arithmetic, partial files, the sweep."""

import json

from bench.report import REPORT_KEYS, load_records, save_gateway_figures, write_report


def record(policy, case_id, success, cost, confidence=0.5, **extra):
    return {"policy": policy, "guided": True, "model": "m", "route": None, "case_id": case_id,
            "category": "simple_python", "success": success, "schema_valid": True, "executable": success,
            "status": 200, "latency_ms": 100.0 + len(case_id), "verified": success, "tiers_tried": ["slm"],
            "escalated": False, "confidence": confidence, "cost_usd": cost, "tokens_in": 10, "tokens_out": 5,
            "error": None, "simulated": False, **extra}


RECORDS = [
    record("slm-only", "a", True, 1.0, 0.9), record("slm-only", "b", False, 1.0, 0.2),
    record("slm-only", "c", True, 1.0, 0.6), record("slm-only", "d", False, 1.0, 0.1),
    record("llm-only", "a", True, 10.0), record("llm-only", "b", True, 10.0),
    record("llm-only", "c", True, 10.0), record("llm-only", "d", False, 10.0, simulated=True),
    record("cascade", "a", False, 0.0, status=503, error="tier down", executable=None, schema_valid=False),
]


def write(tmp_path, records, tail=""):
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_every_key_for_every_policy(tmp_path):
    write(tmp_path, RECORDS)
    save_gateway_figures(tmp_path, "slm-only", "slm", {"energy_per_request_j": 2.5, "energy_source": "model"})
    report = write_report(tmp_path, sweep_min_success_rate=0.5)
    assert set(report["policies"]) == {"slm-only", "llm-only", "cascade"}
    for figures in report["policies"].values():
        assert set(REPORT_KEYS) <= set(figures)
    slm, llm, cascade = (report["policies"][p] for p in ("slm-only", "llm-only", "cascade"))
    assert slm["n"] == 4 and slm["success_rate"] == 0.5 and slm["cps"] == 2.0 and slm["cost_total"] == 4.0
    assert slm["energy_per_request_j"] == 2.5 and slm["energy_source"] == "model"
    assert "gateway report" in slm["energy_origin"]
    assert llm["energy_per_request_j"] is None and llm["energy_source"] is None  # never invented
    assert llm["simulated"] and not slm["simulated"]
    assert cascade["cps"] is None and cascade["errors"] == {"503": 1} and cascade["executable_call_rate"] is None
    assert slm["tokens_in"] == 40 and slm["latency_p50_ms"] == 101.0
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["policies"].keys() == report["policies"].keys()
    markdown = (tmp_path / "report.md").read_text()
    assert "llm-only (simulated)" in markdown and "calibrated threshold" in markdown
    for plot in ("success_vs_cost.png", "latency.png", "cps_vs_threshold.png"):
        assert (tmp_path / plot).stat().st_size > 1000 and plot in report["plots"]


def test_sweep_matches_calibration(tmp_path):
    write(tmp_path, RECORDS)
    sweep = write_report(tmp_path, sweep_min_success_rate=0.75)["threshold_sweep"]
    # confidences .9 .6 .2 .1; threshold .6 escalates b and d: successes a, c (slm) + b (llm) = 3 of 4
    assert sweep["best"]["threshold"] == 0.6 and sweep["best"]["success_rate"] == 0.75
    assert sweep["best"]["total_cost_usd"] == 24.0
    assert len((tmp_path / "outcomes.jsonl").read_text().splitlines()) == 4


def test_sweep_without_both_tiers_says_so(tmp_path):
    write(tmp_path, RECORDS[:4])
    report = write_report(tmp_path, sweep_min_success_rate=0.5)
    assert "needs an slm-only and an llm-only run" in report["threshold_sweep"]["error"]
    assert "cps_vs_threshold.png" not in report["plots"]


def test_interrupted_file_and_reruns(tmp_path):
    again = record("slm-only", "b", True, 1.0)
    write(tmp_path, [*RECORDS[:4], again], tail='{"policy": "slm-only", "case_')  # cut short by Ctrl-C
    records = load_records(tmp_path)
    assert len(records) == 4 and again in records  # the latest record of a case counts, once
    assert write_report(tmp_path)["policies"]["slm-only"]["success_rate"] == 0.75
