"""Everything around the serving deployments, in layers (tests/test_layers.py keeps them):

- `config`, `telemetry`, `store`, `evaluation`: the core every layer above reads;
- `adaptation`: rounds the cluster's books run (below `deployments`, which launch them);
- `operations`: the local cluster, Kubernetes, faults, and the clients of the running system;
- `cli`: the `cascade` command, on top.
"""
