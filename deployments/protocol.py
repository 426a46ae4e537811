"""The gateway's typed request and error models: one definition for HTTP and Python (DeploymentHandle) callers.

Only what the gateway itself acts on is typed here; every other OpenAI field passes through unchanged to the
tier, where vLLM's own protocol validates it. That keeps the gateway a router, not a second copy of vLLM.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cluster.config import DEFAULT_MODEL_ALIAS

AUTH_REFUSED_CODE = "tier_auth_refused"
"""Error code of a tier whose provider refused the cluster's own API key (the cascade escalates and says so)."""


class GatewayError(Exception):
    """A request the gateway refuses or cannot serve, rendered as an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(status, message, param, code, retry_after_s)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        """Ray pickles exceptions raised in a replica for the handle caller: keep every field."""
        return _rebuild_gateway_error, (self.status, self.message, self.param, self.code, self.retry_after_s)

    def __str__(self) -> str:
        return self.message

    @property
    def error_type(self) -> str:
        if self.status >= 500:
            return "server_error"
        return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}.get(
            self.status, "invalid_request_error"
        )

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}

    @classmethod
    def from_openai_body(cls, body: dict[str, Any]) -> GatewayError:
        """Adopt an error body returned by a tier (vLLM puts the HTTP status in `code`)."""
        error = body.get("error", {})
        status = error.get("code") if isinstance(error.get("code"), int) else 500
        return cls(status, str(error.get("message", "tier error")), param=error.get("param"))

    @classmethod
    def from_validation(cls, error: ValidationError) -> GatewayError:
        return cls.from_errors(error.errors())

    @classmethod
    def from_errors(cls, errors: Sequence[Mapping[str, Any]]) -> GatewayError:
        """A 400 naming the first of pydantic's (or FastAPI's) validation errors by its location."""
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in first["loc"]) or None
        message = str(first["msg"])
        return cls(400, f"{param}: {message}" if param else message, param=param, code="invalid_value")


def _rebuild_gateway_error(
    status: int, message: str, param: str | None, code: str | None, retry_after_s: int | None
) -> GatewayError:
    return GatewayError(status, message, param=param, code=code, retry_after_s=retry_after_s)


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionName


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")


class ChatRequest(BaseModel):
    """An OpenAI chat-completions request; unknown fields are kept and forwarded to the tier."""

    model_config = ConfigDict(extra="allow")
    model: str = DEFAULT_MODEL_ALIAS
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=8)
    stream: bool = False
    route: str | None = Field(None, description="slm-cascade: the route (task type); also header x-cascade-route.")
    deadline_s: float | None = Field(
        None, gt=0, description="slm-cascade: seconds the whole request may take; also header x-cascade-deadline-s."
    )
    store: bool | None = Field(
        None, description="OpenAI's: false keeps this request out of the recordings adapters are trained on.",
    )

    @field_validator("messages")
    @classmethod
    def _known_roles(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chat templates render any role string; an unknown one is a client error, not a prompt to complete."""
        for index, message in enumerate(messages):
            if message.get("role") not in MESSAGE_ROLES:
                raise ValueError(f"messages[{index}].role must be one of {', '.join(MESSAGE_ROLES)}")
        return messages

    @functools.cached_property
    def tool_definitions(self) -> list[dict[str, Any]]:
        """`tools` as plain JSON, dumped once: the verifiers, grounding and pre-routing each read them."""
        return [tool.model_dump(mode="json") for tool in self.tools or []]

    @property
    def response_schema(self) -> dict[str, Any] | None:
        if self.response_format is not None and self.response_format.json_schema is not None:
            return self.response_format.json_schema.schema_
        return None

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def tier_body(self, tier_name: str) -> dict[str, Any]:
        """The body sent to a tier: the client's request, addressed to the tier's served model name."""
        body = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"route", "deadline_s", "store"})
        body["model"] = tier_name
        return body
