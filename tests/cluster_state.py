"""Where the test cluster keeps its adapters and recordings."""

from __future__ import annotations

from pathlib import Path

CLUSTER_CONFIG_NAME = "cascade.yaml"  # the config the test cluster was started with, in cluster_state_dir()


def cluster_state_dir() -> Path:
    """A fixed place under the slm-cascade cache, so a reused cluster (CASCADE_TEST_REUSE_CLUSTER=1) finds them."""
    from cluster.store.models import cache_root

    return cache_root() / "test-cluster"
