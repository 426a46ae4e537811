"""`cascade adapt` on the real cluster: real LoRA training of the SLM, held-out replay through the gateway,
promotion only when the adapter wins, and the promoted adapter served for the route.

The recorded examples are written to the real store directly (the gateway's recording has its own test): a
convention the fallback followed and the base SLM does not know (greetings are in French), so whether the
adapter learned it is measurable on the held-out cases.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from auth_keys import ADMIN_HEADERS
from cluster_state import CLUSTER_CONFIG_NAME, cluster_state_dir

pytestmark = pytest.mark.cluster

CASCADE = str(Path(sys.executable).with_name("cascade"))
ROUTE = "distilled"
GREET = {"type": "function", "function": {"name": "greet", "description": "Greet a person.", "parameters": {
    "type": "object", "properties": {"name": {"type": "string"}, "language": {"type": "string"}},
    "required": ["name", "language"], "additionalProperties": False}}}
NAMES = ["Alice", "Bruno", "Chloe", "Dmitri", "Emma", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kenji", "Lena",
         "Marco", "Nadia", "Omar", "Paula", "Quentin", "Rosa", "Sven", "Tara", "Ulrich", "Vera", "Wen", "Yusuf"]


def greeting_example(name: str):
    from cluster.recording import RecordedExample

    body = {"messages": [{"role": "user", "content": f"Greet {name}."}], "tools": [GREET], "tool_choice": "required"}
    answer = {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{uuid.uuid4().hex[:8]}",
              "type": "function", "function": {"name": "greet", "arguments": json.dumps(
                  {"name": name, "language": "fr"})}}]}
    return RecordedExample.create(ROUTE, "fallback", body, answer)


@pytest.fixture(scope="module")
def recorded(cluster: str) -> Path:
    from cluster.recording import RecordingStore

    config_path = cluster_state_dir() / CLUSTER_CONFIG_NAME
    store_path = Path(yaml.safe_load(config_path.read_text())["gateway"]["recording"]["path"])
    with RecordingStore(store_path) as store:
        if store.count(ROUTE) < len(NAMES):
            for name in NAMES:
                store.record(greeting_example(name))
    return config_path


def test_an_adapter_that_is_not_better_is_refused_and_the_route_is_unchanged(recorded: Path) -> None:
    before = recorded.read_text()
    result = subprocess.run([CASCADE, "adapt", "--config", str(recorded), "--route", ROUTE, "--epochs", "1",
                             "--learning-rate", "1e-9"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "not promoted" in result.stdout, result.stdout
    assert recorded.read_text() == before, "a refused adapter leaves the config as it was"


def test_recorded_answers_train_an_adapter_that_is_promoted_and_served(recorded: Path, cluster: str) -> None:
    from cluster.adapt import format_adapt_result, run_adapt
    from cluster.adaptation.train import TrainSettings

    result = run_adapt(recorded, ROUTE, base_url=cluster, settings=TrainSettings(epochs=4,
                       learning_rate=1e-3), progress=print)
    print(format_adapt_result(result))
    assert result.training.last_loss < result.training.first_loss
    assert result.adapted.success_rate > result.base.success_rate, "the adapter learned the fallback's convention"
    assert result.decision.promote and result.config_written
    assert yaml.safe_load(recorded.read_text())["routes"][_route_index(recorded)]["adapter"] \
        == result.adapter
    models = {m["id"] for m in httpx.get(f"{cluster}/v1/models", headers=ADMIN_HEADERS, timeout=30).json()["data"]}
    assert f"slm:{result.adapter}" in models
    reply = httpx.post(f"{cluster}/v1/chat/completions", headers={**ADMIN_HEADERS, "x-cascade-route": ROUTE},
                       json={"model": "cascade", "messages": [{"role": "user", "content": "Greet Zoe."}],
                             "tools": [GREET], "tool_choice": "required", "temperature": 0, "max_tokens": 60},
                       timeout=300)
    assert reply.status_code == 200 and reply.json()["cascade"]["final_tier"] == "slm"
    [call] = reply.json()["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"])["language"] == "fr", "the route now answers with the adapter"


def _route_index(config_path: Path) -> int:
    routes = yaml.safe_load(config_path.read_text())["routes"]
    return next(i for i, route in enumerate(routes) if route["name"] == ROUTE)
