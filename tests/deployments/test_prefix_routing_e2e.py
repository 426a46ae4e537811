"""Prefix affinity on the real cluster: the SLM tier's two replicas, behind both gateway replicas' routers.

Each agent (a system prompt and a tool list) asks several questions; the model-server span of every request names
the replica that ran it (`cascade.replica`). With prefix affinity all of an agent's requests meet on one replica,
whichever gateway replica routed them, also while the agents' requests are in flight together (three at a time:
fewer than the 4-request load gap at which load overrides affinity). Under Serve's default router each request
would pick between the two replicas, and 3 agents x 4 requests would all stick by chance once in 512 runs.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import httpx
from auth_keys import ADMIN_HEADERS

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a word up.", "parameters": {
    "type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}}]
QUESTIONS = ("What does 'harbour' mean?", "Define 'lantern'.", "Look up 'tide'.", "What is a 'gull'?")


def _replica_of(cluster: str, otlp_receiver, system_prompt: str, question: str) -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    response = httpx.post(f"{cluster}/v1/chat/completions", timeout=120, headers={
        "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01", **ADMIN_HEADERS}, json={
        "model": "slm", "tools": TOOLS, "max_tokens": 2, "temperature": 0.0,
        "messages": [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]})
    assert response.status_code == 200, response.text
    engine = next(span for span in otlp_receiver.wait_for(trace_id, {"cascade.engine"})
                  if span.name == "cascade.engine")
    return engine.attributes["cascade.replica"], response.headers["x-cascade-gateway-replica"]


def test_an_agents_requests_meet_on_one_replica_while_agents_run_together(cluster: str, otlp_receiver) -> None:
    agents = range(3)
    placements: dict[int, list[tuple[str, str]]] = {agent: [] for agent in agents}
    with ThreadPoolExecutor(len(agents)) as pool:
        for question in QUESTIONS:  # one round: every agent's next question at once
            rounds = {agent: pool.submit(_replica_of, cluster, otlp_receiver,
                                         f"You are dictionary agent number {agent}.", question) for agent in agents}
            for agent, placed in rounds.items():
                placements[agent].append(placed.result())
    for agent, served in placements.items():  # (model-server replica, gateway replica) per request
        assert len({replica for replica, _ in served}) == 1, (agent, served)
