"""The model-based verifier: its own Serve deployment, scaled apart from the tiers it asks.

Two methods, both ending in a Verdict with a score in [0, 1]:
- judge: the judge tier reads the request and the answer and says yes or no, constrained to those two
  words by guided decoding; the score is the probability it gave "yes".
- self_consistency: the tier answers the same request `samples` more times at a higher temperature; the
  score is the share of samples that agree with the answer (same JSON value or the same tool calls).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster.config import JudgeConfig
from policies.verifiers import Candidate, Verdict

JUDGE_PROMPT = (
    "Request:\n{request}\n\nAnswer:\n{answer}\n\n"
    "Does the answer correctly and completely do what the request asks? Reply yes or no."
)


def candidate_key(candidate: Candidate) -> str:
    """A canonical form for comparing answers: parsed JSON where possible, tool calls by name and arguments."""
    if candidate.tool_calls:
        calls = []
        for call in candidate.tool_calls:
            try:
                arguments = json.loads(call.arguments)
            except json.JSONDecodeError:
                arguments = call.arguments
            calls.append([call.name, arguments])
        return json.dumps(sorted(calls, key=json.dumps), sort_keys=True)
    try:
        return json.dumps(json.loads(candidate.text), sort_keys=True)
    except json.JSONDecodeError:
        return " ".join(candidate.text.split()).lower()


def _last_user_message(body: dict[str, Any]) -> str:
    for message in reversed(body["messages"]):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


@serve.deployment
class JudgeVerifier:
    def __init__(self, judge: dict[str, Any], tier: DeploymentHandle) -> None:
        self.config = JudgeConfig.model_validate(judge)
        self.tier = tier

    async def verify(self, body: dict[str, Any], candidate: Candidate) -> Verdict:
        score = await (self._judge(body, candidate) if self.config.method == "judge" else self._agree(body, candidate))
        passed = score >= self.config.pass_score
        reasons = () if passed else (f"{self.config.method} score {score:.2f} < {self.config.pass_score}",)
        return Verdict(self.config.method, score, passed, reasons)

    async def _judge(self, body: dict[str, Any], candidate: Candidate) -> float:
        answer = candidate.text or json.dumps([[c.name, c.arguments] for c in candidate.tool_calls])
        prompt = JUDGE_PROMPT.format(request=_last_user_message(body), answer=answer)
        result = await self.tier.chat.remote({
            "model": self.config.tier,
            "messages": [{"role": "user", "content": prompt}],
            "structured_outputs": {"choice": ["yes", "no"]},
            "max_tokens": 2,
            "temperature": 0.0,
            "logprobs": True,
        })
        if result.is_error:
            raise RuntimeError(result.body["error"]["message"])
        choice = result.body["choices"][0]
        said_yes = choice["message"]["content"].strip() == "yes"
        probability = math.exp(choice["logprobs"]["content"][0]["logprob"])
        return probability if said_yes else 1.0 - probability

    async def _agree(self, body: dict[str, Any], candidate: Candidate) -> float:
        sample_body = {**body, "model": self.config.tier, "temperature": 0.8, "logprobs": False}
        sample_body.pop("top_logprobs", None)
        results = await asyncio.gather(*(self.tier.chat.remote(sample_body) for _ in range(self.config.samples)))
        wanted = candidate_key(candidate)
        keys = [
            candidate_key(Candidate.from_message(result.body["choices"][0]["message"]))
            for result in results
            if not result.is_error
        ]
        if not keys:
            raise RuntimeError("no sample came back")
        return sum(key == wanted for key in keys) / len(keys)


class JudgeClient:
    """The gateway's side of a judge deployment: the `ModelVerifier` the cascade runner awaits."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    async def verify(self, body: dict[str, Any], candidate: Candidate) -> Verdict:
        return await self._handle.verify.remote(body, candidate)
