"""Ray Serve deployments: thin actors over the vLLM engine and the routing policies."""
