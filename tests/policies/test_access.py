import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from policies.access import (
    AccessError,
    ApiKey,
    AuthenticationError,
    KeyRing,
    PermissionDeniedError,
    RateLimitedError,
    RateLimiter,
    TokenBuckets,
    TokenLeases,
    generate_api_key,
    hash_api_key,
)

ADMIN_TOKEN = generate_api_key()
AGENT_TOKEN = generate_api_key()


def make_key(name="agent", token=AGENT_TOKEN, routes=(), direct_tiers=False, rpm=None, burst=1, digest=None):
    return ApiKey(
        name=name,
        digest=digest or hash_api_key(token),
        routes=frozenset(routes),
        direct_tiers=direct_tiers,
        requests_per_minute=rpm,
        burst=burst,
    )


ADMIN = make_key("admin", ADMIN_TOKEN, direct_tiers=True)
AGENT = make_key("agent", AGENT_TOKEN, routes={"tools", "chat"})
RING = KeyRing([ADMIN, AGENT])


# Any str a header could decode to, lone surrogates included (hypothesis leaves them out by default).
ANY_TEXT = st.characters(exclude_categories=())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- tokens and digests ---------------------------------------------------------------------------


def test_generated_keys_are_prefixed_random_and_long():
    tokens = {generate_api_key() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert token.startswith("sk-cascade-")
        assert len(token) == len("sk-cascade-") + 43  # 32 bytes, unpadded base64url
        assert re.fullmatch(r"sk-cascade-[A-Za-z0-9_-]+", token)


def test_digest_format():
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", hash_api_key(ADMIN_TOKEN))
    # a known SHA-256 vector, so the scheme cannot drift silently
    assert hash_api_key("abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@given(st.lists(st.text(ANY_TEXT), min_size=2, max_size=20, unique=True))
def test_hash_is_deterministic_and_distinct(tokens):
    digests = [hash_api_key(t) for t in tokens]
    assert digests == [hash_api_key(t) for t in tokens]
    assert len(set(digests)) == len(tokens)


# --- ApiKey and KeyRing config --------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"burst": 0}, {"rpm": 0.0}, {"rpm": -1.0}, {"rpm": float("nan")}])
def test_api_key_rejects_bad_limits(kwargs):
    with pytest.raises(ValueError, match="agent"):
        make_key(**kwargs)


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="duplicate API key name 'agent'"):
        KeyRing([AGENT, make_key("agent", generate_api_key())])


def test_duplicate_digests_rejected():
    with pytest.raises(ValueError, match="'agent' and 'other' share a digest"):
        KeyRing([AGENT, make_key("other", AGENT_TOKEN)])


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "A" * 64,  # uppercase
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "a" * 64 + "\n",
        "a" * 64,  # no scheme
        "sha512:" + "a" * 64,
        "sk-cascade-plaintext-token",  # a token pasted where its digest belongs
    ],
)
def test_malformed_digest_rejected(digest):
    with pytest.raises(ValueError, match="digest must be"):
        KeyRing([make_key(digest=digest)])


def test_empty_ring_rejects_everything():
    with pytest.raises(AuthenticationError):
        KeyRing([]).authenticate(f"Bearer {AGENT_TOKEN}")


# --- authenticate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {AGENT_TOKEN}",
        f"bearer {AGENT_TOKEN}",
        f"BEARER {AGENT_TOKEN}",
        f"  Bearer   {AGENT_TOKEN}  ",
        f"\tBearer\t{AGENT_TOKEN}\r\n",
    ],
)
def test_valid_headers(header):
    assert RING.authenticate(header) is AGENT


@pytest.mark.parametrize("header", [None, "", "   ", "\t\r\n"])
def test_missing_key(header):
    with pytest.raises(AuthenticationError) as info:
        RING.authenticate(header)
    assert (info.value.status, info.value.code) == (401, "missing_api_key")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer    ",
        AGENT_TOKEN,  # no scheme
        f"Basic {AGENT_TOKEN}",
        f"Token {AGENT_TOKEN}",
        f"Bearer{AGENT_TOKEN}",  # no separator
        f"Bearer {AGENT_TOKEN} extra",
        f"Bearer {AGENT_TOKEN[:-1]}",
        f"Bearer {generate_api_key()}",
        f"Bearer {hash_api_key(AGENT_TOKEN)}",  # the digest is not a credential
        "Bearer \ud800\udfff",  # lone surrogates: no UnicodeEncodeError quoting the token
    ],
)
def test_invalid_key(header):
    with pytest.raises(AuthenticationError) as info:
        RING.authenticate(header)
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")
    assert info.value.__context__ is None


def _fixed_auth_messages() -> set[str]:
    messages = set()
    for header in (None, "Basic x", "Bearer x"):
        with pytest.raises(AuthenticationError) as info:
            RING.authenticate(header)
        messages.add(str(info.value))
    return messages


AUTH_MESSAGES = _fixed_auth_messages()


@given(st.text(ANY_TEXT, min_size=8))
def test_auth_errors_never_echo_the_token(token):
    # A fixed message trivially "contains" its own substrings; such tokens prove nothing.
    assume(not any(token in message for message in AUTH_MESSAGES) and token not in AuthenticationError.__name__)
    for header in (token, f"Bearer {token}", f"Basic {token}", f"bearer  {token}  "):
        with pytest.raises(AuthenticationError) as info:
            RING.authenticate(header)
        error = info.value
        assert str(error) in AUTH_MESSAGES  # the message does not depend on the token at all
        assert token not in str(error) and token not in repr(error)
        assert all(token not in str(arg) for arg in error.args)


# --- authorize ------------------------------------------------------------------------------------

OPEN = make_key("open", generate_api_key())  # no route list: every route, no direct tiers


@pytest.mark.parametrize(
    ("key", "route", "tier", "code"),
    [
        (ADMIN, "anything", None, None),
        (ADMIN, None, "fallback", None),
        (ADMIN, "tools", "slm", None),
        (OPEN, "anything", None, None),
        (OPEN, None, None, None),
        (OPEN, None, "slm", "tier_not_allowed"),
        (AGENT, "tools", None, None),
        (AGENT, "chat", None, None),
        (AGENT, "admin", None, "route_not_allowed"),
        (AGENT, None, None, None),
        (AGENT, None, "fallback", "tier_not_allowed"),
        (AGENT, "admin", "fallback", "tier_not_allowed"),  # the tier is checked first
    ],
)
def test_authorize_matrix(key, route, tier, code):
    if code is None:
        assert RING.authorize(key, route=route, tier=tier) is None
        return
    with pytest.raises(PermissionDeniedError) as info:
        RING.authorize(key, route=route, tier=tier)
    assert (info.value.status, info.value.code) == (403, code)
    assert repr(key.name) in str(info.value)
    assert repr(tier if code == "tier_not_allowed" else route) in str(info.value)


def test_permission_messages_hold_no_token_or_digest():
    with pytest.raises(PermissionDeniedError) as info:
        KeyRing.authorize(AGENT, route="admin", tier=None)
    assert AGENT_TOKEN not in str(info.value) and AGENT.digest not in str(info.value)


# --- rate limiter ---------------------------------------------------------------------------------


def test_unlimited_key_is_never_limited():
    limiter = RateLimiter(clock=FakeClock())
    for _ in range(10_000):
        limiter.acquire(AGENT)


def test_bucket_starts_full_then_refills():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    key = make_key(rpm=60.0, burst=3)  # one token per second
    for _ in range(3):
        limiter.acquire(key)
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire(key)
    assert (info.value.status, info.value.code, info.value.retry_after_s) == (429, "rate_limited", 1)
    assert isinstance(info.value, AccessError)
    clock.now += 1.0
    limiter.acquire(key)
    with pytest.raises(RateLimitedError):
        limiter.acquire(key)


def test_refill_is_capped_at_burst():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    key = make_key(rpm=60.0, burst=2)
    limiter.acquire(key)
    clock.now += 3600.0
    limiter.acquire(key)
    limiter.acquire(key)
    with pytest.raises(RateLimitedError):
        limiter.acquire(key)


def test_retry_after_is_the_ceiling_of_the_wait():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    key = make_key(rpm=7.5, burst=1)  # one token per 8 s (binary-exact, so no float noise in the ceiling)
    limiter.acquire(key)
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire(key)
    assert info.value.retry_after_s == 8
    clock.now += 5.5  # 2.5 s still to wait
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire(key)
    assert info.value.retry_after_s == 3
    clock.now += 2.5
    limiter.acquire(key)


def test_retry_after_is_at_least_one_second():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    key = make_key(rpm=600.0, burst=1)  # one token per 0.1 s
    limiter.acquire(key)
    clock.now += 0.05
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire(key)
    assert info.value.retry_after_s == 1


def test_rejected_requests_do_not_consume_tokens():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    key = make_key(rpm=60.0, burst=1)
    limiter.acquire(key)
    for _ in range(4):
        clock.now += 0.125
        with pytest.raises(RateLimitedError):
            limiter.acquire(key)
    clock.now += 0.5  # 1 s since the accepted request
    limiter.acquire(key)


def test_buckets_are_per_key():
    limiter = RateLimiter(clock=FakeClock())
    first, second = make_key("a", rpm=1.0, burst=1), make_key("b", rpm=1.0, burst=1)
    limiter.acquire(first)
    limiter.acquire(second)
    with pytest.raises(RateLimitedError, match="'a'"):
        limiter.acquire(first)


# --- cluster-wide buckets and replica leases ------------------------------------------------------


def test_buckets_grant_whole_tokens_up_to_what_they_hold():
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock)
    assert buckets.grant("a", 60.0, 5, 3) == (3, 0)
    assert buckets.grant("a", 60.0, 5, 3) == (2, 0)  # only two left
    assert buckets.grant("a", 60.0, 5, 3) == (0, 1)
    clock.now += 2.5
    assert buckets.grant("a", 60.0, 5, 3) == (2, 0)  # 2.5 tokens refilled: two whole ones


def test_leases_never_admit_more_than_the_buckets_grant_across_replicas():
    """Three replicas lease from one set of buckets as `BooksClient` does: a held token if there is one, else a
    lease; unused tokens given back when their lease is over. Over a simulated minute at 4x the key's rate,
    admissions stay within what a single bucket allows."""
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock)
    key = make_key(rpm=240.0, burst=4)  # 4 per second
    size = TokenLeases.lease_size(key)
    replicas = [TokenLeases(clock=clock) for _ in range(3)]

    def lease(leases: TokenLeases) -> None:
        leases.hold(key.name, buckets.grant(key.name, key.requests_per_minute, key.burst, size)[0])

    admitted = 0
    for step in range(60 * 16):  # 16 requests a second, spread round-robin over the replicas
        clock.now = step / 16
        for leases in replicas:
            for name, tokens in leases.expired().items():
                buckets.refund(name, key.requests_per_minute, key.burst, tokens)
        leases = replicas[step % 3]
        if not leases.take(key.name):
            lease(leases)
            if not leases.take(key.name):
                continue
        admitted += 1
    assert size == 2
    assert 4 + 60 * 4 - 3 * size <= admitted <= 4 + 60 * 4  # the limit, less at most the tokens left on leases


def test_a_low_rate_key_within_its_limit_is_admitted_on_every_replica():
    """Burst 2 at 6 a minute: one request on each of two replicas, both within the limit, both admitted (no
    token parked on the first replica), and the third refused."""
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock)
    key = make_key(rpm=6.0, burst=2)
    first, second = TokenLeases(clock=clock), TokenLeases(clock=clock)
    outcomes = []
    for leases in (first, second, first):
        granted, _ = buckets.grant(key.name, key.requests_per_minute, key.burst, TokenLeases.lease_size(key))
        leases.hold(key.name, granted)
        outcomes.append(leases.take(key.name))
    assert outcomes == [True, True, False]


def test_unused_tokens_go_back_when_the_lease_is_over():
    clock = FakeClock()
    buckets, leases = TokenBuckets(clock=clock), TokenLeases(clock=clock)
    leases.hold("a", buckets.grant("a", 60.0, 3, 3)[0])
    assert leases.take("a") and leases.expired() == {}
    clock.now += 0.5
    returned = leases.expired()
    assert returned == {"a": 2} and not leases.take("a")
    buckets.refund("a", 60.0, 3, returned["a"])
    assert buckets.grant("a", 60.0, 3, 5) == (2, 0)  # 2 given back + 0.5 s of refill: 2.5, so two whole ones
    buckets.refund("a", 60.0, 3, 10)
    assert buckets.grant("a", 60.0, 3, 10) == (3, 0)  # never above the burst


def test_lease_size_is_half_a_second_of_rate_within_one_and_the_burst():
    assert TokenLeases.lease_size(make_key(rpm=60.0, burst=10)) == 1
    assert TokenLeases.lease_size(make_key(rpm=6000.0, burst=10)) == 10
    assert TokenLeases.lease_size(make_key(rpm=6000.0, burst=100)) == 50
