"""The test cluster's API keys: tokens live only here, the cluster's config holds their digests.

`admin` may do everything; `limited` may use route `default` only, at 6 requests a minute with a burst of 2;
`pooled` may use route `shared` at 6 a minute with a burst of 3 (the two-replica books test);
`peer` is what the remote tier sends when it calls this cluster's own gateway (a tier by name).
"""

from __future__ import annotations

ADMIN_KEY = "sk-cascade-test-admin-0123456789abcdef0123456789abcdef"
LIMITED_KEY = "sk-cascade-test-limited-0123456789abcdef0123456789abcd"
POOLED_KEY = "sk-cascade-test-pooled-0123456789abcdef0123456789abcde"
PEER_KEY = "sk-test-remote-key-never-echoed"
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN_KEY}"}


def auth_config() -> dict:
    from policies.access import hash_api_key

    return {"required": True, "keys": [
        {"name": "admin", "sha256": hash_api_key(ADMIN_KEY), "direct_tiers": True},
        {"name": "limited", "sha256": hash_api_key(LIMITED_KEY), "routes": ["default"],
         "requests_per_minute": 6, "burst": 2},
        {"name": "pooled", "sha256": hash_api_key(POOLED_KEY), "routes": ["shared"],
         "requests_per_minute": 6, "burst": 3},
        {"name": "peer", "sha256": hash_api_key(PEER_KEY), "direct_tiers": True},
    ]}
