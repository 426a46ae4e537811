"""Recorded examples as (prompt, target) pairs, shaped exactly as the SLM sees them when serving.

An adapter only helps if it is trained on the prompts the engine renders and the tokens guided decoding
makes it emit: a forced tool choice is rewritten by `policies.tool_choice` into a json_schema request with
a tools system message, and the model answers in compact JSON (a list of calls for "required", the arguments
for a named function). Training on the OpenAI-shaped `tool_calls` instead would teach a format the SLM never
produces. The SLM's free-text path has no verifiable target, so those requests are skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cluster.store.recording import RecordedExample
from policies.tool_choice import ForcedTools, rewrite_forced_tool_choice

__all__ = [
    "HELD_OUT_FRACTION",
    "MINIMUM_HELD_OUT",
    "NotEnoughDataError",
    "PairSet",
    "TrainingPair",
    "build_pairs",
    "compact_json",
    "require_minimum",
    "split_held_out",
]

MINIMUM_HELD_OUT = 4
HELD_OUT_FRACTION = 0.25  # share of a route's examples kept out of training to judge its adapter
"""Fewer held-out examples than this cannot tell a better adapter from a lucky one."""


class NotEnoughDataError(ValueError):
    """Too few usable recorded examples to train an adapter and still judge it on a held-out split."""


@dataclass(frozen=True)
class TrainingPair:
    """What the chat template renders (messages, plus `tools` where the engine passes them) and what follows."""

    id: str
    messages: list[dict[str, Any]]
    target: str
    tools: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class PairSet:
    """The usable pairs, and how many examples were left out and why (reported by `cascade adapt`)."""

    pairs: list[TrainingPair]
    skipped_free_text: int
    """Neither a forced tool choice nor a json_schema response format: the SLM's unguided path."""
    skipped_invalid: int
    """The recorded answer does not fit the request's contract (wrong function, content not JSON, ...)."""


def compact_json(value: Any) -> str:
    """JSON as guided decoding emits it: no whitespace between tokens, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _arguments(call: dict[str, Any]) -> Any:
    arguments = call["function"].get("arguments") or "{}"
    return json.loads(arguments) if isinstance(arguments, str) else arguments


def _tool_target(answer: dict[str, Any], forced: ForcedTools, request: dict[str, Any]) -> Any:
    """The JSON the guided SLM would have produced for the verified tool calls."""
    calls = answer.get("tool_calls") or []
    if not calls:
        raise ValueError("answer has no tool_calls")
    if forced.function_name is not None:
        if len(calls) != 1 or calls[0]["function"]["name"] != forced.function_name:
            raise ValueError(f"answer does not call exactly {forced.function_name!r}")
        return _arguments(calls[0])
    names = {tool["function"]["name"] for tool in request["tools"]}
    if any(call["function"]["name"] not in names for call in calls):
        raise ValueError("answer calls a function that is not in `tools`")
    if request.get("parallel_tool_calls") is False and len(calls) > 1:
        raise ValueError("answer makes parallel calls where parallel_tool_calls is false")
    return [{"name": call["function"]["name"], "arguments": _arguments(call)} for call in calls]


def _text(content: Any) -> str:
    """Content as vLLM hands it to a string-format chat template: None -> "", text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    """One message as vLLM renders it: string content, tool call arguments parsed into objects."""
    rendered = {**message, "content": _text(message.get("content"))}
    if rendered.get("tool_calls"):
        rendered["tool_calls"] = [
            {**call, "function": {**call["function"], "arguments": _arguments(call)}}
            for call in rendered["tool_calls"]
        ]
    return rendered


def _pair(example: RecordedExample, describe_tools: bool) -> TrainingPair | None:
    """The example's pair; None for the free-text path. Raises ValueError (and JSON errors) when invalid."""
    body, forced = rewrite_forced_tool_choice(example.request, describe_tools)
    if forced is not None:
        target = _tool_target(example.answer, forced, example.request)
    elif (body.get("response_format") or {}).get("type") == "json_schema":
        target = json.loads(example.answer.get("content") or "")
    else:
        return None
    return TrainingPair(
        id=example.id,
        messages=[_template_message(message) for message in body["messages"]],
        target=compact_json(target),
        tools=body.get("tools"),
    )


def build_pairs(examples: Sequence[RecordedExample], describe_tools: bool = True) -> PairSet:
    """Pairs for every guided example; `describe_tools` must match the SLM tier's `describe_tools_in_prompt`."""
    pairs: list[TrainingPair] = []
    free_text = invalid = 0
    for example in examples:
        try:
            pair = _pair(example, describe_tools)
        except (ValueError, KeyError, TypeError):  # json.JSONDecodeError is a ValueError
            invalid += 1
            continue
        if pair is None:
            free_text += 1
        else:
            pairs.append(pair)
    return PairSet(pairs=pairs, skipped_free_text=free_text, skipped_invalid=invalid)


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


def _unit_interval(identifier: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{identifier}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_held_out(
    items: Sequence[T], fraction: float = HELD_OUT_FRACTION, seed: int = 0, minimum: int = 0
) -> tuple[list[T], list[T]]:
    """(train, held_out), each item placed by a hash of its id rather than by shuffling.

    So an example stays on the same side as more are recorded: an example that judged one adapter is never
    trained on by the next, and re-running `cascade adapt` on the same data splits it the same way. The
    held-out share is `fraction` on average, not exactly; at least `minimum` items are held out all the same
    (the lowest hashes make up the difference), so a small store cannot leave too few by the luck of its ids.
    Only in that small-store regime can a later, larger store move an item back to training.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    ranked = sorted(items, key=lambda item: _unit_interval(item.id, seed))
    cut = max(minimum, sum(_unit_interval(item.id, seed) < fraction for item in items))
    held_ids = {item.id for item in ranked[:cut]}
    train = [item for item in items if item.id not in held_ids]
    held_out = [item for item in items if item.id in held_ids]
    return train, held_out


def require_minimum(n_train: int, n_held_out: int, minimum_train: int = 8,
                    minimum_held_out: int = MINIMUM_HELD_OUT) -> None:
    """Raises NotEnoughDataError unless both splits are big enough to train on and to judge by."""
    if n_train >= minimum_train and n_held_out >= minimum_held_out:
        return
    raise NotEnoughDataError(
        f"{n_train + n_held_out} usable examples recorded ({n_train} for training, {n_held_out} held out); "
        f"adapting needs at least {minimum_train} for training and {minimum_held_out} held out. "
        "Let the route escalate more requests and try again."
    )
