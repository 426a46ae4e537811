"""A Ray Serve request router that sends requests sharing a prompt prefix to the same model-server replica.

Serve's router API (`ray.serve.request_router`): `choose_replicas` returns ranks of replicas; Serve tries each
rank in turn, takes the least loaded replica of a rank that has room (under `max_ongoing_requests`) and backs
off when none has. The ranking is `policies.prefix_affinity`'s: rendezvous hashing of the request's tools and
system prompt, so every gateway replica's router agrees without a shared actor. That is why this is not Ray
Serve LLM's `PrefixCacheAffinityRouter`: that one keeps a prefix tree in a detached actor that it calls with a
blocking `ray.get` on every routing decision, and reads message contents only, never the tool list that makes
most of an agent's prefix. Requests with no such prefix, and those the ranking gives up on for load, go to the
less loaded of two random replicas (Serve's default). Adapter requests pick among replicas holding the adapter.
Not `FIFOMixin`: it hands a replica chosen for one request to the oldest request waiting, which would give one
agent's replica to another's request exactly under load; without it Serve matches each choice to its request.
"""

from __future__ import annotations

import random
from typing import Any

from ray.serve.request_router import MultiplexMixin, PendingRequest, RequestRouter, RunningReplica

from policies.prefix_affinity import affinity_ranks, prefix_key


class PrefixAffinityRouter(MultiplexMixin, RequestRouter):
    """`request_router_kwargs`: `max_queue_gap`, how many more requests in flight the preferred replica may have
    than the least loaded one before load decides alone."""

    def initialize_state(self, *, max_queue_gap: int = 4, **unknown: Any) -> None:
        if unknown:  # the supertype takes any keyword: a misspelt one is still an error
            raise TypeError(f"PrefixAffinityRouter: unknown request_router_kwargs: {', '.join(sorted(unknown))}")
        self.max_queue_gap = max_queue_gap

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        pool = candidate_replicas
        if pending_request is not None:
            # Every rank below covers all the candidates: when none has room, Serve should back off, not re-ask.
            pending_request.routing_context.should_backoff = True
        if pending_request is not None and pending_request.metadata.multiplexed_model_id:
            holding = self.apply_multiplex_routing(pending_request=pending_request)
            pool = [replica for replica in candidate_replicas if replica.replica_id in holding] or pool
        if not pool:
            return []
        key = prefix_key(pending_request.args[0]) if pending_request is not None and pending_request.args else None
        if key is not None:
            by_id = {replica.replica_id.unique_id: replica for replica in pool}
            cache = self.replica_queue_len_cache
            in_flight = {rid: cache.get(replica.replica_id) or 0 for rid, replica in by_id.items()}
            ranks = affinity_ranks(key, list(by_id), in_flight, self.max_queue_gap)
            if ranks is not None:
                return [[by_id[rid] for rid in rank] for rank in ranks]
        return [random.sample(pool, min(2, len(pool)))]
