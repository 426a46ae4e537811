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
