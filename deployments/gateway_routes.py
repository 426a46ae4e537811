"""Which cascade runs a request: a route's runner for model `cascade`, a one-tier runner for a tier addressed by
name (`<tier>:<adapter>` too), each route's first tier on the adapter the cluster's ledger serves for it.

Runners are plain objects over the tiers' clients, so the table is testable with stand-in tiers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

from opentelemetry import trace

from cluster.config import DEFAULT_MODEL_ALIAS, DEFAULT_ROUTE, CascadeConfig, RouteConfig
from deployments.cascade import CascadeRunner, ModelVerifier, Tier
from deployments.protocol import ChatRequest, GatewayError
from deployments.tier_client import AdapterBackend, AdapterClient

ServingAdapters = Callable[[], tuple[int, dict[str, str]]]
"""The ledger's serving adapters: a generation that changes with them, and the adapter per route that has one."""


class RouteTable:
    """One gateway replica's runners. Each route's runner is rebuilt when its serving adapter changes (a round
    promoted one, or a rollback returned to one), without a restart; until the ledger names one, a route runs the
    config's adapter."""

    def __init__(
        self,
        config: CascadeConfig,
        tiers: Mapping[str, Tier],
        judges: Mapping[str, ModelVerifier],
        tracer: trace.Tracer,
        serving_adapters: ServingAdapters,
    ) -> None:
        self.config = config
        self.tiers = tiers
        self.judges = judges
        self.tracer = tracer
        self.serving_adapters = serving_adapters
        self.routes: dict[str, CascadeRunner] = {}
        self._adapters: dict[str, str | None] = {}
        self._generation = -1
        self._sync_adapters()
        # A tier addressed by name is a one-tier route: verified and reported, never escalated, never repaired.
        self.single_tier = {name: CascadeRunner(self.one_tier_route(name), [tier], tracer=tracer)
                            for name, tier in tiers.items()}

    def runner(self, request: ChatRequest, route: str | None) -> CascadeRunner:
        """The runner for the request's model; for model `cascade`, for `route` (the header), else the request's
        own, else the default route."""
        if request.model != DEFAULT_MODEL_ALIAS:
            tier_name, _, adapter = request.model.partition(":")
            if adapter:  # built per request: adapter names are open-ended, the cost is a few small objects
                return CascadeRunner(self.one_tier_route(tier_name), [self._adapted(tier_name, adapter)],
                                     tracer=self.tracer)
            return self.single_tier[request.model]
        name = route or request.route or DEFAULT_ROUTE
        self._sync_adapters()
        if name not in self.routes:
            raise GatewayError(400, f"route {name!r} does not exist; known: {', '.join(self.routes)}", param="route",
                               code="route_not_found")
        return self.routes[name]

    def adapter(self, route: str) -> str | None:
        """The adapter the route's first tier runs now; None when it runs the base model."""
        return self._adapters[route]

    def one_tier_route(self, tier: str) -> RouteConfig:
        """A tier alone. Its answers are scored as the default route scores them when that route starts on it:
        the confidence a client (or `cascade bench`) sees for the tier is then the one the cascade would act on."""
        default = self.config.route(DEFAULT_ROUTE)  # the config requires it
        scoring: dict[str, Any] = {}
        if self.config.route_tiers(default)[:1] == [tier]:
            scoring = {"confidence_policy": default.confidence_policy, "confidence_model": default.confidence_model}
        return RouteConfig(name=tier, tiers=[tier], max_repairs=0, **scoring)

    def _sync_adapters(self) -> None:
        """Rebuild the runner of each route whose serving adapter changed since the last request (a few small
        objects; the tiers' clients, breakers and handles are shared)."""
        generation, serving = self.serving_adapters()
        if generation == self._generation:
            return
        self._generation = generation
        for route in self.config.routes:
            adapter = serving.get(route.name, route.adapter)
            if route.name in self.routes and self._adapters[route.name] == adapter:
                continue
            self._adapters[route.name] = adapter
            self.routes[route.name] = CascadeRunner(route, self._route_tiers(route, adapter),
                                                    self.judges.get(route.name), self.tracer)

    def _route_tiers(self, route: RouteConfig, adapter: str | None) -> list[Tier]:
        """The route's tiers; with an adapter, its first tier runs it (same breaker: it is the same replicas)."""
        tiers = [self.tiers[name] for name in self.config.route_tiers(route)]
        if adapter is not None:
            tiers[0] = self._adapted(tiers[0].name, adapter)
        return tiers

    def _adapted(self, tier_name: str, adapter: str) -> Tier:
        tier = self.tiers[tier_name]
        # Only a tier with LoRA gets an adapter (the request validator and the config see to it), and such a tier
        # is a vLLM one, whose backend is a `TierClient`: its calls can name the adapter.
        return dataclasses.replace(tier, backend=AdapterClient(cast(AdapterBackend, tier.backend), adapter))
