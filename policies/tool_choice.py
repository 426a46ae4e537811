"""`tool_choice` "required" and named functions, enforced as a JSON Schema through guided decoding.

vLLM 0.32's chat layer left these unconstrained on the bundled models (the hermes parser path generated free
text, arguments like `[1]`), while its `response_format` json_schema path through xgrammar is exact. So a
forced tool choice is rewritten into a json_schema response format and the JSON answer is turned back into
OpenAI `tool_calls`. Pure functions over OpenAI-shaped dicts; no engine or Ray imports.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ForcedTools:
    """What the rewritten request asked for: one named function, or one or more calls from the list."""

    function_name: str | None  # None: "required", the answer is a list of {name, arguments}


def _function_params(tool: dict[str, Any]) -> dict[str, Any]:
    return tool["function"].get("parameters") or {"type": "object", "properties": {}}


def forced_tool_schema(tools: list[dict[str, Any]], forced: ForcedTools, parallel: bool) -> dict[str, Any]:
    """The JSON Schema an answer must match: the named function's parameters, or a list of calls."""
    if forced.function_name is not None:
        tool = next(t for t in tools if t["function"]["name"] == forced.function_name)
        return _function_params(tool)
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t["function"]["name"]}, "arguments": _function_params(t)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """Describes the tools for chat templates that do not render `tools` themselves (e.g. SmolLM2's)."""
    lines = ["You can call these functions. Answer with the call as JSON."]
    for tool in tools:
        function = tool["function"]
        lines.append(
            f"- {function['name']}: {function.get('description', '')} "
            f"parameters: {json.dumps(_function_params(tool), separators=(',', ':'))}"
        )
    return "\n".join(lines)


def forced_tools(body: dict[str, Any]) -> ForcedTools | None:
    """What a request forces: a named function, any call (`required`), or nothing (None)."""
    choice = body.get("tool_choice")
    if not body.get("tools"):
        return None
    if choice == "required":
        return ForcedTools(function_name=None)
    if isinstance(choice, dict) and choice.get("type") == "function":
        return ForcedTools(function_name=choice["function"]["name"])
    return None


def rewrite_forced_tool_choice(
    body: dict[str, Any], describe_tools: bool
) -> tuple[dict[str, Any], ForcedTools | None]:
    """The request with a forced tool choice turned into a json_schema response format (else unchanged).

    Raises ValueError naming the function when a named tool_choice is not among `tools`.
    """
    forced = forced_tools(body)
    if forced is None:
        return body, None
    tools = body["tools"]
    if forced.function_name is not None and forced.function_name not in {t["function"]["name"] for t in tools}:
        raise ValueError(f"tool_choice names function {forced.function_name!r}, which is not in `tools`")
    schema = forced_tool_schema(tools, forced, parallel=body.get("parallel_tool_calls") is not False)
    rewritten = {key: value for key, value in body.items() if key not in ("tools", "tool_choice")}
    rewritten["response_format"] = {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}}
    if describe_tools:
        rewritten["messages"] = [{"role": "system", "content": tools_system_prompt(tools)}, *body["messages"]]
    return rewritten, forced


def _call(name: str, arguments: Any) -> dict[str, Any]:
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def to_tool_calls(response: dict[str, Any], forced: ForcedTools) -> dict[str, Any]:
    """The engine's JSON answer as OpenAI `tool_calls`; an answer cut short stays text (finish_reason length)."""
    choices = []
    for choice in response["choices"]:
        message = dict(choice["message"])
        try:
            answer = json.loads(message.get("content") or "")
        except json.JSONDecodeError:
            choices.append(choice)  # truncated by max_tokens: leave it for the verifiers to judge
            continue
        if forced.function_name is not None:
            calls = [_call(forced.function_name, answer)]
        else:
            calls = [_call(item["name"], item["arguments"]) for item in answer]
        message.update(content=None, tool_calls=calls)
        choices.append({**choice, "message": message, "finish_reason": "tool_calls"})
    return {**response, "choices": choices}
