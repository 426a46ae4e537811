"""Pure decision logic of the cascade: no Ray, no vLLM, no network; clocks only as injectable defaults.

Each module has one job and is imported directly (``from policies.routing import ...``);
this package re-exports nothing so that importing one policy family never drags in another.

- ``verifiers``: deterministic checks of an answer (JSON Schema, tool calls) -> ``Verdict``.
- ``grounding``: is every value of an answer supported by the conversation or the schema -> ``Verdict``.
- ``value_tokens``: token logprob features over an answer's values and function name, not its scaffolding.
- ``answer_features``: the named features of one answer that a confidence policy scores.
- ``confidence``: token-uncertainty features and the scoring rules (hand-set and fitted) for an answer.
- ``cost``: prices, attempt cost, cost per successful task, budget check.
- ``routing``: request features, start-tier choice, tier circuit breaker.
- ``escalation``: the one accept rule (``diagnose``) and what to do after an attempt.
- ``calibration``: the threshold that minimises cost per successful task, or one certified to bound the error.
- ``access``: API-key authentication (digests only), per-key routes and rate limits.
- ``schema_limits``: size, depth, length-bound and per-request limits that client JSON Schemas must respect.
- ``regex_safety``: client ``pattern`` regexes compiled and matched with RE2 (linear time), and how far they expand.
- ``tool_choice``: a forced tool choice as a JSON Schema, and the answer back as OpenAI ``tool_calls``.
- ``tool_registry``: server-side tools: their schemas from type hints, and running them.
- ``prefix_affinity``: which replica a request's prompt prefix prefers.
- ``adaptation``: when an adaptation round is due, and when a promoted adapter is rolled back.
- ``promotion``: whether a trained adapter beats the base model on held-out cases without regressing elsewhere.
"""
