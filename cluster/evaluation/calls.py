"""From a chat-completions answer to BFCL calls, with the two structural checks the report counts.

Guided requests (`tool_choice="required"`) come back as OpenAI `tool_calls`, grammar-constrained by the
gateway. Unguided requests (`tool_choice="auto"`, tools also described in a system prompt) may come back as
`tool_calls` (a tool parser recognised the text) or as plain text holding the calls as JSON; both are read.

- schema-valid: the answer has the structure a client needs: every call names a function and its arguments
  parse as a JSON object (an answer with no call is schema-valid when no call is expected);
- executable: every call names a declared function and its arguments validate against that function's JSON
  Schema (`policies.verifiers.ToolCallVerifier`, the gateway's own check); None when no call was made, as in
  the gateway's accounting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cluster.evaluation.bfcl import Case
from cluster.evaluation.scorer import Call
from policies.verifiers import Candidate, ToolCall, ToolCallVerifier

__all__ = ["ParsedAnswer", "parse_answer", "unguided_messages"]

_UNGUIDED_INSTRUCTIONS = (
    "You can call the functions below. To call them, answer with only a JSON array of calls, "
    'like [{"name": "function_name", "arguments": {"arg": "value"}}]. If none of them fits the request, '
    "answer in plain text without JSON.\n"
)


@dataclass(frozen=True)
class ParsedAnswer:
    calls: list[Call]
    schema_valid: bool
    executable: bool | None


def unguided_messages(case: Case) -> list[dict[str, Any]]:
    """The case's conversation with the tools described in a leading system message."""
    listing = "\n".join(json.dumps(tool["function"], separators=(",", ":")) for tool in case.tools)
    return [{"role": "system", "content": _UNGUIDED_INSTRUCTIONS + listing}, *case.messages]


def _json_in_text(text: str) -> Any:
    """The first JSON array or object in the text (models wrap JSON in prose or code fences)."""
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char in "[{":
            try:
                return decoder.raw_decode(text, start)[0]
            except json.JSONDecodeError:
                continue
    return None


def _text_calls(text: str) -> list[ToolCall] | None:
    """Calls written as JSON text; None when the text holds JSON that is not a list of calls."""
    found = _json_in_text(text)
    if found is None:
        return []
    items = found if isinstance(found, list) else [found]
    if not all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in items):
        return None
    return [ToolCall(item["name"], json.dumps(item.get("arguments", item.get("parameters", {})))) for item in items]


def parse_answer(case: Case, message: dict[str, Any], guided: bool) -> ParsedAnswer:
    """The calls in an assistant message, and whether they are schema-valid and executable."""
    raw = [ToolCall(c["function"]["name"], c["function"].get("arguments") or "{}")
           for c in message.get("tool_calls") or []]
    structured = True
    if not raw and not guided:
        text_calls = _text_calls(message.get("content") or "")
        structured = text_calls is not None
        raw = text_calls or []
    calls: list[Call] = []
    for name, arguments in raw:
        try:
            args = json.loads(arguments)
        except json.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            structured = False
            continue
        calls.append({name: args})
    schema_valid = structured and (bool(raw) or not case.expects_calls)
    executable = None
    if raw:
        executable = ToolCallVerifier(case.tools, require_call=False).verify(Candidate(tool_calls=tuple(raw))).passed
    return ParsedAnswer(calls, schema_valid, executable)
