"""The key this machine's HTTP clients (`cascade report`, `cascade bench ...`) present to the gateway.

It comes from the environment, never a flag: flags land in shell history and process listings.
"""

from __future__ import annotations

import os

API_KEY_ENV = "CASCADE_API_KEY"


def auth_headers() -> dict[str, str]:
    """`Authorization: Bearer ...` when CASCADE_API_KEY is set; nothing for a gateway with auth off."""
    key = os.environ.get(API_KEY_ENV)
    return {"authorization": f"Bearer {key}"} if key else {}
