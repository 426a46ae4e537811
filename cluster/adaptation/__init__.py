"""LoRA adaptation of a route's SLM on the verified answers its fallback tiers gave (`cascade adapt`)."""
