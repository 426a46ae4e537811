"""Which replica a request should prefer, so that requests sharing a prompt prefix meet the KV blocks vLLM's prefix
cache already holds for it.

Agentic requests repeat a long prefix: the same system prompt and the same tool list, which chat templates render
first. A request's prefix key is that part of its body. Replicas are ranked for a key by rendezvous hashing
(highest random weight): every router (one per gateway replica) ranks alike without sharing any state, a new
replica takes over only about 1/n of the keys, and a replica that leaves hands on only its own. Load still
wins over affinity: when the preferred replica has `max_queue_gap` more requests in flight than the least
loaded one, the request goes by load alone.

Pure logic: no Ray, no engine, no I/O (`deployments.prefix_router` puts it behind Ray Serve's router API).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any


def prefix_key(body: Any) -> str | None:
    """The part of a chat body that the chat template renders first and that requests repeat: the tool list and
    the leading system messages. None when there is neither (nothing worth keeping a replica for)."""
    if not isinstance(body, Mapping):
        return None
    messages = body.get("messages")
    leading: list[Any] = []
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, Mapping) or message.get("role") not in ("system", "developer"):
                break
            leading.append(message.get("content"))
    tools = body.get("tools")
    if not leading and not tools:
        return None
    try:
        return json.dumps([tools, leading], sort_keys=True)
    except (TypeError, ValueError, RecursionError):  # not JSON, or nested past Python's limit: no key
        return None


def _weight(key: str, replica: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{replica}\n{key}".encode(), digest_size=8).digest(), "big")


def rendezvous_order(key: str, replicas: Sequence[str]) -> list[str]:
    """The replicas from most to least preferred for `key`; the same order wherever it is computed."""
    return sorted(replicas, key=lambda replica: _weight(key, replica), reverse=True)


def affinity_ranks(key: str, replicas: Sequence[str], in_flight: Mapping[str, int],
                   max_queue_gap: int) -> list[list[str]] | None:
    """Two ranks: the preferred replica, then all the others (the least loaded of them takes the request when the
    preferred one is full); or None to route by load alone because the preferred replica is `max_queue_gap` or
    more requests busier than the least loaded one. `in_flight` holds the known requests in flight per replica;
    an unknown replica counts as idle."""
    if not replicas:
        return None
    order = rendezvous_order(key, replicas)
    loads = [in_flight.get(replica, 0) for replica in order]
    if loads[0] - min(loads) >= max_queue_gap:
        return None
    return [order[:1], order[1:]] if len(order) > 1 else [order]
