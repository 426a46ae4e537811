"""Adaptation rounds: LoRA training of a route's SLM on the verified answers its fallback tiers gave, judged on
held-out replays. The cluster's books (`deployments.books`) run a round as Ray work; `ledger` keeps every
round and adapter version."""
