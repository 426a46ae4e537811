"""Prefix affinity: which requests share a key, how replicas are ranked for it, and when load overrides it."""

from __future__ import annotations

import pytest

from policies.prefix_affinity import affinity_ranks, prefix_key, rendezvous_order

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
REPLICAS = [f"replica-{index}" for index in range(4)]


def chat(question: str, system: str | None = "You are a travel agent.", tools: list | None = TOOLS) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return {"model": "slm", "messages": messages, **({"tools": tools} if tools else {})}


def test_requests_differing_after_the_prefix_share_a_key() -> None:
    assert prefix_key(chat("Weather in Oslo?")) == prefix_key(chat("Weather in Rome? In celsius."))


@pytest.mark.parametrize("other", [
    chat("Weather in Oslo?", system="You are a pilot."),
    chat("Weather in Oslo?", tools=[{"type": "function", "function": {"name": "book", "parameters": {}}}]),
    chat("Weather in Oslo?", tools=None),
])
def test_a_different_system_prompt_or_tool_list_is_another_key(other: dict) -> None:
    assert prefix_key(other) != prefix_key(chat("Weather in Oslo?"))


def test_only_leading_system_messages_belong_to_the_prefix() -> None:
    later_system = chat("Weather?")
    later_system["messages"].append({"role": "system", "content": "Be brief."})
    assert prefix_key(later_system) == prefix_key(chat("Weather?"))


@pytest.mark.parametrize("body", [chat("Hi", system=None, tools=None), "not a body", None, {"messages": "x"}])
def test_no_tools_and_no_system_prompt_means_no_key(body: object) -> None:
    assert prefix_key(body) is None


def test_every_router_ranks_alike_and_a_new_replica_takes_only_its_share() -> None:
    keys = [prefix_key(chat("q", system=f"agent {index}")) for index in range(200)]
    first = {key: rendezvous_order(key, REPLICAS)[0] for key in keys}
    assert first == {key: rendezvous_order(key, list(reversed(REPLICAS)))[0] for key in keys}  # order-free
    counts = {replica: list(first.values()).count(replica) for replica in REPLICAS}
    assert min(counts.values()) >= 30  # 200 keys over 4 replicas spread, none starved (exact: hashing is fixed)
    grown = {key: rendezvous_order(key, [*REPLICAS, "replica-new"])[0] for key in keys}
    moved = [key for key in keys if grown[key] != first[key]]
    assert all(grown[key] == "replica-new" for key in moved)  # keys move only to the newcomer
    assert 20 <= len(moved) <= 60  # about 1/5 of them


def test_a_replica_leaving_hands_on_only_its_own_keys() -> None:
    keys = [prefix_key(chat("q", system=f"agent {index}")) for index in range(100)]
    before = {key: rendezvous_order(key, REPLICAS)[0] for key in keys}
    after = {key: rendezvous_order(key, REPLICAS[1:])[0] for key in keys}
    assert all(after[key] == before[key] for key in keys if before[key] != REPLICAS[0])


def test_the_preferred_replica_first_then_all_the_others_together() -> None:
    key = prefix_key(chat("Weather?"))
    order = rendezvous_order(key, REPLICAS)
    assert affinity_ranks(key, REPLICAS, {}, max_queue_gap=4) == [order[:1], order[1:]]
    assert affinity_ranks(key, REPLICAS[:1], {}, max_queue_gap=4) == [REPLICAS[:1]]


def test_a_body_nested_past_pythons_limit_has_no_key() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert prefix_key(chat("Weather?", tools=deep)) is None


def test_load_overrides_affinity_at_the_gap() -> None:
    key = prefix_key(chat("Weather?"))
    preferred = rendezvous_order(key, REPLICAS)[0]
    assert affinity_ranks(key, REPLICAS, {preferred: 3}, max_queue_gap=4) is not None
    assert affinity_ranks(key, REPLICAS, {preferred: 4}, max_queue_gap=4) is None
    busy_everywhere = dict.fromkeys(REPLICAS, 4)
    assert affinity_ranks(key, REPLICAS, busy_everywhere, max_queue_gap=4) is not None  # no gap: keep affinity


def test_no_replicas_no_ranks() -> None:
    assert affinity_ranks("key", [], {}, max_queue_gap=4) is None
