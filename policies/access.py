"""Gateway API keys: who is calling, what they may address, and how often.

Pure logic: the gateway passes in the ``Authorization`` header value and the request's route or tier,
and maps an ``AccessError`` to its HTTP status and code. No error message ever carries the presented
token, because messages end up in response bodies and logs.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "AccessError",
    "ApiKey",
    "AuthenticationError",
    "KeyRing",
    "PermissionDeniedError",
    "RateLimitedError",
    "RateLimiter",
    "TokenBuckets",
    "TokenLeases",
    "generate_api_key",
    "hash_api_key",
]

_TOKEN_PREFIX = "sk-cascade-"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def generate_api_key() -> str:
    """A new bearer token: 256 random bits, URL-safe, with a prefix that secret scanners can match."""
    return _TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(token: str) -> str:
    """The digest that config stores in place of ``token`` (config never holds tokens).

    Keys are 256-bit random tokens, so a fast unsalted SHA-256 is enough: no dictionary attack is
    possible against them, and an unsalted digest lets a request's key be looked up in O(1).
    ``surrogatepass``: a header can carry any ``str``, and hashing must never raise an error that
    quotes part of the token.
    """
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One configured key. No defaults here: the config model owns them.

    ``routes`` empty means every route. ``direct_tiers`` lets the key name a tier and bypass the
    cascade. ``requests_per_minute`` None means unlimited; ``burst`` is the bucket size.
    """

    name: str
    digest: str
    routes: frozenset[str]
    direct_tiers: bool
    requests_per_minute: float | None
    burst: int

    def __post_init__(self) -> None:
        if self.burst < 1:
            raise ValueError(f"key {self.name!r}: burst must be >= 1, got {self.burst}")
        rpm = self.requests_per_minute
        if rpm is not None and not (math.isfinite(rpm) and rpm > 0):
            raise ValueError(f"key {self.name!r}: requests_per_minute must be finite and > 0, got {rpm}")


class AccessError(Exception):
    """Base of the gateway's access errors: ``status`` is the HTTP status, ``code`` the error code."""

    status: ClassVar[int]

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AuthenticationError(AccessError):
    """No key, or not a key we know (codes ``missing_api_key``, ``invalid_api_key``)."""

    status = 401


class PermissionDeniedError(AccessError):
    """A known key asking for what it may not (codes ``route_not_allowed``, ``tier_not_allowed``)."""

    status = 403


class RateLimitedError(AccessError):
    """The key's bucket is empty; ``retry_after_s`` (>= 1, rounded up) feeds the Retry-After header."""

    status = 429

    def __init__(self, key_name: str, retry_after_s: int) -> None:
        super().__init__("rate_limited", f"API key {key_name!r} is over its rate limit; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class KeyRing:
    """The configured keys, indexed by digest."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_digest: dict[str, ApiKey] = {}
        names: set[str] = set()
        for key in keys:
            if not _DIGEST.fullmatch(key.digest):
                raise ValueError(f"key {key.name!r}: digest must be 'sha256:' and 64 lowercase hex digits")
            if key.name in names:
                raise ValueError(f"duplicate API key name {key.name!r}")
            if key.digest in self._by_digest:
                raise ValueError(f"keys {self._by_digest[key.digest].name!r} and {key.name!r} share a digest")
            names.add(key.name)
            self._by_digest[key.digest] = key

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key presented in an ``Authorization: Bearer <token>`` header value.

        The dict lookup compares digests, not tokens, so its timing tells an attacker nothing they
        can steer; ``hmac.compare_digest`` confirms the match in constant time all the same.
        """
        if authorization is None or not authorization.strip():
            raise AuthenticationError("missing_api_key", "missing API key: send 'Authorization: Bearer <key>'")
        parts = authorization.strip().split(maxsplit=1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise AuthenticationError("invalid_api_key", "invalid API key: the header must be 'Bearer <key>'")
        digest = hash_api_key(parts[1])
        key = self._by_digest.get(digest)
        if key is None or not hmac.compare_digest(digest, key.digest):
            raise AuthenticationError("invalid_api_key", "invalid API key")
        return key

    @staticmethod
    def authorize(key: ApiKey, *, route: str | None, tier: str | None) -> None:
        """Raise unless ``key`` may use ``route`` and, when the client named one, address ``tier`` directly."""
        if tier is not None and not key.direct_tiers:
            raise PermissionDeniedError(
                "tier_not_allowed", f"API key {key.name!r} may not address tier {tier!r} directly"
            )
        if route is not None and key.routes and route not in key.routes:
            raise PermissionDeniedError("route_not_allowed", f"API key {key.name!r} may not use route {route!r}")


class TokenBuckets:
    """Per-key token buckets: ``burst`` requests at once, refilled at ``requests_per_minute / 60`` per second.

    ``grant`` hands out up to ``wanted`` whole tokens, never more than the bucket holds, so whoever admits
    requests only with granted tokens never exceeds the key's rate. The cluster keeps one instance and leases
    tokens to gateway replicas (``TokenLeases``); a replica cut off from it keeps its own (``RateLimiter``).
    State is one bucket per key name, and names come from config, so memory is bounded. Not thread-safe.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key name -> (tokens, time of last update)

    def grant(self, key_name: str, requests_per_minute: float, burst: int, wanted: int) -> tuple[int, int]:
        """``(granted, retry_after_s)``: whole tokens taken (buckets start full, at most ``wanted``), and when
        none could be, the whole seconds until the next one refills (0 when some were granted)."""
        rate = requests_per_minute / 60.0
        tokens = self._refilled(key_name, rate, burst)
        granted = min(wanted, math.floor(tokens))
        self._buckets[key_name] = (tokens - granted, self._clock())
        return granted, 0 if granted else max(1, math.ceil((1.0 - tokens) / rate))

    def refund(self, key_name: str, requests_per_minute: float, burst: int, tokens: int) -> None:
        """Put back granted tokens that were never used (never above ``burst``): they were not spent."""
        held = self._refilled(key_name, requests_per_minute / 60.0, burst)
        self._buckets[key_name] = (min(float(burst), held + tokens), self._clock())

    def _refilled(self, key_name: str, rate: float, burst: int) -> float:
        now = self._clock()
        tokens, last = self._buckets.get(key_name, (float(burst), now))
        return min(float(burst), tokens + (now - last) * rate)


class RateLimiter:
    """One replica's own buckets: admits a request with a token taken from ``TokenBuckets`` on the spot.

    What a gateway replica falls back to when the cluster's buckets cannot be reached: the limit then holds
    per replica, so cluster-wide it is about replicas x the configured rate until they are back.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets = TokenBuckets(clock)

    def acquire(self, key: ApiKey) -> None:
        """Take one token from ``key``'s bucket (buckets start full), or raise ``RateLimitedError``."""
        if key.requests_per_minute is None:
            return
        granted, retry_after_s = self._buckets.grant(key.name, key.requests_per_minute, key.burst, 1)
        if not granted:
            raise RateLimitedError(key.name, retry_after_s)


LEASE_S = 0.5
"""How long a replica may hold tokens the cluster granted it before it gives the unused ones back."""


class TokenLeases:
    """Tokens one gateway replica holds per key, granted by the cluster's ``TokenBuckets``.

    A request takes a held token when there is one (no round trip), else the replica leases ``lease_size``
    tokens for it and keeps the rest. The cluster never grants more than its buckets hold and unused tokens go
    back to them (``expired``), so the key's rate holds cluster-wide exactly. The tolerance is on the low side:
    tokens one replica holds, fewer than ``lease_size`` per key, are out of the others' reach for up to
    ``LEASE_S``; a key below 4 requests a second leases one token at a time, so none is ever held. Leases are
    not asked for ahead of need: a token parked on one replica would refuse a request on another that is
    within the key's limit. Not thread-safe.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, tuple[int, float]] = {}  # key name -> (tokens, expiry)

    @staticmethod
    def lease_size(key: ApiKey) -> int:
        """About half a second of the key's rate, at least one token and never more than its burst."""
        assert key.requests_per_minute is not None
        return max(1, min(key.burst, math.floor(key.requests_per_minute / 60.0 * LEASE_S)))

    def take(self, key_name: str) -> bool:
        """Use one held token of the key, if one is held (an expired lease's tokens still count until
        ``expired`` hands them back: they were granted, so using them keeps within the limit)."""
        tokens, expiry = self._held.get(key_name, (0, 0.0))
        if tokens <= 0:
            return False
        self._held[key_name] = (tokens - 1, expiry)
        return True

    def hold(self, key_name: str, tokens: int) -> None:
        """Add a fresh lease's tokens; what is held is given back ``LEASE_S`` from now unless used."""
        if tokens > 0:
            self._held[key_name] = (self._held.get(key_name, (0, 0.0))[0] + tokens, self._clock() + LEASE_S)

    def expired(self, *, all_held: bool = False) -> dict[str, int]:
        """Remove and return the unused tokens of leases past their time (or of all, for a replica that stops),
        to give back to the cluster."""
        now = self._clock()
        due = {name: tokens for name, (tokens, expiry) in self._held.items() if all_held or now >= expiry}
        for name in due:
            del self._held[name]
        return {name: tokens for name, tokens in due.items() if tokens > 0}
