"""The model-based verifier's arithmetic and verdicts, over a scripted tier handle (the handle is the unit's
boundary; the cluster tests call the real judge deployment): the judge's score is the probability of "yes", and
self-consistency's is the share of samples that agree with the answer, whatever their JSON spacing or order."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from cluster.config import JudgeConfig
from deployments.judge import JudgeVerifier
from deployments.vllm_engine import ChatResult
from policies.verifiers import Candidate

JUDGE_CLASS = JudgeVerifier.func_or_class  # the class under Serve's decorator
REQUEST = {"model": "cascade", "messages": [{"role": "user", "content": "The capital of France, as JSON."}]}


class _Call:
    def __init__(self, result: ChatResult) -> None:
        self._result = result

    def __await__(self):
        async def result() -> ChatResult:
            return self._result
        return result().__await__()


class ScriptedHandle:
    """Answers `.chat.remote(body)` from a script, and keeps the bodies it was sent."""

    def __init__(self, *results: ChatResult) -> None:
        self.results = list(results)
        self.bodies: list[dict[str, Any]] = []
        self.chat = self

    def remote(self, body: dict[str, Any]) -> _Call:
        self.bodies.append(body)
        return _Call(self.results.pop(0))


def said(word: str, probability: float) -> ChatResult:
    return ChatResult(body={"choices": [{"message": {"role": "assistant", "content": word}, "logprobs": {
        "content": [{"token": word, "logprob": math.log(probability)}]}}]}, engine_s=0.01)


def answered(content: str) -> ChatResult:
    return ChatResult(body={"choices": [{"message": {"role": "assistant", "content": content}}]}, engine_s=0.01)


def failed() -> ChatResult:
    return ChatResult(body={"error": {"message": "engine died", "code": 500}}, engine_s=0.0)


def verify(config: JudgeConfig, handle: ScriptedHandle, answer: str):
    return asyncio.run(JUDGE_CLASS(config.model_dump(), handle).verify(REQUEST, Candidate(text=answer)))


@pytest.mark.parametrize(("word", "probability", "score", "passed"), [
    ("yes", 0.8, 0.8, True), ("no", 0.9, 0.1, False), ("yes", 0.55, 0.55, False)])
def test_the_judges_score_is_its_probability_of_yes_and_the_verdict_follows_the_pass_score(
        word, probability, score, passed):
    handle = ScriptedHandle(said(word, probability))
    verdict = verify(JudgeConfig(tier="fallback", pass_score=0.6), handle, '{"city": "Paris"}')
    assert verdict.score == pytest.approx(score) and verdict.passed is passed
    assert bool(verdict.reasons) is not passed
    sent = handle.bodies[0]
    assert sent["structured_outputs"] == {"choice": ["yes", "no"]} and sent["temperature"] == 0.0
    assert "The capital of France" in sent["messages"][0]["content"] and "Paris" in sent["messages"][0]["content"]


def test_self_consistency_is_the_share_of_samples_that_agree_however_they_are_spaced():
    samples = [answered('{ "city" : "Paris" }'), answered('{"city":"Paris"}'), answered('{"city": "Lyon"}'),
               failed()]
    handle = ScriptedHandle(*samples)
    config = JudgeConfig(method="self_consistency", tier="slm", samples=4, pass_score=0.6)
    verdict = verify(config, handle, '{"city": "Paris"}')
    assert verdict.score == pytest.approx(2 / 3), "two of the three samples that came back agree"
    assert verdict.passed
    assert all(body["temperature"] == 0.8 and body["model"] == "slm" for body in handle.bodies)
    disagreeing = verify(config, ScriptedHandle(*(answered('{"city": "Lyon"}') for _ in range(4))), '{"city": "Paris"}')
    assert disagreeing.score == 0.0 and not disagreeing.passed


def test_self_consistency_with_no_sample_back_is_an_error_the_cascade_counts_as_unverified():
    config = JudgeConfig(method="self_consistency", tier="slm", samples=2)
    with pytest.raises(RuntimeError, match="no sample came back"):
        verify(config, ScriptedHandle(failed(), failed()), '{"city": "Paris"}')
