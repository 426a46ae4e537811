"""One request, one trace across processes: gateway and model-server spans exported over real OTLP/HTTP."""

from __future__ import annotations

import secrets

import httpx
from auth_keys import ADMIN_HEADERS


def local_energy_source() -> str:
    """What the model servers on this machine can meter: NVML on a GPU, RAPL where readable, else the model."""
    from cluster.telemetry.energy import detect_energy_meter

    return str(detect_energy_meter(model_watts=1.0).source)


def test_request_spans_form_one_tree_across_deployments(cluster: str, otlp_receiver) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    response = httpx.post(
        f"{cluster}/v1/chat/completions",
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01", **ADMIN_HEADERS},
        json={"model": "cascade", "messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 4,
              "temperature": 0},
        timeout=120,
    )
    assert response.status_code == 200
    spans = otlp_receiver.wait_for(trace_id, {"cascade.request", "cascade.tier_attempt", "cascade.engine"})
    by_name = {span.name: span for span in spans}
    root, attempt, engine = by_name["cascade.request"], by_name["cascade.tier_attempt"], by_name["cascade.engine"]
    assert root.parent_span_id == caller_span, "the incoming traceparent is honoured"
    assert attempt.parent_span_id == root.span_id
    assert engine.parent_span_id == attempt.span_id, "context crosses the Ray handle call"
    assert root.service == "slm-cascade-gateway" and engine.service == "slm-cascade-tier-slm"
    assert root.attributes["cascade.request_id"] == response.json()["id"]
    assert root.attributes["cascade.route"] == "default" and root.attributes["cascade.outcome"] == "success"
    assert attempt.attributes["gen_ai.usage.output_tokens"] == response.json()["usage"]["completion_tokens"]
    assert attempt.attributes["cascade.tier"] == "slm"
    assert attempt.attributes["cascade.energy_source"] == local_energy_source()
    energy_j, engine_s = attempt.attributes["cascade.energy_j"], engine.attributes["cascade.engine_s"]
    if local_energy_source() == "model":  # 25 W (the tier's energy_model_watts) over its time on the replica
        latency_s = response.json()["cascade"]["attempts"][0]["latency_ms"] / 1000
        assert 25.0 * engine_s * 0.99 <= energy_j <= 25.0 * latency_s, (energy_j, engine_s, latency_s)
    else:
        assert energy_j > 0
    assert attempt.attributes["cascade.cost_usd"] == response.json()["cascade"]["cost_usd"]
