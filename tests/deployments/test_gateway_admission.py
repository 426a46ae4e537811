"""The gateway's door without Ray: keys (401), what a key may address (403), its rate (429), and deadlines."""

from __future__ import annotations

import asyncio

import pytest

from cluster.config import AuthConfig, GatewayConfig
from deployments.gateway_admission import Admission, request_deadline
from deployments.protocol import ChatRequest, GatewayError
from policies.access import ApiKey, RateLimitedError, hash_api_key

ADMIN, LIMITED = "sk-cascade-test-admin-token", "sk-cascade-test-limited-token"
AUTH = AuthConfig(keys=[
    {"name": "admin", "sha256": hash_api_key(ADMIN), "direct_tiers": True},
    {"name": "limited", "sha256": hash_api_key(LIMITED), "routes": ["default"], "requests_per_minute": 6},
])
CASCADE = ChatRequest.model_validate({"messages": [{"role": "user", "content": "Hi"}]})
DIRECT = CASCADE.model_copy(update={"model": "slm"})


class Allowance:
    """A rate limit that admits `left` requests, then refuses; it records whom it was asked about."""

    def __init__(self, left: int) -> None:
        self.left = left
        self.asked: list[str] = []

    async def __call__(self, key: ApiKey) -> None:
        self.asked.append(key.name)
        if self.left == 0:
            raise RateLimitedError(key.name, 12)
        self.left -= 1


def refusal(call) -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        result = call()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    return raised.value


def test_without_auth_everyone_is_admitted_and_nothing_is_counted() -> None:
    allowance = Allowance(0)
    admission = Admission(AuthConfig(required=False), allowance)
    key = admission.authenticate(None)
    asyncio.run(admission.admit(key, CASCADE, lambda: pytest.fail("no route to check without a key")))
    assert key is None and allowance.asked == []


@pytest.mark.parametrize(("header", "code"), [
    (None, "missing_api_key"), ("", "missing_api_key"), ("Bearer sk-cascade-not-a-key", "invalid_api_key"),
    (f"Basic {ADMIN}", "invalid_api_key"), ("Bearer", "invalid_api_key"),
])
def test_a_missing_or_wrong_key_is_a_401_that_never_quotes_it(header: str | None, code: str) -> None:
    error = refusal(lambda: Admission(AUTH, Allowance(1)).authenticate(header))
    assert (error.status, error.code, error.body()["error"]["type"]) == (401, code, "authentication_error")
    assert "sk-cascade" not in error.message


def test_a_key_is_held_to_its_routes_and_tiers_before_its_rate() -> None:
    allowance = Allowance(1)
    admission = Admission(AUTH, allowance)
    limited = admission.authenticate(f"Bearer {LIMITED}")
    other_route = refusal(lambda: admission.admit(limited, CASCADE, lambda: "strict"))
    assert (other_route.status, other_route.code) == (403, "route_not_allowed")
    direct = refusal(lambda: admission.admit(limited, DIRECT, lambda: pytest.fail("a tier by name has no route")))
    assert (direct.status, direct.code) == (403, "tier_not_allowed")
    assert allowance.asked == [], "a refused request uses none of the key's allowance"
    asyncio.run(admission.admit(limited, CASCADE, lambda: "default"))
    limited_out = refusal(lambda: admission.admit(limited, CASCADE, lambda: "default"))
    assert (limited_out.status, limited_out.code, limited_out.retry_after_s) == (429, "rate_limited", 12)
    assert allowance.asked == ["limited", "limited"]


def test_a_key_with_direct_tiers_may_name_a_tier() -> None:
    admission = Admission(AUTH, Allowance(1))
    asyncio.run(admission.admit(admission.authenticate(f"Bearer {ADMIN}"), DIRECT, lambda: "unused"))


def test_an_unknown_route_is_refused_by_whoever_resolves_it() -> None:
    admission = Admission(AUTH, Allowance(1))

    def unknown_route() -> str:
        raise GatewayError(400, "route 'nope' does not exist", param="route", code="route_not_found")

    error = refusal(lambda: admission.admit(admission.authenticate(f"Bearer {ADMIN}"), CASCADE, unknown_route))
    assert error.code == "route_not_found"


GATEWAY = GatewayConfig(auth={"required": False}, default_deadline_s=30, max_deadline_s=60)


def test_the_deadline_is_the_header_s_then_the_body_s_then_the_gateway_s() -> None:
    with_body = CASCADE.model_copy(update={"deadline_s": 20.0})
    assert request_deadline(with_body, "5", GATEWAY) == 5.0
    assert request_deadline(with_body, None, GATEWAY) == 20.0
    assert request_deadline(CASCADE, None, GATEWAY) == 30.0


@pytest.mark.parametrize("header", ["soon", "-1", "0", "nan"])
def test_a_deadline_header_that_is_not_a_positive_number_is_a_400(header: str) -> None:
    error = refusal(lambda: request_deadline(CASCADE, header, GATEWAY))
    assert (error.status, error.param, error.code) == (400, "x-cascade-deadline-s", "invalid_value")


@pytest.mark.parametrize(("header", "body"), [("61", None), (None, 61.0)])
def test_a_deadline_beyond_the_gateway_s_limit_is_a_400(header: str | None, body: float | None) -> None:
    error = refusal(lambda: request_deadline(CASCADE.model_copy(update={"deadline_s": body}), header, GATEWAY))
    assert (error.status, error.param) == (400, "deadline_s")
