"""Which Serve replica this code runs in: any replica serves any request, and headers and spans say which did."""

from __future__ import annotations

from ray import serve
from ray.serve.exceptions import RayServeException


def current_replica_id() -> str | None:
    """This replica's unique id; None outside a Serve replica (a unit test, a script), where there is none to name."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except RayServeException:
        return None
