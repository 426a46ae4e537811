"""Who may send what, how often, and for how long: API keys, their routes and tiers, rate limits, deadlines.

The decisions are `policies.access`'s; this module turns them into the gateway's OpenAI-style errors. The rate
limit is cluster-wide, so it is passed in (the books' `admit`) rather than kept here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cluster.config import DEFAULT_MODEL_ALIAS, AuthConfig, GatewayConfig
from deployments.gateway_http import DEADLINE_HEADER
from deployments.protocol import ChatRequest, GatewayError
from policies.access import AccessError, ApiKey, KeyRing

RateLimit = Callable[[ApiKey], Awaitable[None]]
"""Takes one request from the key's allowance, raising `policies.access.RateLimitedError` when it has none left."""


def keyring_from_config(auth: AuthConfig) -> KeyRing | None:
    """The configured keys; None when auth is off (then every HTTP caller is admitted)."""
    if not auth.required:
        return None
    return KeyRing(ApiKey(key.name, key.sha256, frozenset(key.routes), key.direct_tiers, key.requests_per_minute,
                          key.burst) for key in auth.keys)


def as_gateway_error(error: AccessError) -> GatewayError:
    """Access errors name the key's holder, never the token, so their message is safe to return."""
    return GatewayError(error.status, str(error), code=error.code, retry_after_s=getattr(error, "retry_after_s", None))


class Admission:
    """The HTTP API's door: a caller's key, then what that key may ask for. Handle callers are inside the
    cluster already and never pass through it."""

    def __init__(self, auth: AuthConfig, rate_limit: RateLimit) -> None:
        self.keyring = keyring_from_config(auth)
        self.rate_limit = rate_limit

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key an `Authorization` header value presents; None when auth is off."""
        if self.keyring is None:
            return None
        try:
            return self.keyring.authenticate(authorization)
        except AccessError as error:
            raise as_gateway_error(error) from None

    async def admit(self, key: ApiKey | None, request: ChatRequest, route_name: Callable[[], str]) -> None:
        """May this key send this request now: its routes, direct tier access and rate limit.

        `route_name` resolves the request's route (refusing an unknown one) and is called only when a key must be
        held to its routes; without auth, the route is resolved when the request runs.
        """
        if key is None:
            return
        direct = request.model != DEFAULT_MODEL_ALIAS
        try:
            KeyRing.authorize(key, route=None if direct else route_name(), tier=request.model if direct else None)
            await self.rate_limit(key)  # after the checks: a refused request uses none of the key's allowance
        except AccessError as error:
            raise as_gateway_error(error) from None


def request_deadline(request: ChatRequest, header: str | None, gateway: GatewayConfig) -> float:
    """Seconds the whole request may take: the client's (header wins over body) within the gateway's limit."""
    value: float | None = request.deadline_s
    if header is not None:
        try:
            value = float(header)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise GatewayError(400, f"header {DEADLINE_HEADER} must be a positive number of seconds",
                               param=DEADLINE_HEADER, code="invalid_value")
    if value is None:
        return gateway.default_deadline_s
    if value > gateway.max_deadline_s:
        raise GatewayError(400, f"deadline_s must be <= {gateway.max_deadline_s:g}, got {value:g}",
                           param="deadline_s", code="invalid_value")
    return value
