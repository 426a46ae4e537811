"""Two gateway replicas, one set of books: the report equals an independent count of the responses, feedback
works on ids either replica answered, a key's rate limit holds across both, and both replicas' recordings are in
the one store. The test cluster runs the gateway at two replicas; only these tests use route `shared`.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from auth_keys import ADMIN_HEADERS, POOLED_KEY
from cluster_state import cluster_state_dir

ROUTE = "shared"
REPLICA_HEADER = "x-cascade-gateway-replica"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
BODY = {"model": "cascade", "messages": [{"role": "user", "content": "A city in France, as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}},
        "max_tokens": 40, "temperature": 0}
BOOKS_SETTLE_S = 10.0  # a replica sends its records every 0.2 s; generous on a loaded 2-core machine


def send(cluster: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{cluster}/v1/chat/completions", json=BODY, timeout=300,
                      headers={**headers, "x-cascade-route": ROUTE})


def route_figures(cluster: str) -> dict:
    report = httpx.get(f"{cluster}/v1/cascade/report", headers=ADMIN_HEADERS, timeout=60)
    assert report.status_code == 200, report.text
    return report.json()["routes"].get(ROUTE, {"requests": 0, "successes": 0})


def settled(cluster: str, expected: dict[str, int]) -> dict:
    """The route's figures once they show `expected` (the books are eventually consistent within a flush), then
    checked again a moment later: nothing counted twice arrives after."""
    deadline = time.monotonic() + BOOKS_SETTLE_S
    figures = route_figures(cluster)
    while {key: figures[key] for key in expected} != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        figures = route_figures(cluster)
    time.sleep(1.0)
    return route_figures(cluster)


def test_two_gateway_replicas_keep_one_set_of_books(cluster: str) -> None:
    from cluster.store.recording import RecordingStore

    before = route_figures(cluster)
    with RecordingStore(cluster_state_dir() / "recordings.sqlite") as store:
        recorded_before = store.count(ROUTE)
    answered: list[httpx.Response] = []
    with ThreadPoolExecutor(4) as pool:  # until both replicas have answered some (Serve picks replicas)
        while len(answered) < 40 and (len(answered) < 8 or len({r.headers[REPLICA_HEADER] for r in answered}) < 2):
            answered += pool.map(lambda _: send(cluster, ADMIN_HEADERS), range(4))
    assert all(response.status_code == 200 for response in answered), [r.text for r in answered]
    by_replica = {r.headers[REPLICA_HEADER] for r in answered}
    assert len(by_replica) == 2, "both gateway replicas answered"
    bodies = [response.json() for response in answered]
    verified = sum(body["cascade"]["verified"] for body in bodies)

    expected = {"requests": before["requests"] + len(bodies), "successes": before["successes"] + verified}
    figures = settled(cluster, expected)
    assert {key: figures[key] for key in expected} == expected, figures

    # Feedback on every id, whichever replica answered it and whichever receives the feedback. Serve picks the
    # replica: until both have taken some, the same feedback is sent again (it changes nothing the second time).
    def report_failed(body: dict) -> httpx.Response:
        return httpx.post(f"{cluster}/v1/cascade/feedback/{body['id']}", json={"success": False},
                          headers=ADMIN_HEADERS, timeout=60)

    feedback = [report_failed(body) for body in bodies]
    for body in itertools.islice(itertools.cycle(bodies), 40):
        if {r.headers[REPLICA_HEADER] for r in feedback} == by_replica:
            break
        feedback.append(report_failed(body))
    assert [response.status_code for response in feedback] == [200] * len(feedback), [r.text for r in feedback]
    assert {r.headers[REPLICA_HEADER] for r in feedback} == by_replica, "feedback reached both replicas"
    assert settled(cluster, {"successes": before["successes"]})["successes"] == before["successes"]

    # Every verified escalation is in the one store, whichever replica answered it.
    with RecordingStore(cluster_state_dir() / "recordings.sqlite") as store:
        assert store.count(ROUTE) == recorded_before + verified
    assert verified > 0


def test_a_keys_rate_limit_holds_across_both_replicas(cluster: str) -> None:
    """6 a minute with a burst of 3: two replicas on buckets of their own would admit 3 each at once."""
    pooled = {"authorization": f"Bearer {POOLED_KEY}"}
    started = time.monotonic()
    responses: list[httpx.Response] = []
    with ThreadPoolExecutor(8) as pool:  # until both replicas have taken some of the key's requests
        while len(responses) < 48 and (len(responses) < 8 or len({r.headers[REPLICA_HEADER] for r in responses}) < 2):
            responses += pool.map(lambda _: send(cluster, pooled), range(8))
    elapsed_s = time.monotonic() - started
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 429}, [r.text for r in responses if r.status_code not in (200, 429)]
    assert len({r.headers[REPLICA_HEADER] for r in responses}) == 2, "both gateway replicas took the key's requests"
    allowed = 3 + int(elapsed_s * 6 / 60)  # the burst, plus what refilled while the test ran
    assert statuses.count(200) <= allowed, (statuses, elapsed_s)
