"""Pure decision logic of the cascade: no Ray, no vLLM, no network; clocks only as injectable defaults.

Each module has one job and is imported directly (``from policies.routing import ...``);
this package re-exports nothing so that importing one policy family never drags in another.

- ``verifiers``: deterministic checks of an answer (JSON Schema, tool calls) -> ``Verdict``.
- ``confidence``: token-uncertainty features and the accept/score rule for an answer.
- ``cost``: prices, attempt cost, cost per successful task, budget check.
- ``routing``: request features, start-tier choice, escalation decisions, tier circuit breaker.
- ``calibration``: choose the acceptance threshold that minimises cost per successful task.
- ``access``: API-key authentication (digests only), per-key routes and rate limits.
- ``schema_limits``: size, depth, length-bound and per-request limits that client JSON Schemas must respect.
- ``regex_safety``: which ``pattern`` regexes could backtrack catastrophically or expand too far.
- ``promotion``: whether a trained adapter beats the base model on held-out cases.
"""
