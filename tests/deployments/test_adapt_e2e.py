"""Adaptation rounds on the real cluster: a round runs as Ray work (its training retried by Ray when the
worker dies), real LoRA training of the SLM, held-out and regression replays through the gateway, promotion
only when the adapter wins, and rollback by command and automatically, all without a restart.

The recorded examples are written to the real store directly (the gateway's recording has its own test): a
convention the fallback followed and the base SLM does not know (greetings are in French), so whether the
adapter learned it is measurable on the held-out cases. The regression set (route `kept`) asks for JSON that
the schema allows only one way, so both models answer it right and the guard must let a good adapter through.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from auth_keys import ADMIN_HEADERS
from cluster_state import CLUSTER_CONFIG_NAME, cluster_state_dir
from polling import wait_for

pytestmark = pytest.mark.cluster

CASCADE = str(Path(sys.executable).with_name("cascade"))
ROUTE = "distilled"
GREET = {"type": "function", "function": {"name": "greet", "description": "Greet a person.", "parameters": {
    "type": "object", "properties": {"name": {"type": "string"}, "language": {"type": "string"}},
    "required": ["name", "language"], "additionalProperties": False}}}
NAMES = ["Alice", "Bruno", "Chloe", "Dmitri", "Emma", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kenji", "Lena",
         "Marco", "Nadia", "Omar", "Paula", "Quentin", "Rosa", "Sven", "Tara", "Ulrich", "Vera", "Wen", "Yusuf"]
ONLY_OK = {"type": "json_schema", "json_schema": {"name": "ack", "strict": True, "schema": {
    "type": "object", "properties": {"ok": {"const": True}}, "required": ["ok"], "additionalProperties": False}}}
SENT: dict[str | None, list[str]] = {}  # the ids of the route's answers, by the adapter that gave them


def greeting_example(name: str):
    """Fixed ids: the held-out split is a hash of the id, so every run trains and judges on the same names."""
    from cluster.store.recording import RecordedExample

    body = {"messages": [{"role": "user", "content": f"Greet {name}."}], "tools": [GREET], "tool_choice": "required"}
    answer = {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{name.lower()}",
              "type": "function", "function": {"name": "greet", "arguments": json.dumps(
                  {"name": name, "language": "fr"})}}]}
    return dataclasses.replace(RecordedExample.create(ROUTE, "fallback", body, answer), id=f"greet-{name.lower()}")


def acknowledgement_example(index: int):
    from cluster.store.recording import RecordedExample

    body = {"messages": [{"role": "user", "content": f"Acknowledge message {index}."}], "response_format": ONLY_OK}
    example = RecordedExample.create("kept", "fallback", body, {"role": "assistant", "content": '{"ok": true}'})
    return dataclasses.replace(example, id=f"acknowledge-{index}")


@pytest.fixture(scope="module")
def recorded(cluster: str) -> Path:
    from cluster.store.recording import RecordingStore

    config_path = cluster_state_dir() / CLUSTER_CONFIG_NAME
    store_path = Path(yaml.safe_load(config_path.read_text())["gateway"]["recording"]["path"])
    with RecordingStore(store_path) as store:
        if store.count(ROUTE) < len(NAMES):
            store.record(*(greeting_example(name) for name in NAMES))
        if store.count("kept") < 4:
            store.record(*(acknowledgement_example(index) for index in range(4)))
    return config_path


def cascade(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CASCADE, *args], capture_output=True, text=True, timeout=timeout, check=False)


def status(config_path: Path) -> dict[str, Any]:
    result = cascade("adapt", "status", "--config", str(config_path), "--route", ROUTE, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def running_replicas() -> set[tuple[str, str, int]]:
    """(deployment, replica id, process id) of every running replica, from `cascade status`."""
    result = cascade("status", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    return {(r["deployment"], r["replica_id"], r["pid"]) for r in json.loads(result.stdout)["replicas"]
            if r["state"] == "RUNNING"}


def greet(cluster: str, name: str = "Zoe") -> httpx.Response:
    reply = httpx.post(f"{cluster}/v1/chat/completions", headers={**ADMIN_HEADERS, "x-cascade-route": ROUTE},
                       json={"model": "cascade", "messages": [{"role": "user", "content": f"Greet {name}."}],
                             "tools": [GREET], "tool_choice": "required", "temperature": 0, "max_tokens": 60},
                       timeout=300)
    assert reply.status_code == 200, reply.text
    SENT.setdefault(reply.json()["cascade"]["adapter"], []).append(reply.json()["id"])
    return reply


def served_by(cluster: str, adapter: str | None, count: int = 4, max_requests: int = 16) -> list[httpx.Response]:
    """`count` consecutive answers of the route that report `adapter`: both gateway replicas read the ledger
    within about a second, so earlier answers may still come from the version before.

    Bounded by requests, not seconds: an answer takes from 2 s to tens of seconds on a loaded 2-core machine (an
    escalated one runs both tiers), while a replica that never switches, or flips back, fails at any speed."""
    answers: list[httpx.Response] = []
    for _ in range(max_requests):
        started = time.monotonic()
        reply = greet(cluster)
        report = reply.json()["cascade"]
        print(f"route {ROUTE}: adapter {report['adapter']}, final tier {report['final_tier']}, "
              f"{time.monotonic() - started:.1f} s")
        answers = [*answers, reply] if report["adapter"] == adapter else []
        if len(answers) >= count:
            return answers
    pytest.fail(f"not {count} consecutive answers of route {ROUTE} with adapter {adapter} in {max_requests}")


def arguments(reply: httpx.Response) -> dict[str, Any]:
    [call] = reply.json()["choices"][0]["message"]["tool_calls"]
    return json.loads(call["function"]["arguments"])


def feedback(cluster: str, request_id: str, success: bool) -> None:
    reply = httpx.post(f"{cluster}/v1/cascade/feedback/{request_id}", json={"success": success},
                       headers=ADMIN_HEADERS, timeout=30)
    assert reply.status_code == 200, reply.text


def test_a_round_whose_training_worker_dies_is_retried_and_a_loser_is_refused(recorded: Path) -> None:
    started = cascade("adapt", "run", "--config", str(recorded), "--route", ROUTE, "--epochs", "1",
                      "--learning-rate", "1e-9", "--detach")
    assert started.returncode == 0, started.stderr[-2000:]
    round_id = int(started.stdout.split()[1])

    def first_attempt() -> dict[str, Any] | None:
        round_ = status(recorded)["rounds"][0]
        return round_ if round_["facts"].get("train_attempts") == 1 else None

    round_ = wait_for(first_attempt, 300, "the training task's first attempt")
    assert round_["id"] == round_id and round_["trigger"] == "command"
    os.kill(round_["facts"]["train_pid"], signal.SIGKILL)  # the worker dies mid-training

    ended = wait_for(lambda: next((r for r in status(recorded)["rounds"] if r["id"] == round_id
                                   and r["state"] != "running"), None), 900, "the round's end", every_s=3)
    facts = ended["facts"]
    assert facts["train_attempts"] == 2, "Ray ran the training task again on a new worker"
    assert facts["train_pid"] != round_["facts"]["train_pid"]
    assert ended["state"] == "refused" and ended["reason"].startswith("success rate not higher"), ended
    assert facts["regression_cases"] == 4 and facts["held_out"] >= 4
    assert status(recorded)["routes"][ROUTE]["versions"] == [], "a refused candidate is never served"


def test_a_winning_round_is_promoted_and_served_without_a_restart(recorded: Path, cluster: str) -> None:
    served_by(cluster, None)
    replicas, config_text = running_replicas(), recorded.read_text()
    result = cascade("adapt", "run", "--config", str(recorded), "--route", ROUTE, "--epochs", "4",
                     "--learning-rate", "1e-3", timeout=1200)
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-3000:]
    round_ = status(recorded)["rounds"][0]
    facts = round_["facts"]
    assert round_["state"] == "promoted", round_
    assert facts["last_loss"] < facts["first_loss"]
    assert facts["adapted"]["successes"] > facts["base"]["successes"], "the adapter learned the fallback's convention"
    assert facts["regression_adapted"]["successes"] == facts["regression_base"]["successes"] == 4
    [version] = status(recorded)["routes"][ROUTE]["versions"]
    assert (version["adapter"], version["state"], version["version"]) == (round_["adapter"], "serving", 1)
    assert version["lineage"]["round"] == round_["id"] and version["lineage"]["parent"] is None
    assert version["lineage"]["base_model"] == "embedded:smollm2-135m-instruct"

    after = served_by(cluster, round_["adapter"])
    assert running_replicas() == replicas, "no replica of the gateway or of a tier was replaced"
    report = after[-1].json()["cascade"]
    assert report["final_tier"] == "slm", report
    direct = httpx.post(f"{cluster}/v1/chat/completions", headers=ADMIN_HEADERS, timeout=300, json={
        "model": f"slm:{round_['adapter']}", "messages": [{"role": "user", "content": "Greet Zoe."}],
        "tools": [GREET], "tool_choice": "required", "temperature": 0, "max_tokens": 60})
    assert direct.status_code == 200, direct.text
    assert arguments(after[-1]) == arguments(direct), "the route runs the adapter, as the tier addressed with it"
    assert recorded.read_text() == config_text, "the operator's config file is left alone"


def test_rollback_by_command_returns_the_route_to_its_config(recorded: Path, cluster: str) -> None:
    adapter = status(recorded)["routes"][ROUTE]["versions"][0]["adapter"]
    result = cascade("adapt", "rollback", "--config", str(recorded), "--route", ROUTE, "--reason", "test")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == (f"route {ROUTE}: {adapter} rolled back; now serving the config's adapter "
                                     "(or none)")
    served_by(cluster, None)
    [version] = status(recorded)["routes"][ROUTE]["versions"]
    assert (version["state"], version["reason"]) == ("rolled_back", "test")
    again = cascade("adapt", "rollback", "--config", str(recorded), "--route", ROUTE)
    assert again.returncode == 2 and "nothing to roll back" in again.stderr


def test_an_adapter_whose_live_success_drops_is_rolled_back_automatically(recorded: Path, cluster: str) -> None:
    adapter = status(recorded)["routes"][ROUTE]["versions"][0]["adapter"]
    served_by(cluster, None)
    for request_id in SENT[None]:  # the baseline: every answer the base gave, reported good
        feedback(cluster, request_id, True)
    SENT[adapter] = []  # what it answered while it served before is not what the watch judges now
    result = cascade("adapt", "promote", "--config", str(recorded), "--route", ROUTE, "--adapter", adapter)
    assert result.returncode == 0, result.stderr[-2000:]
    served_by(cluster, adapter)
    for request_id in SENT[adapter]:  # clients report every answer of the adapter failed
        feedback(cluster, request_id, False)

    def rolled_back() -> dict[str, Any] | None:
        newest = status(recorded)["routes"][ROUTE]["versions"][0]
        return newest if newest["state"] == "rolled_back" else None

    version = wait_for(rolled_back, 60, "the automatic rollback")
    assert version["version"] == 2 and version["adapter"] == adapter
    # The watch judges half a second after the first reports land, perhaps before the last: any count that is a
    # drop of more than 25% from the baseline's 100% (at least 4 requests on each side) is the right decision.
    judged = re.fullmatch(r"automatic: live success (\d+)/(\d+) \(\d+%\) since promotion vs (\d+)/\3 \(100%\) "
                          r"before: dropped more than 25%", version["reason"])
    assert judged, version["reason"]
    successes, requests, baseline = map(int, judged.groups())
    assert requests >= 4 and baseline >= 4 and successes / requests < 0.75, version["reason"]
    served_by(cluster, None)
