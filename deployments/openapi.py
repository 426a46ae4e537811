"""The request bodies the gateway documents in its OpenAPI schema (`/openapi.json`).

The gateway reads bodies itself (size limit, content type, OpenAI-style errors), so FastAPI cannot infer their
schemas; they are published here instead, from the same pydantic models that parse them. Property-based
testers (schemathesis) and client generators read this document, so it must be self-contained: pydantic's
`$defs` references are inlined, because OpenAPI resolves `#/...` against the whole document, not the schema.
"""

from __future__ import annotations

from typing import Any

from deployments.protocol import MESSAGE_ROLES, ChatRequest

# What the tiers accept as a message (OpenAI's shape); the gateway itself passes messages through unparsed.
MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "role": {"enum": list(MESSAGE_ROLES)},
        "content": {"anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "object", "properties": {"type": {"const": "text"},
                                                                         "text": {"type": "string"}},
                                        "required": ["type", "text"]}},
            {"type": "null"},
        ]},
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
    },
    "required": ["role"],
}

FEEDBACK_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"success": {"type": "boolean"}}, "required": ["success"],
}


def inline_refs(schema: Any, definitions: dict[str, Any] | None = None) -> Any:
    """The schema with every `#/$defs/NAME` reference replaced by its definition (pydantic's are acyclic here)."""
    if isinstance(schema, dict):
        if definitions is None:
            definitions = schema.get("$defs", {})
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return inline_refs(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: inline_refs(value, definitions) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [inline_refs(item, definitions) for item in schema]
    return schema


def chat_request_schema() -> dict[str, Any]:
    schema = inline_refs(ChatRequest.model_json_schema())
    schema["properties"]["messages"]["items"] = MESSAGE_SCHEMA
    return schema


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads a JSON body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
