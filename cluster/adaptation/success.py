"""What counts as a success on a held-out example: the reply gives the recorded, verified answer.

Tool calls are judged by the BFCL benchmark's AST rules (cluster/evaluation/scorer.py) against the recorded calls, with
the request's own tool schemas as the function docs; JSON answers by JSON equality.
"""

from __future__ import annotations

import json
from typing import Any

from cluster.evaluation.bfcl import Case
from cluster.evaluation.calls import parse_answer
from cluster.evaluation.scorer import score_case
from cluster.store.recording import RecordedExample
from policies.tool_choice import forced_tools

__all__ = ["answer_matches", "tool_case"]

# JSON Schema type -> the BFCL doc type the scorer reads; anything else (a union, no type) is "any".
_BFCL_TYPES = {"string": "string", "integer": "integer", "number": "float", "boolean": "boolean",
               "array": "array", "object": "dict"}


def _bfcl_doc(schema: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema property as the BFCL doc the scorer reads (its type, and its items' for arrays)."""
    kind = schema.get("type")
    doc: dict[str, Any] = {"type": _BFCL_TYPES.get(kind, "any") if isinstance(kind, str) else "any"}
    if doc["type"] == "array":
        doc["items"] = _bfcl_doc(schema.get("items") if isinstance(schema.get("items"), dict) else {})
    return doc


def _possible(value: Any, doc: dict[str, Any]) -> list[Any]:
    """The one acceptable value, in BFCL's possible-answer shape: dicts hold a list of options per key."""
    if doc["type"] == "dict" and isinstance(value, dict):
        return [{key: [item] for key, item in value.items()}]
    if doc["type"] == "array" and doc["items"]["type"] == "dict" and isinstance(value, list) \
            and all(isinstance(item, dict) for item in value):
        return [[{key: [item_value] for key, item_value in item.items()} for item in value]]
    return [value]


def tool_case(example: RecordedExample) -> Case:
    """A benchmark case whose ground truth is the recorded answer's calls, so the BFCL scorer can judge replies.

    Parameter types come from the request's tool schemas (an argument the schema does not declare is "any");
    an argument the recorded answer left out must be left out of the reply too.
    """
    request, functions = example.request, {}
    for tool in request["tools"]:
        parameters = tool["function"].get("parameters") or {}
        properties = {name: _bfcl_doc(schema) for name, schema in (parameters.get("properties") or {}).items()}
        functions[tool["function"]["name"]] = {
            "name": tool["function"]["name"], "description": tool["function"].get("description", ""),
            "parameters": {"type": "dict", "properties": properties,
                           "required": [name for name in parameters.get("required", []) if name in properties]},
        }
    ground_truth = []
    for call in example.answer["tool_calls"]:
        name, arguments = call["function"]["name"], call["function"].get("arguments") or "{}"
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        properties = functions[name]["parameters"]["properties"]
        for argument in arguments:
            properties.setdefault(argument, {"type": "any"})
        ground_truth.append({name: {arg: _possible(value, properties[arg]) for arg, value in arguments.items()}})
    return Case(id=example.id, category="parallel" if len(ground_truth) > 1 else "simple_python",
                messages=request["messages"], functions=list(functions.values()), tools=request["tools"],
                ground_truth=ground_truth)


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality as a client sees it: 1 == 1.0, but true is not 1 (Python's == says it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def answer_matches(example: RecordedExample, message: dict[str, Any]) -> bool:
    """Does a reply's assistant message give the recorded (verified) answer?

    A forced tool choice: the calls must pass the BFCL AST checker against the recorded calls, and all be
    well-formed. A json_schema answer: its content must parse to JSON equal to the recorded content.
    """
    if forced_tools(example.request) is not None:
        case = tool_case(example)
        parsed = parse_answer(case, message, guided=True)
        return parsed.schema_valid and score_case(case, parsed.calls).valid
    try:
        return _json_equal(json.loads(message.get("content") or ""), json.loads(example.answer.get("content") or ""))
    except json.JSONDecodeError:
        return False
